"""SAE kinds: the loss convention, the format on disk, folding, and bad input."""

import json

import pytest
import torch

import saekit
from saekit.dictionaries import REGISTRY, DictionaryConfig

KINDS = {"relu": {}, "topk": {"k": 3}, "batchtopk": {"k": 3}, "jumprelu": {}}


def make(kind, d_in=8, d_dict=16, seed=0, **kw):
    cfg = DictionaryConfig(kind=kind, d_in=d_in, d_dict=d_dict, hook="blocks.1.mlp.hook_post",
                           model="demo-lm", **{**KINDS[kind], **kw})
    sae = REGISTRY[kind](cfg)
    g = torch.Generator().manual_seed(seed)
    sae.reset_parameters(g)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=g)
        sae.b_dec.normal_(0, 0.1, generator=g)
        if hasattr(sae, "threshold"):
            sae.threshold.fill_(0.05)
    return sae


def test_loss_convention_is_pinned():
    """mse = Σ_d (x − x̂)² averaged over the batch; relu adds l1·Σ codes·‖W_dec‖;
    jumprelu adds l0_coefficient·L0; topk adds AuxK on dead features only."""
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    relu = make("relu", options={"l1_coefficient": 0.5})
    with torch.no_grad():
        relu.W_dec.mul_(2.0)  # row norms 2: the L1 term must see them
    out = relu.train_step(x, step=0)
    codes = torch.relu((x - relu.b_dec) @ relu.W_enc + relu.b_enc)
    x_hat = codes @ relu.W_dec + relu.b_dec
    mse = ((x - x_hat) ** 2).sum(1).mean()
    l1 = 0.5 * (codes * 2.0).sum(1).mean()
    torch.testing.assert_close(out.terms["mse"], mse)
    torch.testing.assert_close(out.terms["sparsity"], l1)
    torch.testing.assert_close(out.loss, mse + l1)

    jump = make("jumprelu", options={"l0_coefficient": 0.25})
    out = jump.train_step(x, step=0)
    pre = torch.relu((x - jump.b_dec) @ jump.W_enc + jump.b_enc)
    l0 = (pre > 0.05).float().sum(1).mean()
    torch.testing.assert_close(out.terms["sparsity"], 0.25 * l0)

    topk = make("topk")
    no_dead = topk.train_step(x, 0, dead=torch.zeros(16, dtype=torch.bool))
    assert no_dead.terms["aux"] == 0 and no_dead.loss == no_dead.terms["mse"]
    dead = torch.zeros(16, dtype=torch.bool)
    dead[:6] = True
    with_dead = topk.train_step(x, 0, dead=dead)
    pre = (x - topk.b_dec) @ topk.W_enc + topk.b_enc
    k_aux = 8 // 2
    vals, idx = pre[:, :6].topk(4, dim=1)
    e_hat = torch.zeros(5, 16).scatter(1, idx, vals.relu()) @ topk.W_dec
    aux = min(6 / k_aux, 1.0) * ((x - with_dead.x_hat - e_hat) ** 2).sum(1).mean()
    torch.testing.assert_close(with_dead.terms["aux"], aux)


@pytest.mark.parametrize("kind", list(KINDS))
def test_topk_and_l0(kind):
    sae = make(kind)
    x = torch.randn(64, 8)
    codes = sae.encode(x)
    assert (codes >= 0).all()
    if kind == "topk":
        assert (sae.active(codes).sum(1) <= 3).all()


@pytest.mark.parametrize("kind", list(KINDS))
def test_save_load_round_trip_in_saelens_layout(kind, tmp_path):
    sae = make(kind)
    sae.log_firing_freq = torch.linspace(-3, -1, 16)
    sae.save(tmp_path / "d")
    cfg = json.loads((tmp_path / "d" / "cfg.json").read_text())
    assert cfg["d_in"] == 8 and cfg["d_sae"] == 16 and cfg["apply_b_dec_to_input"] is True
    assert cfg["architecture"] == {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu",
                                   "jumprelu": "jumprelu"}[kind]
    assert cfg["metadata"]["hook_name"] == "blocks.1.mlp.hook_post"
    assert cfg["saekit"]["kind"] == kind and cfg["saekit"]["schema_version"] == 1
    from safetensors.torch import load_file

    names = set(load_file(tmp_path / "d" / "sae_weights.safetensors"))
    assert names <= {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}
    back = saekit.load_dictionary(tmp_path / "d")
    assert type(back) is type(sae) and back.cfg == sae.cfg
    x = torch.randn(32, 8)
    torch.testing.assert_close(back(x), sae(x))
    torch.testing.assert_close(back.log_firing_freq, sae.log_firing_freq)


