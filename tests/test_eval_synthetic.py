"""Synthetic activations (saekit.evals.synthetic): constructions, walks, and the plateau result."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import saekit
from saekit.config import load_config
from saekit.evals import synthetic as Y
from saekit.evals import trajectories as T

ROOT = Path(__file__).resolve().parent.parent
HOOK = "blocks.2.mlp.hook_post"


@pytest.fixture(scope="module")
def topk():
    return saekit.load_dictionary(ROOT / "checkpoints" / "demo-topk")


@pytest.fixture(scope="module")
def plateaus(demo_model):
    """The paper's setting scaled down: an early residual (after block 0, as GPT-2's L1
    resid_pre) read at the last layer; real and N(μ, Σ) centres only."""
    cfg = Y.Config(hook="blocks.1.hook_resid_pre", read_hook="blocks.3.hook_resid_post", dictionaries=[],
                   types=["real", "random"], experiments=["plateau"], n_prompts=64, n_stat_prompts=400)
    return Y.run(cfg, model=demo_model)


def row(result, metric, readout, kind, dictionary=""):
    return next(r for r in result.rows if r["metric"] == metric and r["readout"] == readout
                and r["type"] == kind and r["dictionary"] == dictionary)


def test_known_result_real_plateaus_longer_than_gaussian_kl(plateaus):
    """Giglemiani et al.: real centres have longer plateaus than N(μ, Σ) ones (GPT-2: 15.1 vs
    8.3 steps, KS 0.57). Demo LM, KL read-out (0.1 nats), 64 prompts: 14.8 vs 7.9 steps,
    KS 0.36, p 0.0005."""
    real, rand = row(plateaus, "plateau_length", "kl", "real"), row(plateaus, "plateau_length", "kl", "random")
    assert real["mean"] > 1.3 * rand["mean"], (real["mean"], rand["mean"])
    assert rand["ks_pvalue"] < 0.01 and rand["ks_vs_real"] > 0.2


@pytest.mark.xfail(strict=True, reason=(
    "With the paper's L2 read-out the plateau lengths of real and N(mu, Sigma) centres hardly differ "
    "on the demo LM: 6.2 vs 5.8 steps (threshold 0.15 x median read norm, 64 prompts), KS 0.09, "
    "p 0.94 (GPT-2: 15.1 vs 8.3, KS 0.57). The read residual (layer 3) is two blocks after the "
    "perturbation, so its change is dominated by the identity path and grows linearly from every "
    "centre; GPT-2's L1 -> L11 read-out passes ten blocks whose outputs dwarf the perturbation. "
    "The KL read-out does show the plateaus (test above). On SmolLM2-135M (30 blocks, blocks.1 -> blocks.29) "
    "the L2 result holds: 18.3 vs 12.7 steps, KS 0.44, p 7e-6 (make validate, eval/results/validate_smollm2.json)"))
def test_known_result_real_plateaus_longer_than_gaussian_l2(plateaus):
    real, rand = row(plateaus, "plateau_length", "l2", "real"), row(plateaus, "plateau_length", "l2", "random")
    assert real["mean"] > 1.3 * rand["mean"] and rand["ks_pvalue"] < 0.01


@pytest.mark.xfail(strict=True, reason=(
    "At the demo recipe's hook (layer-2 MLP hidden, read at the layer-3 residual and the logits) real "
    "and N(mu, Sigma) centres have plateaus of the same length: KL read-out 28.3 vs 28.8 steps, KS "
    "0.07 (200 prompts, eval/synthetic_demo.toml); L2 12.1 vs 12.2. 1.5 blocks of a 4-layer model "
    "follow that hook, too few to flatten the neighbourhood of real activations"))
def test_known_result_at_the_demo_recipe_hook(demo_model):
    cfg = Y.Config(dictionaries=[], types=["real", "random"], experiments=["plateau"], readouts=["kl"],
                   n_prompts=32, n_stat_prompts=300)
    res = Y.run(cfg, model=demo_model)
    real, rand = row(res, "plateau_length", "kl", "real"), row(res, "plateau_length", "kl", "random")
    assert real["mean"] > 1.3 * rand["mean"] and rand["ks_pvalue"] < 0.01


@pytest.fixture(scope="module")
def full(demo_model, topk):
    cfg = Y.Config(dictionaries=[topk], n_prompts=16, n_stat_prompts=300, n_steps=30, step=0.06)
    return Y.run(cfg, model=demo_model)


def test_every_kind_experiment_and_readout_has_a_row(full):
    keys = set(full.rows[0])
    assert all(set(r) == keys for r in full.rows)
    kinds = {(r["type"], r["dictionary"]) for r in full.rows}
    assert kinds == {("real", ""), ("random", ""), ("synthetic_baseline", "topk-1024"),
                     ("synthetic_structured", "topk-1024")}
    combos = {(r["experiment"], r["metric"], r["readout"]) for r in full.rows}
    assert combos == {("sensitivity", "max_slope_step", "l2"), ("sensitivity", "max_slope_step", "kl"),
                      ("plateau", "plateau_length", "l2"), ("plateau", "plateau_length", "kl")}
    for r in full.rows:
        assert r["n"] == 16 and 0 <= r["median"] <= 30 and 0 <= r["ks_vs_real"] <= 1
        assert (r["ks_vs_real"] == 0) == (r["type"] == "real")
        assert 1 <= r["mean_steps"] <= 30 and r["mean_distance"] > 0
    med = full.summary["median_norm_hook"]
    assert full.summary["step"] == pytest.approx(0.06 * med)
    assert full.config["frequency_source"] == {"topk-1024": "logged"}
    assert set(full.figures) == {"sensitivity_l2.png", "sensitivity_kl.png", "plateau_l2.png", "plateau_kl.png"}


def test_save(full, tmp_path):
    out = full.save(tmp_path / "syn")
    assert len((out / "synthetic.csv").read_text().splitlines()) == len(full.rows) + 1
    assert (out / "plateau_l2.png").read_bytes()[:4] == b"\x89PNG"


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(0)
    v = rng.random(200)
    v[:20] = v[20:40]  # ties
    order = np.argsort(v, kind="stable")
    for t in range(30):
        target = float(v[t]) if t % 2 else float(rng.random())
        exclude = set(rng.choice(200, 15, replace=False).tolist())
        got = Y.nearest(v, order, target, int(np.searchsorted(v[order], target)), 10, exclude)
        want = sorted((i for i in range(200) if i not in exclude), key=lambda i: abs(v[i] - target))[:10]
        assert len(got) == 10 and not set(got) & exclude
        assert sorted(abs(v[got] - target)) == pytest.approx(sorted(abs(v[want] - target)))


def toy_stats(d_dict=300, d_in=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.nn.functional.normalize(torch.randn(d_dict, d_in, generator=g), dim=-1)
    freq = np.random.default_rng(seed).random(d_dict) ** 3
    order = np.argsort(freq, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(d_dict)
    return Y.FeatureStats(freq, order, rank, W, True)


def test_synthetic_baseline_keeps_sparsity_codes_and_frequency():
    st = toy_stats()
    codes = torch.zeros(300)
    act = torch.tensor([3, 50, 51, 120, 299])
    codes[act] = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    new = Y.synthetic_baseline(codes, codes > 0, st, 10, np.random.default_rng(0))
    assert int((new > 0).sum()) == 5
    assert sorted(new[new > 0].tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    for f in act.tolist():
        j = int((new == codes[f]).nonzero())
        neighbours = sorted((i for i in range(300) if i != f), key=lambda i: abs(st.freq[i] - st.freq[f]))[:10 + 5]
        assert j != f and j in neighbours  # one of the 10 nearest not taken before (at most 4 taken)


def test_synthetic_structured_matches_the_anchor_geometry():
    st = toy_stats()
    codes = torch.zeros(300)
    act = torch.tensor([7, 80, 200])
    codes[act] = torch.tensor([5.0, 1.0, 2.0])  # feature 7 is the top one
    new = Y.synthetic_structured(codes, codes > 0, st, 100, 0.42)
    assert sorted(new[new > 0].tolist()) == [1.0, 2.0, 5.0]
    a = 7
    cands = sorted((i for i in range(300) if i != a), key=lambda i: abs(st.freq[i] - st.freq[a]))[:100]
    anchor = min(cands, key=lambda i: abs(float(st.W[i] @ st.W[a]) - 0.42))
    assert int((new == 5.0).nonzero()) == anchor  # the top feature's code goes to the anchor
    used = {anchor}
    for i in (80, 200):  # in feature order, each to the unused feature whose cosine matches best
        j = int((new == codes[i]).nonzero())
        want = float(st.W[a] @ st.W[i])
        best = min(abs(float(st.W[anchor] @ st.W[k]) - want) for k in range(300) if k not in used)
        assert abs(float(st.W[anchor] @ st.W[j]) - want) == pytest.approx(best, abs=1e-6)
        used.add(j)


def test_max_slope_and_plateau_length():
    n = torch.arange(100).float()
    sig = 20 / (1 + torch.exp(-(n - 39.5) / 2))  # blows up at step 40
    d = torch.stack([sig, torch.zeros(100), sig, n * 0.5])
    n_valid = torch.tensor([100, 100, 30, 100])
    ms = T.max_slope_step(d, n_valid, 0.02, 100)
    assert ms.tolist()[:3] == [40, 99, 29]  # flat: n_steps − 1; truncated at 30: the last valid step
    ap = T.plateau_length(d.masked_fill(torch.arange(100) >= n_valid.unsqueeze(1), math.nan), 10.0, 100)
    assert ap.tolist() == [40, 100, 100, 20]


def test_walks_truncate_at_the_target():
    start = torch.zeros(3, 4)
    end = torch.tensor([[3.0, 4, 0, 0], [0.1, 0, 0, 0], [100, 0, 0, 0]])
    tr = T.walks(torch.arange(3), start, end, 0.5, 100)
    assert tr.n_valid.tolist() == [10, 1, 100]
    torch.testing.assert_close(tr.direction.norm(dim=-1), torch.ones(3))


def test_batched_walks_equal_single_forwards(demo_model, monkeypatch):
    """Rows of many walks share forwards (batch_size rows each) and give the same read-outs
    as one hand-made forward per step."""
    tokens = saekit.load_tokens("demo:heldout", demo_model, 6 * 10, ctx_len=10)[:6]
    hook, read = "blocks.1.hook_resid_pre", "blocks.3.hook_resid_post"
    g = torch.Generator().manual_seed(0)
    tr = T.walks(torch.arange(6) % 3, torch.randn(6, 128, generator=g) * 5, torch.randn(6, 128, generator=g) * 5,
                 1.0, 8)
    sizes = []
    real = demo_model.run_with_hooks

    def spy(tokens, **kw):
        sizes.append(len(tokens))
        return real(tokens, **kw)

    monkeypatch.setattr(demo_model, "run_with_hooks", spy)
    l2, kl = T.run_trajectories(demo_model, tokens, tr, hook, read, True, 1.0, 8, batch_size=16)
    monkeypatch.undo()
    rows = int((tr.n_valid - 1).sum())
    assert sizes == [6] + [16] * (rows // 16) + ([rows % 16] if rows % 16 else [])
    j, n = 4, int(tr.n_valid[4]) - 1
    got = {}

    def put(x, hook=None, vec=None):
        x = x.clone()
        x[:, -1] = vec
        return x

    with torch.no_grad():
        outs = []
        for step in (0, n):
            vec = tr.start[j] + step * 1.0 * tr.direction[j]
            logits = demo_model.run_with_hooks(
                tokens[1:2], fwd_hooks=[(hook, lambda x, hook=None, v=vec: put(x, vec=v)),
                                        (read, lambda x, hook=None: got.__setitem__("r", x[0, -1]))])
            outs.append((got["r"].clone(), logits[0, -1].log_softmax(-1)))
    assert float(l2[j, n]) == pytest.approx(float((outs[1][0] - outs[0][0]).norm()), rel=1e-4)
    p0, pn = outs[0][1], outs[1][1]
    assert float(kl[j, n]) == pytest.approx(float((p0.exp() * (p0 - pn)).sum()), rel=1e-3, abs=1e-6)
    assert torch.isnan(l2[j, n + 1:]).all() and l2[j, 0] == 0


def test_snmf_frequency_is_estimated_and_synthetic_keeps_its_sparsity(demo_model, demo_tokens):
    snmf = saekit.load_dictionary(ROOT / "checkpoints" / "demo-snmf")
    assert snmf.log_firing_freq is None  # SNMF logs none: estimated from the activations given
    stat = saekit.harvest(demo_model, [HOOK], demo_tokens[:4])[HOOK]
    st = Y.feature_stats(snmf, stat)
    assert not st.logged and st.freq.shape == (128,)
    codes = snmf.encode(stat)
    torch.testing.assert_close(torch.from_numpy(st.freq).float(), snmf.active(codes).float().mean(0),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(st.W.norm(dim=-1), torch.ones(128))
    codes = snmf.encode(stat[:6])  # as build_synthetic encodes them (SNMF's NNLS stops per batch)
    for kind in ("synthetic_baseline", "synthetic_structured"):
        rng = np.random.default_rng(0)
        new = torch.stack([Y.synthetic_baseline(c, m, st, 10, rng) if kind == "synthetic_baseline"
                           else Y.synthetic_structured(c, m, st, 100, 0.42)
                           for c, m in zip(codes, snmf.active(codes), strict=True)])
        for c, n in zip(codes, new, strict=True):  # as many features, with the same codes
            assert torch.equal(c[c > 0].sort().values, n[n > 0].sort().values)
        rng = np.random.default_rng(0)
        syn = Y.build_synthetic(snmf, st, stat[:6], kind, Y.Config(), rng)
        torch.testing.assert_close(syn, snmf.decode(new))


def test_bad_input_names_the_field(demo_model, topk):
    with pytest.raises(ValueError, match="read_hook.*must come after"):
        Y.run(Y.Config(read_hook="blocks.1.hook_resid_post", dictionaries=[]), model=demo_model)
    with pytest.raises(ValueError, match="need a dictionary"):
        Y.run(Y.Config(dictionaries=[]), model=demo_model)
    with pytest.raises(ValueError, match="types.*'bag'"):
        Y.run(Y.Config(types=["real", "bag"], dictionaries=[]), model=demo_model)
    with pytest.raises(ValueError, match="n_tokens"):
        Y.run(Y.Config(n_tokens=1000, dictionaries=[]), model=demo_model)
    with pytest.raises(ValueError, match="fitted on hook"):
        Y.run(Y.Config(hook="blocks.1.hook_resid_pre", dictionaries=[topk]), model=demo_model)
    with pytest.raises(ValueError, match="units"):
        Y.run(Y.Config(units="relative", dictionaries=[]), model=demo_model)


@pytest.mark.parametrize("recipe", ["synthetic_demo.toml", "synthetic_gpt2.toml"])
def test_recipes_load(recipe):
    cfg = load_config(ROOT / "eval" / recipe, cls=Y.Config)
    if "gpt2" in recipe:  # the papers' settings
        assert (cfg.hook, cfg.read_hook, cfg.ctx_len) == ("blocks.1.hook_resid_pre", "blocks.11.hook_resid_post", 10)
        assert (cfg.units, cfg.step, cfg.plateau_threshold, cfg.min_slope) == ("absolute", 0.5, 20, 0.02)
        assert cfg.n_prompts == 1000 and cfg.n_steps == 100 and cfg.plateau_threshold_kl == 0
    else:
        assert cfg == Y.Config()  # the dataclass defaults are the demo recipe
