"""Sensitive directions and the error-pathology test (saekit.evals.sensitivity) on the demo LM."""

import math
from pathlib import Path

import pytest
import torch

import saekit
from saekit.config import load_config
from saekit.evals import sensitivity as S
from saekit.evals.common import RELATIVE_RIDGE, fit_gaussian

ROOT = Path(__file__).resolve().parent.parent
HOOK = "blocks.2.mlp.hook_post"
RADII = [0.05, 0.2, 0.5]


@pytest.fixture(scope="module")
def topk():
    return saekit.load_dictionary(ROOT / "checkpoints" / "demo-topk")


@pytest.fixture(scope="module")
def result(demo_model, topk):
    cfg = S.Config(hook=HOOK, dictionaries=[topk], n_tokens=2048, ctx_len=64, batch_size=16, radii=RADII)
    return S.run(cfg, model=demo_model)


def curve(result, family, dictionary=""):
    rows = [r for r in result.rows if r["experiment"] == "curve" and r["family"] == family
            and r["dictionary"] == dictionary]
    return [r["kl_mean"] for r in sorted(rows, key=lambda r: r["r"])]


def test_known_result_isotropic_moves_the_output_less_than_mixtures(result):
    """Lee & Heimersheim: cov-random mixture (and real mixture) directions are more
    sensitive than isotropic ones at the same r. On the demo LM (MLP hidden, layer 2)
    measured at r = 0.05/0.2/0.5 × median norm: isotropic 0.00087/0.014/0.084,
    cov-mixture 0.0016/0.025/0.16, real mixture 0.0017/0.027/0.18 nats per token."""
    iso, cov, real = curve(result, "isotropic"), curve(result, "cov_mixture"), curve(result, "real_mixture")
    assert len(iso) == len(cov) == len(real) == len(RADII)
    for i, r in enumerate(RADII):
        assert iso[i] < 0.8 * cov[i], (r, iso[i], cov[i])
        assert iso[i] < 0.8 * real[i], (r, iso[i], real[i])


def test_known_result_reconstruction_error_not_pathological_against_cov_mixture(result):
    """Lee & Heimersheim: against the cov-random-mixture baseline at matched ε, the KL of
    splicing x̂ is no longer pathologically high (ratio ≈ 1 at GPT-2 L6). Demo LM, the
    shipped TopK SAE: 0.61 (cov-mixture), 0.53 (real mixture)."""
    ratios = result.summary
    assert 0 < ratios["pathology_ratio/topk-1024/cov_mixture"] < 1.5
    assert 0 < ratios["pathology_ratio/topk-1024/real_mixture"] < 1.5
    # With an SE over windows that makes "below 1" a conclusion, not noise.
    se = ratios["pathology_ratio_se/topk-1024/cov_mixture"]
    assert 0 < se and ratios["pathology_ratio/topk-1024/cov_mixture"] + 2 * se < 1
    assert all(ratios[k] > 0 for k in ratios if k.startswith("kl_mean_se/"))


@pytest.mark.xfail(strict=True, reason=(
    "Gurnee 2024 found KL(SAE(x)) 2-4.5x the KL of x + eps*u with isotropic u at every layer of "
    "GPT-2 small; on the demo LM the shipped TopK SAE (layer-2 MLP hidden, 1,024 features, k 16) "
    "measures 1.15x (SNMF 1.30x): a 4-layer, d_model-128 model trained for 30 CPU minutes, whose "
    "MLP-hidden directions are much less anisotropic than GPT-2's residual stream"))
def test_known_result_gurnee_pathology_against_isotropic(result):
    assert result.summary["pathology_ratio/topk-1024/isotropic"] >= 2.0


