"""saekit.evals.stable_regions: the sharpness definition, the batched interpolation
(rows stacked without mixing pairs, one forward per batch of pairs), the random-init
twin, the recipes, and the paper's control on the demo LM (trained sharper than random
init)."""

import math
from pathlib import Path

import pytest
import torch
from conftest import DEMO_LM, ROOT

from saekit.config import load_config
from saekit.evals import stable_regions as sr


def _cfg(**kw):
    return sr.Config(model=str(DEMO_LM), **kw)


@pytest.fixture(scope="module")
def result(demo_model):
    """The demo LM against its random-init twin, 64 pairs × 30 steps."""
    return sr.run(_cfg(n_pairs=64), model=demo_model)


def test_trained_demo_lm_has_sharper_regions_than_its_random_init_twin(result, tmp_path):
    """The paper's finding 2: random init gives near-linear curves, training sharpens them.
    Measured (2026-11-21) on these 64 pairs: median sharpness 1.55 (IQR 1.39-1.79) trained,
    1.12 (1.09-1.18) random init, Mann-Whitney p = 8e-19; on the recipe's 1000 pairs 1.55
    (1.37-1.83) against 1.13 (1.09-1.18). The demo LM's jumps are mild (a 4-layer model
    trained for half an hour); the paper's larger models reach far higher sharpness."""
    s = result.summary
    assert s["n_degenerate_trained"] == 0 and s["n_degenerate_random-init"] == 0
    assert s["trained_sharpness_median"] > 1.2 * s["random-init_sharpness_median"], s
    assert 0 < s["sharpness_ratio_se"] < 0.5 * (s["sharpness_ratio"] - 1), s  # the gap is many SEs wide
    assert s["mannwhitney_p_trained_sharper"] < 1e-3, s
    # near-linear control: a straight line has sharpness exactly 1
    assert 1.0 <= s["random-init_sharpness_median"] < 1.25, s
    # every sharpness is at least 1 (the largest step of a curve from 0 to 1 is ≥ the mean step)
    assert min(r["sharpness"] for r in result.rows) >= 1.0 - 1e-4
    for name in ("trained", "random-init"):
        curve = s[f"{name}_median_curve"]
        assert len(curve) == 30 and curve[0] == pytest.approx(0, abs=1e-3) and curve[-1] == pytest.approx(1)
    assert len(result.rows) == 2 * 64 and {r["model"] for r in result.rows} == {"trained", "random-init"}

    out = result.save(tmp_path / "sr")
    assert {p.name for p in out.iterdir()} >= {"stable-regions.csv", "stable-regions.json", "stable_regions.png",
                                                "report.md", "index.html"}
    assert (out / "stable_regions.png").read_bytes()[:4] == b"\x89PNG"


