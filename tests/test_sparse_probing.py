"""Sparse probing (``saekit eval sparse_probing``): the probes, the selection, and the
known result on the demo LM's planted concepts."""

import pytest
import torch

from saekit.evals import run
from saekit.evals.sparse_probing import Config, fit_probe, predict, top_mean_difference


def test_probe_separates_separable_data_and_selection_finds_the_planted_feature():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(400, generator=g) < 0.5
    codes = torch.rand(400, 50, generator=g)
    codes[:, 17] += 3 * y  # one feature carries the label
    assert top_mean_difference(codes, y, 1).tolist() == [17]
    probe = fit_probe(codes[:300, [17]], y[:300])
    assert (predict(codes[300:, [17]], probe) == y[300:]).all()
    noise = fit_probe(codes[:300, [3]], y[:300])  # a feature unrelated to the label: near chance
    assert (predict(codes[300:, [3]], noise) == y[300:]).double().mean() < 0.7


@pytest.mark.timeout(240)
def test_a_trained_sae_reaches_the_dense_probe_at_small_k_and_a_random_one_does_not(demo_model):
    """Gurnee et al.'s and SAEBench's premise on planted concepts: the demo TopK SAE's
    best 5 features per family come within 0.05 of the dense probe on all 512 MLP
    dimensions; a random TopK SAE of the same shape needs far more."""
    r = run("sparse_probing", Config(n_tokens=16384, dictionaries=["checkpoints/demo-topk"]), model=demo_model)
    s = r.summary
    assert s["concepts"] == 7 and s["dense"] > 0.97
    assert s["demo-topk@5"] > s["dense"] - 0.05, s
    assert s["demo-topk@1"] > s["random@1"] + 0.1 and s["demo-topk@5"] > s["random@5"] + 0.05, s
    rows = [x for x in r.rows if x["probe"] == "demo-topk" and x["k"] == 1]
    assert len(rows) == 7 and all(x["n_test"] > 0 and len(x["features"]) == 1 for x in rows)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="level"):
        run("sparse_probing", Config(level="token"))
    with pytest.raises(ValueError, match="k_values"):
        run("sparse_probing", Config(k_values=[0, 5]))