def test_rows_are_tidy_and_curves_grow_with_r(result, topk):
    keys = set(result.rows[0])
    assert all(set(r) == keys for r in result.rows)
    assert {"experiment", "family", "dictionary", "r", "r_abs", "kl_mean", "kl_q10", "kl_q50", "kl_q90",
            "kl_recon", "kl_ratio", "n_tokens", "n_directions"} <= keys
    med = result.summary["median_norm"]
    for fam in S.BASELINE_FAMILIES:
        kl = curve(result, fam)
        assert kl == sorted(kl) and kl[0] > 0, (fam, kl)
    for r in result.rows:
        if r["experiment"] == "curve":
            assert r["r_abs"] == pytest.approx(r["r"] * med)
            assert 0 <= r["kl_q10"] <= r["kl_q50"] <= r["kl_q90"]
            assert math.isnan(r["kl_ratio"])
    # Features: 'active' draws from the features that fire in the batch, all of the 1,024
    # here; 'alive' (alive, not in this batch) may be empty, 'dead' is empty (none dead).
    active = [r for r in result.rows if r["family"] == "feature_active"]
    assert len(active) == len(RADII) and 0 < active[0]["n_directions"] <= topk.cfg.d_dict
    dead = result.summary["dead_features/topk-1024"]
    assert any(r["family"] == "feature_dead" for r in result.rows) == (dead > 0)
    path = [r for r in result.rows if r["experiment"] == "pathology"]
    assert {r["family"] for r in path} == {"isotropic", "cov_mixture", "real_mixture"}
    assert all(r["kl_recon"] > 0 and r["kl_ratio"] == pytest.approx(r["kl_recon"] / r["kl_mean"]) for r in path)


def test_pathology_epsilon_is_the_reconstruction_error(result, topk, demo_model):
    tokens = saekit.load_tokens("demo:heldout", demo_model, 2048, 64, seed=0)
    x = saekit.harvest(demo_model, [HOOK], tokens)[HOOK]
    with torch.no_grad():
        eps = (topk(x) - x).norm(dim=-1).mean()
    path = [r for r in result.rows if r["experiment"] == "pathology"]
    assert path[0]["r_abs"] == pytest.approx(float(eps), rel=1e-4)
    assert path[0]["n_tokens"] == len(x)


def test_all_variants_of_a_batch_share_stacked_forwards(demo_model, topk, monkeypatch):
    """One perturbation_kl call per batch holds every family × r (+ pathology) variant."""
    from saekit.evals import common

    calls = []
    real = common.perturbation_kl

    def spy(model, tokens, hook, deltas, n_variants=None, **kw):
        calls.append((len(tokens), n_variants, kw["max_rows"]))
        return real(model, tokens, hook, deltas, n_variants=n_variants, **kw)

    monkeypatch.setattr(common, "perturbation_kl", spy)
    monkeypatch.setattr(S, "perturbation_kl", spy)  # bound where it is used
    cfg = S.Config(hook=HOOK, dictionaries=[topk], n_tokens=512, ctx_len=32, batch_size=8, radii=[0.1, 0.3],
                   families=["isotropic", "real_mixture"], feature_classes=["active"], max_rows=32,
                   pathology_families=["isotropic", "real_mixture"])
    S.run(cfg, model=demo_model)
    assert calls == [(8, 2 * 2 + 2 + 2, 32)] * 2  # 16 windows: 2 batches of 8


def test_snmf_features_and_pathology(demo_model):
    snmf = saekit.load_dictionary(ROOT / "checkpoints" / "demo-snmf")
    cfg = S.Config(hook=HOOK, dictionaries=[snmf], n_tokens=256, ctx_len=32, batch_size=8, radii=[0.2],
                   families=["isotropic"], pathology_families=["isotropic"])
    res = S.run(cfg, model=demo_model)
    active = next(r for r in res.rows if r["family"] == "feature_active")
    assert 0 < active["n_directions"] <= 128 and active["kl_mean"] > 0
    assert res.summary["pathology_ratio/snmf-128/isotropic"] > 0
    assert res.config["dictionaries"] == ["snmf-128"]


def test_resid_hook_with_a_fitted_sae_and_absolute_radii(demo_model, demo_acts):
    hook = "blocks.1.hook_resid_post"
    sae = saekit.fit(demo_acts[hook], "topk", d_dict=256, k=8, batch_size=512, hook=hook, model=demo_model)
    cfg = S.Config(hook=hook, dictionaries=[sae], n_tokens=256, ctx_len=32, batch_size=8, radii=[1.0, 3.0],
                   radius_unit="absolute", families=["isotropic", "real_mixture"], feature_classes=["active"],
                   pathology_families=["isotropic"])
    res = S.run(cfg, model=demo_model)
    curves = [r for r in res.rows if r["experiment"] == "curve"]
    assert {r["r_abs"] for r in curves} == {1.0, 3.0}
    assert {r["family"] for r in curves} == {"isotropic", "real_mixture", "feature_active"}


