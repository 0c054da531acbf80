"""Toy models of superposition: measures on known geometries, the paper's qualitative
results on small settings (one quick ``run_toy`` shared by the module), the ground-truth
benchmark, the report files and the argument checks."""

import argparse
import json
import math

import pytest
import torch

from saekit.report import Result
from saekit.superposition import (
    REGIMES,
    ToyModels,
    adversarial_sensitivity,
    antipodal_partners,
    dimensions_per_feature,
    feature_angles,
    feature_dimensionality,
    feature_norms,
    interference,
    sample_toy_inputs,
    train_toy_models,
)
from saekit.superposition_experiments import (
    classify_two_features,
    count_antipodal_pairs,
    geometry_of,
    phase_diagram,
)
from saekit.toy_report import add_parser, run_toy

# --------------------------------------------------------------------------- measures on known geometries


def _polygon(n, radius=1.0):
    a = torch.arange(n) * 2 * math.pi / n
    return radius * torch.stack([a.cos(), a.sin()])  # [2, n]


def test_measures_on_orthogonal_antipodal_and_pentagon_geometries():
    ortho = torch.zeros(3, 5)
    ortho[0, 0], ortho[1, 1], ortho[2, 2] = 1, 1, 1                     # 3 features alone, 2 dropped
    assert feature_norms(ortho).tolist() == [1, 1, 1, 0, 0]
    assert interference(ortho).abs().max() < 1e-6
    torch.testing.assert_close(feature_dimensionality(ortho), torch.tensor([1.0, 1, 1, 0, 0]))
    assert dimensions_per_feature(ortho).item() == pytest.approx(1.0)

    pairs = torch.tensor([[1.0, -1, 0, 0], [0, 0, 1, -1]])               # two antipodal pairs
    torch.testing.assert_close(interference(pairs), torch.ones(4))
    torch.testing.assert_close(feature_dimensionality(pairs), torch.full((4,), 0.5))
    partner, cos = antipodal_partners(pairs)
    assert partner.tolist() == [1, 0, 3, 2] and torch.allclose(cos, -torch.ones(4))
    assert count_antipodal_pairs(pairs).item() == 2
    assert count_antipodal_pairs(ortho).item() == 0

    pent = _polygon(5)
    torch.testing.assert_close(feature_dimensionality(pent), torch.full((5,), 0.4))
    assert dimensions_per_feature(pent).item() == pytest.approx(0.4)
    geo = geometry_of(ToyModels(pent[None], torch.zeros(1, 5), torch.ones(1, 5), torch.zeros(1), torch.zeros(1)))
    torch.testing.assert_close(geo.gaps, torch.full((5,), 72.0))
    # Batched over leading dimensions.
    assert interference(torch.stack([pairs, pairs])).shape == (2, 4)


def test_two_feature_regimes():
    W = torch.tensor([[[1.0, 0.0]], [[0.1, 1.0]], [[1.0, -0.9]], [[1.0, 0.9]]])  # [4, m=1, n=2]
    regime, norms, cos = classify_two_features(W)
    assert [REGIMES[r] for r in regime] == ["not represented", "dedicated dimension", "superposition", "other"]
    assert cos[2].item() == pytest.approx(-1.0)


# --------------------------------------------------------------------------- training