def test_sharpness_matches_the_papers_definition():
    """max_k (r_{k+1} − r_k)·(S − 1) with r = d/d(1): a line gives 1, a single jump S − 1."""
    S = 11
    line = torch.linspace(0, 2, S)
    step = torch.tensor([0.0] * 6 + [3.0] * 5)
    bump = torch.tensor([0, 0.1, 0.2, 0.3, 1.2, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # overshoots then settles
    flat = torch.zeros(S)  # d(1) = 0: no relative curve
    curves = sr.Curves(torch.stack([line, step, bump, flat]), torch.ones(4), torch.ones(4))
    s = sr.sharpness(curves)
    assert s.sharpness[0].item() == pytest.approx(1.0)
    assert s.sharpness[1].item() == pytest.approx(S - 1)
    assert s.jump_alpha[1].item() == pytest.approx(0.55)  # between α = 0.5 and 0.6
    assert s.sharpness[2].item() == pytest.approx(0.9 * (S - 1))
    assert s.degenerate.tolist() == [False, False, False, True]
    assert math.isnan(s.sharpness[3].item()) and torch.isnan(s.relative[3]).all()


def test_stacked_rows_match_a_single_pair_forward_and_forwards_are_batched(demo_model, monkeypatch):
    """Each (pair, α) row of the stacked forward equals the same patch run alone, and the
    number and size of forwards is what stacking α × pairs implies."""
    cfg = _cfg(n_pairs=12, n_steps=5, batch_size=4)
    prompts = sr.sample_prompts(demo_model, cfg)
    assert prompts.shape == (13, 10) and (prompts[:, 0] == prompts[0, 0]).all()  # BOS first

    sizes = []
    original = demo_model.run_with_hooks

    def counting(tokens, *a, **kw):
        sizes.append(len(tokens))
        return original(tokens, *a, **kw)

    monkeypatch.setattr(demo_model, "run_with_hooks", counting)
    curves = sr.interpolation_curves(demo_model, prompts, cfg.hook, cfg.read_hook, cfg.n_steps,
                                     batch_size=cfg.batch_size)
    monkeypatch.undo()
    # one clean forward (13 prompts ≤ 4 × 5 rows), then 12 pairs / 4 per forward, 4 × 5 rows each
    assert sizes == [13, 20, 20, 20]

    # pair 6 at α = 0.75, run alone
    acts, reads = sr._run_patched(demo_model, prompts, cfg.hook, cfg.read_hook, -1, None)
    x = acts[6] + 0.75 * (acts[7] - acts[6])
    _, alone = sr._run_patched(demo_model, prompts[6:7], cfg.hook, cfg.read_hook, -1, x[None])
    assert curves.distance[6, 3].item() == pytest.approx((alone[0] - reads[6]).norm().item(), rel=1e-4)
    assert curves.input_distance[6].item() == pytest.approx((acts[7] - acts[6]).norm().item(), rel=1e-5)
    # α = 0 reproduces the clean run
    assert curves.distance[:, 0].max().item() < 1e-3 * curves.clean_norm.min().item()


def test_random_init_twin_is_the_same_architecture_with_seeded_fresh_weights(demo_model):
    rng = torch.get_rng_state()
    twin = sr.random_init_twin(DEMO_LM, seed=0)
    again = sr.random_init_twin(DEMO_LM, seed=0)
    other = sr.random_init_twin(DEMO_LM, seed=1)
    assert torch.equal(rng, torch.get_rng_state())  # the caller's RNG is left alone
    assert set(twin.hook_dict) == set(demo_model.hook_dict) and not twin.training
    assert twin.saekit_processing == demo_model.saekit_processing == "native"
    trained, a, b, c = (dict(m.named_parameters()) for m in (demo_model, twin, again, other))
    assert a.keys() == trained.keys()
    w = [k for k, v in a.items() if v.ndim == 2][0]
    assert torch.equal(a[w], b[w]) and not torch.equal(a[w], c[w]) and not torch.equal(a[w], trained[w])
    assert all(a[k].shape == trained[k].shape for k in a)


def test_hugging_face_models_get_a_from_config_twin_and_the_run_works(tmp_path):
    """The GPT-2 recipe's path, offline: a tiny local GPT-2 directory, raw processing,
    read-out at ln_final.hook_out (HF hidden_states[-1])."""
    from transformers import GPT2Config, GPT2LMHeadModel

    import saekit
    from saekit.models import load_tokenizer

    d = tmp_path / "tiny-gpt2"
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=32, vocab_size=4096,
                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(123)  # the "trained" weights; the twins use seed 0
    GPT2LMHeadModel(cfg).save_pretrained(d)
    load_tokenizer(DEMO_LM / "tokenizer.json").save_pretrained(d)
    model = saekit.load_model(d, device="cpu", processing="raw")
    twin = sr.random_init_twin(d, seed=0, processing="raw")
    p_model, p_twin = dict(model.named_parameters()), dict(twin.named_parameters())
    assert p_model.keys() == p_twin.keys() and not twin.training and twin.saekit_processing == "raw"
    w = "transformer.wpe._original_component.weight"
    assert not torch.equal(p_model[w], p_twin[w])
    assert torch.equal(p_twin[w], dict(sr.random_init_twin(d, seed=0, processing="raw").named_parameters())[w])

    r = sr.run(sr.Config(model=str(d), processing="raw", n_pairs=6, n_steps=4, prepend_bos=False), model=model)
    assert len(r.rows) == 12 and r.summary["n_pairs"] == 6
    assert all(r_["sharpness"] >= 1.0 - 1e-4 for r_ in r.rows if not r_["degenerate"])


@pytest.mark.parametrize("recipe", ["stable_regions_demo.toml", "stable_regions_gpt2.toml"])
def test_recipes_load_into_the_config(recipe):
    cfg = load_config(ROOT / "eval" / recipe, cls=sr.Config)
    assert cfg.hook == "blocks.0.hook_resid_post" and cfg.read_hook == "ln_final.hook_out"
    assert cfg.n_steps >= 30 and cfg.n_pairs == 1000 and cfg.position == -1 and cfg.control
    if "gpt2" in recipe:  # the paper's settings
        assert (cfg.model, cfg.processing, cfg.prompt_len, cfg.prepend_bos) == ("gpt2", "raw", 10, False)
        assert (cfg.data, cfg.text_column) == ("sedthh/gutenberg_english", "TEXT")
    else:
        assert Path(ROOT / cfg.model).resolve() == DEMO_LM.resolve() and cfg.prepend_bos


@pytest.mark.parametrize("field, value, message", [
    ("dictionaries", ["checkpoints/demo-topk"], "dictionaries must be empty"),
    ("n_steps", 2, "n_steps must be an integer ≥ 3"),
    ("position", 10, "position must index"),
    ("read_hook", "ln_final.hook_nope", "read_hook 'ln_final.hook_nope' is not a hook"),
    ("hook", "blocks.9.hook_resid_post", "unknown hook"),
])
def test_bad_settings_name_the_field(demo_model, field, value, message):
    with pytest.raises(ValueError, match=message):
        sr.run(_cfg(n_pairs=2, **{field: value}), model=demo_model)