@pytest.mark.parametrize("kind", list(KINDS))
def test_normalize_decoder_and_fold_scale_keep_the_function(kind):
    sae = make(kind)
    if kind != "topk":  # top-k ranks features by code size, so its rows stay unit-norm in training
        with torch.no_grad():
            sae.W_dec.mul_(torch.linspace(0.5, 3, 16)[:, None])
    x = torch.randn(32, 8)
    before = sae(x)
    sae.normalize_decoder()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(16))
    torch.testing.assert_close(sae(x), before, rtol=1e-5, atol=1e-5)
    s = 3.7
    scaled = sae(x * s) / s  # what the dictionary does in its training scale
    sae.fold_input_scale(s)
    torch.testing.assert_close(sae(x), scaled, rtol=1e-5, atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match=r"unknown dictionary kind 'crosscoder'.*\['batchtopk', 'gated', 'jumprelu', "
                                         r"'matryoshka_batchtopk', 'matryoshka_topk', 'nmf', 'relu', 'snmf', 'topk'\]"):
        DictionaryConfig(kind="crosscoder", d_in=8, d_dict=16)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['l1'\].*allowed: \['apply_b_dec_to_input', 'l1_coefficient', 'l1_warmup_steps', 'skip'\]"):
        DictionaryConfig(kind="relu", d_in=8, d_dict=16, options={"l1": 1.0})
    with pytest.raises(ValueError, match="k must be an integer in 1..d_dict=16"):
        DictionaryConfig(kind="topk", d_in=8, d_dict=16, k=17)
    with pytest.raises(ValueError, match="needs k"):
        DictionaryConfig(kind="topk", d_in=8, d_dict=16)
    with pytest.raises(ValueError, match=r"width 9.*d_in=8 \(hook blocks\.1\.mlp\.hook_post\)"):
        make("topk").encode(torch.randn(2, 9))
    with pytest.raises(ValueError, match="NaN"):
        saekit.fit(torch.full((10, 4), float("nan")), "topk", d_dict=8, k=2)
    with pytest.raises(ValueError, match="unknown dictionary kind"):
        saekit.fit(torch.randn(10, 4), "snmf-typo", d_dict=8)


def test_load_errors_name_the_file(tmp_path):
    sae = make("topk")
    sae.save(tmp_path / "d")
    cfg_path = tmp_path / "d" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["saekit"]["d_dict"] = 32
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"sae_weights\.safetensors.*'W_enc' has shape \(8, 16\), expected \(8, 32\)"):
        saekit.load_dictionary(tmp_path / "d")
    cfg["saekit"]["colour"] = "red"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"cfg\.json: unknown field\(s\) \['colour'\]"):
        saekit.load_dictionary(tmp_path / "d")


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    sae = make("relu")
    sae.save(tmp_path / "d")
    before = (tmp_path / "d" / "sae_weights.safetensors").read_bytes()
    import safetensors.torch

    from saekit.dictionaries import base as dictionaries_base

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    monkeypatch.setattr(dictionaries_base, "save_file", boom)  # bound where it is used
    with torch.no_grad():
        sae.W_dec.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        sae.save(tmp_path / "d")
    assert (tmp_path / "d" / "sae_weights.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


@pytest.mark.parametrize("n_dead", [0, 5, 40])
def test_topk_sparse_backward_matches_the_dense_reference(n_dead):
    """The sparse kernels give the same loss and gradients as dense autograd."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 8, generator=g) * 2
    dead = torch.zeros(48, dtype=torch.bool)
    dead[torch.randperm(48, generator=g)[:n_dead]] = True
    grads = []
    for path in ("train_step", "train_step_dense"):
        sae = make("topk", d_dict=48, k=4, seed=7)
        out = getattr(sae, path)(x, 0, dead=dead)
        out.loss.backward()
        grads.append((out.loss.detach(), out.counts, {n: p.grad.clone() for n, p in sae.named_parameters()}))
    (l1, c1, g1), (l2, c2, g2) = grads
    torch.testing.assert_close(l1, l2)
    assert torch.equal(c1, c2)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-5, msg=name)