def test_training_is_seeded_and_learns():
    kw = dict(steps=200, batch_size=256, lr=1e-2, eval_batch=2048)
    a = train_toy_models(6, 2, [0.0, 0.9], 0.9, n_instances=2, seed=1, **kw)
    b = train_toy_models(6, 2, [0.0, 0.9], 0.9, n_instances=2, seed=1, **kw)
    assert a.W.shape == (2, 2, 6) and a.b.shape == (2, 6) and a.importance.shape == (2, 6)
    assert torch.equal(a.W, b.W) and torch.equal(a.loss, b.loss)
    torch.testing.assert_close(a.importance[0], 0.9 ** torch.arange(6.0))
    # Trained models beat the zero model (loss = E Σ I_i x_i², x uniform on [0,1] when present).
    zero = (a.importance * (1 - a.sparsity)[:, None] / 3).sum(1)
    assert (a.loss < 0.8 * zero).all(), (a.loss, zero)
    c = train_toy_models(6, 2, [0.0, 0.9], 0.9, n_instances=2, seed=2, **kw)
    assert not torch.equal(a.W, c.W)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_features=5, n_hidden=5, sparsity=0.5), "n_hidden must be < n_features"),
    (dict(n_features=5, n_hidden=7, sparsity=0.5), "n_hidden must be < n_features"),
    (dict(n_features=5, n_hidden=0, sparsity=0.5), "n_hidden"),
    (dict(n_features=5, n_hidden=2, sparsity=1.0), r"sparsity must lie in \[0, 1\)"),
    (dict(n_features=5, n_hidden=2, sparsity=-0.1), r"sparsity must lie in \[0, 1\)"),
    (dict(n_features=5, n_hidden=2, sparsity=float("nan")), r"sparsity must lie in \[0, 1\)"),
    (dict(n_features=5, n_hidden=2, sparsity=[]), "sparsity is empty"),
    (dict(n_features=5, n_hidden=2, sparsity=0.5, importance=-0.7), "importance decay"),
    (dict(n_features=5, n_hidden=2, sparsity=0.5, importance=torch.ones(4)), r"importance must be .*\[n_features\]"),
    (dict(n_features=5, n_hidden=2, sparsity=0.5, importance=torch.zeros(5)), "finite and > 0"),
    (dict(n_features=5, n_hidden=2, sparsity=[0.1, 0.2], importance=torch.ones(3, 5)), "one per model"),
    (dict(n_features=5, n_hidden=2, sparsity=0.5, steps=0), "steps"),
    (dict(n_features=5, n_hidden=2, sparsity=0.5, lr=0.0), "lr"),
    (dict(n_features=5, n_hidden=2, sparsity=0.5, lr_schedule="linear"), "lr_schedule"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_toy_models(**kwargs)


def test_bad_arguments_of_the_experiments():
    with pytest.raises(ValueError, match=r"density \(1 - S\) must lie in \(0, 1\]"):
        phase_diagram([1.0], [0.0])
    with pytest.raises(ValueError, match="relative_importance"):
        phase_diagram([-1.0], [0.5])
    with pytest.raises(ValueError, match="n_hidden = 2"):
        feature_angles(torch.ones(3, 5))
    two = ToyModels(torch.ones(2, 2, 5), torch.zeros(2, 5), torch.ones(2, 5), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="one model"):
        geometry_of(two)
    with pytest.raises(ValueError, match="epsilon"):
        adversarial_sensitivity(two, epsilon=0.0)


def test_adversarial_sensitivity_matches_autograd_and_orthogonal_features_give_at_most_one():
    g = torch.Generator().manual_seed(0)
    models = ToyModels(torch.randn(2, 2, 6, generator=g), -0.3 * torch.rand(2, 6, generator=g),
                       torch.ones(2, 6), torch.tensor([0.0, 0.8]), torch.zeros(2))
    s = adversarial_sensitivity(models, n_inputs=64, epsilon=1e-4, seed=3)
    x = sample_toy_inputs(models.sparsity, 6, 64, torch.Generator().manual_seed(3))
    for k in range(2):
        W, b = models.W[k], models.b[k]
        norms = [torch.linalg.matrix_norm(torch.autograd.functional.jacobian(
            lambda v, W=W, b=b: torch.relu(W.T @ (W @ v) + b), xi), ord=2) for xi in x[k] if (xi > 0).any()]
        assert s.n_inputs[k] == len(norms)
        assert s.jacobian_norm[k].item() == pytest.approx(torch.stack(norms).mean().item(), rel=1e-4)
    # ε small: the explicit attack agrees with the first-order bound.
    torch.testing.assert_close(s.attack_gain, s.jacobian_norm, rtol=0.02, atol=0.0)

    ortho = torch.zeros(1, 5, 6)
    ortho[0, range(5), range(5)] = 1
    pent = torch.zeros(1, 5, 6)
    pent[0, :2, :5] = _polygon(5)
    models = ToyModels(torch.cat([ortho, pent]), torch.full((2, 6), -0.1), torch.ones(2, 6),
                       torch.tensor([0.9, 0.9]), torch.zeros(2))
    s = adversarial_sensitivity(models, n_inputs=2000)
    assert 0.5 < s.jacobian_norm[0].item() <= 1 + 1e-5      # rows of an orthogonal projection
    assert s.jacobian_norm[1].item() > 1.2 * s.jacobian_norm[0].item()


# --------------------------------------------------------------------------- the paper's results, quick settings


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    result = run_toy(quick=True, progress=False)
    result.save(out)
    return out, result


def test_run_toy_writes_the_report(quick):
    out, result = quick
    for name in ("report.md", "toy.json", "index.html", "toy.csv", "sparsity.png", "norms.png",
                 "adversarial.png", "phase_diagram.png", "geometry.png", "benchmark.png"):
        assert (out / name).stat().st_size > 200, name
    assert (out / "sparsity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "toy.json").read_text()) == result.to_dict()
    assert Result.load(out) == result
    md = (out / "report.md").read_text()
    assert "wta_fraction = 1.0" in md and "![phase diagram](phase_diagram.png)" in md
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporaries
    assert set(result.summary["seconds"]) == {"sweep", "phase diagram", "geometry", "benchmark",
                                              "transcoders and hierarchy", "total"}
    assert "## Ground truth: transcoders on a known sparse map" in md and "absorption in a feature hierarchy" in md
    assert {(r["kind"], r["variant"]) for r in result.tables["transcoder"]} == {
        ("topk", "transcoder"), ("topk", "skip transcoder"), ("topk", "SAE on x")}
    assert [r["kind"] for r in result.tables["hierarchy_mean"]] == ["batchtopk", "matryoshka_batchtopk", "snmf"]


def test_more_features_represented_and_superposed_as_sparsity_rises(quick):
    rows = quick[1].tables["sparsity_sweep"]
    dense, sparse = rows[0], rows[-1]
    assert dense["sparsity S"] == 0 and sparse["sparsity S"] >= 0.99
    assert dense["represented"] <= 5 and dense["superposed"] == 0       # m = 5 orthogonal features
    assert sparse["represented"] >= dense["represented"] + 3
    assert sparse["superposed"] >= 3
    assert sparse["mean interference"] > dense["mean interference"] + 0.1
    assert sparse["D* (dims per feature)"] < dense["D* (dims per feature)"]


def test_phase_diagram_has_the_three_regimes_in_the_expected_corners(quick):
    ph = quick[1].data["phase_diagram"]
    name = [[ph["regimes"][c] for c in row] for row in ph["regime"]]   # [density, ratio]
    r, p = ph["relative_importance"], ph["density"]
    assert r[0] < 1 < r[-1] and p[0] < 0.1 and p[-1] == 1
    one = min(range(len(r)), key=lambda j: abs(math.log(r[j])))
    assert name[-1][0] == "not represented"          # dense, extra feature less important
    assert name[-1][-1] == "dedicated dimension"     # dense, extra feature more important
    assert name[0][one] == "superposition"           # sparse, equal importance
    assert ph["cosine"][0][one] < -0.9               # antipodal


def test_five_features_in_two_dimensions_form_a_pentagon(quick):
    pent = quick[1].data["geometry"]["pentagon"]
    assert pent["sparsity"] >= 0.95
    assert min(pent["norms"]) > 0.8 and max(pent["norms"]) < 1.3
    assert max(abs(g - 72) for g in pent["gaps"]) < 8, pent["gaps"]
    assert all(abs(d - 0.4) < 0.08 for d in pent["dimensionality"]), pent["dimensionality"]


def test_antipodal_pairs_when_every_feature_is_represented(quick):
    rows = quick[1].tables["antipodal"]
    m = quick[1].data["antipodal"]["n_hidden"]
    assert rows[0]["sparsity S"] == 0 and rows[0]["antipodal pairs"] == 0  # dense: a projection, no pairs
    assert rows[-1]["represented"] == 2 * m and rows[-1]["antipodal pairs"] == m
    assert abs(rows[-1]["mean D_i (represented)"] - 0.5) < 0.1


def test_superposition_makes_models_more_sensitive_to_perturbations(quick):
    adv = quick[1].data["adversarial"]
    assert adv["jacobian_norm"][0] == pytest.approx(1.0, abs=0.1)          # dense: orthogonal features
    assert adv["jacobian_norm"][-1] > 1.2 * adv["jacobian_norm"][0]
    assert adv["attack_gain"][-1] > 1.2 * adv["attack_gain"][0]


def test_ground_truth_benchmark_recovers_synthetic_features(quick):
    rows = {(r["data"].split(" ")[0], r["kind"], r["d_dict"]): r for r in quick[1].rows}
    topk = rows["synthetic", "topk", 96]
    assert topk["MMCS"] > 0.9 and topk["matched >= 0.9"] > 0.7, topk
    assert topk["dead"] < 0.1 and topk["FVU"] < 0.3
    snmf = rows["synthetic", "snmf", 32]  # capped at d_in: fit_snmf refuses more than the data's rank
    assert snmf["matched >= 0.9"] <= 32 / 96 + 1e-9
    assert rows["synthetic", "topk", 32]["MMCS"] < topk["MMCS"]  # the width control: 32 latents for 96
    toy = rows["toy", "topk", 40]
    assert toy["MMCS"] > 0.85 and toy["true features"] >= 30, toy


def test_every_claim_of_the_report_holds_on_quick_settings(quick):
    failed = {k: v["measured"] for k, v in quick[1].summary["checks"].items() if not v["holds"]}
    assert not failed, failed


def test_cli_parser():
    ap = argparse.ArgumentParser()
    add_parser(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["toy"])
    assert args.out == "runs/toy" and args.quick is False and callable(args.fn)
    assert ap.parse_args(["toy", "--out", "x", "--quick"]).quick