def test_save_writes_tables_and_plots(result, tmp_path):
    out = result.save(tmp_path / "sens")
    for f in ("sensitivity.csv", "sensitivity.json", "report.md", "index.html", "sensitivity_curves.png",
              "error_pathology.png"):
        assert (out / f).stat().st_size > 0, f
    assert (out / "sensitivity_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "sensitivity.csv").read_text().splitlines()) == len(result.rows) + 1


def test_directions_are_unit_and_per_token():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16) * 3 + 1
    pool = torch.cat([x, x[:50]])  # duplicates: real_mixture must not return zero vectors
    gauss = S.fit_gaussian(pool)
    for fam in S.BASELINE_FAMILIES:
        u = S.baseline_directions(fam, x, pool, gauss, 10.0, g)
        assert u.shape == x.shape
        torch.testing.assert_close(u.norm(dim=-1), torch.ones(len(x)))
        assert (u[0] - u[1]).abs().max() > 1e-3  # each token its own direction
    W = torch.nn.functional.normalize(torch.randn(30, 16), dim=-1)
    cand = torch.tensor([3, 7, 11])
    u, pick = S.feature_directions(W, cand, 500, g)
    assert {int((W @ v).argmax()) for v in u} == set(pick.tolist()) == {3, 7, 11}


def test_isotropic_family_follows_the_paper():
    """u ∝ s·z − x with z ~ N(0, I) (``dajale423/error_pathology``: randn × 121 − x)."""
    x = torch.randn(5, 8)
    u = S.baseline_directions("isotropic", x, x, None, 121.0, torch.Generator().manual_seed(1))
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(u, torch.nn.functional.normalize(121.0 * z - x, dim=-1))


def test_gaussian_matches_covariance():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4000, 6, generator=g) @ torch.randn(6, 6, generator=g) + 5
    gauss = fit_gaussian(A, ridge=0.0)
    s = gauss.sample(40000, g)
    torch.testing.assert_close(s.mean(0), A.mean(0), atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(s.T), torch.cov(A.T), atol=0.15 * float(torch.cov(A.T).abs().max()), rtol=0)
    assert fit_gaussian(A).ridge == pytest.approx(RELATIVE_RIDGE * float(torch.cov(A.T).diagonal().mean()))


def test_bad_input_names_the_field(demo_model, topk):
    with pytest.raises(ValueError, match="fitted on hook 'blocks.2.mlp.hook_post'.*blocks.1.hook_resid_pre"):
        S.run(S.Config(hook="blocks.1.hook_resid_pre", dictionaries=[topk], n_tokens=64), model=demo_model)
    with pytest.raises(ValueError, match="families.*'gaussian'"):
        S.run(S.Config(families=["gaussian"], dictionaries=[]), model=demo_model)
    with pytest.raises(ValueError, match="radius_unit"):
        S.run(S.Config(radius_unit="relative", dictionaries=[]), model=demo_model)
    with pytest.raises(ValueError, match="radii"):
        S.run(S.Config(radii=[], dictionaries=[]), model=demo_model)
    with pytest.raises(ValueError, match="unknown hook"):
        S.run(S.Config(hook="blocks.9.mlp.hook_post", dictionaries=[]), model=demo_model)
    from saekit.dictionaries import REGISTRY, DictionaryConfig

    wrong = REGISTRY["topk"](DictionaryConfig(kind="topk", d_in=128, d_dict=64, k=4))
    with pytest.raises(ValueError, match=r"dictionaries\[0\].*d_in=128.*width 512"):
        S.run(S.Config(dictionaries=[wrong], n_tokens=64), model=demo_model)


@pytest.mark.parametrize("recipe", ["sensitivity_demo.toml", "sensitivity_gpt2.toml"])
def test_recipes_load(recipe):
    cfg = load_config(ROOT / "eval" / recipe, cls=S.Config)
    assert isinstance(cfg, S.Config)
    S.check_choices(cfg.families, S.BASELINE_FAMILIES, "families")
    if "gpt2" in recipe:  # the paper's settings
        assert cfg.hook == "blocks.6.hook_resid_pre" and cfg.radius_unit == "absolute"
        assert cfg.radii[:3] == [1, 3, 5] and cfg.radii[-1] == 91 and len(cfg.radii) == 23
        assert cfg.isotropic_scale == 121 and cfg.cov_ridge == 0.01 and cfg.batch_size == 64
    else:
        assert cfg == S.Config()  # the dataclass defaults are the demo recipe
