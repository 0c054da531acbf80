"""Ground truth for transcoders and Matryoshka SAEs (``saekit toy``): the known sparse map
and the feature hierarchy, the absorption score on dictionaries built by hand, recovery
of both sides of the map, and absorption of BatchTopK against Matryoshka BatchTopK and
the recursive SNMF. Test-sized settings are those of ``saekit toy --quick`` (8,192 rows,
20 epochs, batch 256)."""

import math

import pytest
import torch

from saekit.ground_truth_hierarchy import (
    HierarchicalData,
    absorption_scores,
    hierarchical_sparse_data,
    hierarchy_benchmark,
    matched_latents,
    mean_over_seeds,
    split_rows,
)
from saekit.ground_truth_transcoder import chance_mmcs, synthetic_sparse_map, transcoder_benchmark

pytestmark = pytest.mark.timeout(120)

FIT = dict(epochs=20, batch_size=256, lr=4e-3)  # saekit toy --quick


# --------------------------------------------------------------------------- the sparse map


def test_sparse_map_is_codes_times_known_directions_on_both_sides():
    m = synthetic_sparse_map(2000, d_in=8, d_out=12, n_features=24, p_active=0.1, seed=3)
    assert m.x.shape == (2000, 8) and m.y.shape == (2000, 12) and m.codes.shape == (2000, 24)
    torch.testing.assert_close(m.x, m.codes @ m.in_features, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.y, m.codes @ m.out_features, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.out_features.norm(dim=1), torch.ones(24))
    again = synthetic_sparse_map(2000, d_in=8, d_out=12, n_features=24, p_active=0.1, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(m, again, strict=True))
    other = synthetic_sparse_map(2000, d_in=8, d_out=12, n_features=24, p_active=0.1, seed=4)
    assert not torch.equal(m.out_features, other.out_features)
    noisy = synthetic_sparse_map(4000, d_in=8, d_out=12, n_features=24, noise=0.2, seed=3)
    assert (noisy.y - noisy.codes @ noisy.out_features).std().item() == pytest.approx(0.2, rel=0.05)
    with pytest.raises(ValueError, match="d_out must be a positive int"):
        synthetic_sparse_map(10, d_out=0)


@pytest.fixture(scope="module")
def transcoders():
    m = synthetic_sparse_map(8192 + 4096, seed=0)
    train = m._replace(x=m.x[:8192], y=m.y[:8192], codes=m.codes[:8192])
    test = m._replace(x=m.x[8192:], y=m.y[8192:], codes=m.codes[8192:])
    rows = transcoder_benchmark(train, test, ("topk", "batchtopk"), **FIT)
    return {(r["kind"], r["variant"]): r for r in rows}


@pytest.mark.parametrize("kind", ["topk", "batchtopk"])
def test_transcoder_recovers_both_sides_of_the_map(transcoders, kind):
    """Thresholds from measurements at these settings, map and fit seeds 0-2 (64 features
    in 32 dimensions, k = 4): output MMCS 0.923-0.943 (topk) and 0.916-0.937 (batchtopk),
    input MMCS 0.666-0.681, selectivity 0.774-0.804, FVU 0.24-0.31; random directions
    reach MMCS 0.443 on either side. The input side stays lower because an encoder in
    superposition must also cancel the other features' interference (an SAE on x: 0.74-0.80)."""
    r = transcoders[kind, "transcoder"]
    chance = chance_mmcs(64, 64, 32)
    assert chance == pytest.approx(0.443, abs=0.01)
    assert r["output MMCS"] > 0.85, r          # what each latent writes: the e_i
    assert r["input MMCS"] > chance + 0.15, r  # what each latent reads: towards the d_i
    assert r["selectivity"] > 0.6, r           # and it fires with its feature
    assert r["FVU"] < 0.45 and r["dead"] < 0.1, r


def test_only_the_dictionary_fitted_to_y_writes_the_output_directions(transcoders):
    """The check above can fail: an SAE on x has its decoder on the input side (where it
    matches the d_i), and a skip transcoder's skip term takes the part of y that is
    linear in x, so its latents write the non-linear rest rather than the e_i (measured,
    seeds 0-2: output MMCS 0.62-0.67 while its FVU of y falls to 0.15-0.17 from 0.24-0.31)."""
    tc, skip, sae = (transcoders["topk", v] for v in ("transcoder", "skip transcoder", "SAE on x"))
    assert sae["output MMCS"] is None and sae["decoder-input MMCS"] > 0.9
    assert sae["input MMCS"] > tc["input MMCS"]  # reconstructing x is the easier job for an encoder
    assert skip["FVU"] < tc["FVU"]
    assert skip["output MMCS"] < tc["output MMCS"] - 0.1


# --------------------------------------------------------------------------- the hierarchy


def test_hierarchy_children_fire_only_with_their_parent_and_never_together():
    n = 40_000
    data = hierarchical_sparse_data(n, seed=1)
    on = data.codes > 0
    assert data.features.shape == (20, 20) and data.n_parents == 3
    torch.testing.assert_close(data.features @ data.features.T, torch.eye(20), atol=1e-5, rtol=0)
    pairs = data.pairs()
    assert len(pairs) == 9 and pairs[0] == (0, 3) and pairs[-1] == (2, 11)
    for p, c in pairs:
        assert not (on[:, c] & ~on[:, p]).any()
    for p in range(3):
        kids = [c for q, c in pairs if q == p]
        assert on[:, kids].sum(1).max() <= 1  # mutually exclusive
        assert on[:, kids].any(1)[on[:, p]].float().mean().item() == pytest.approx(0.6, abs=0.02)
    rate = on.float().mean(0)
    se = 5 * math.sqrt(0.15 * 0.85 / n)
    assert (rate[:3] - 0.15).abs().max() < se and (rate[3:12] - 0.03).abs().max() < se
    assert (rate[12:] - 0.05).abs().max() < se
    assert on.sum(1).float().mean().item() == pytest.approx(data.expected_l0, abs=0.02)
    torch.testing.assert_close(data.x, data.codes @ data.features, atol=1e-5, rtol=0)
    small = hierarchical_sparse_data(100, d_in=10, seed=1)  # fewer dimensions than features
    assert small.features.shape == (20, 10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_children=4, p_child=0.3), "n_children \\* p_child must be <= 1"),
    (dict(p_parent=1.5), "p_parent"),
    (dict(n_independent=-1), "n_independent"),
    (dict(n_parents=0), "n_parents"),
    (dict(noise=-1.0), "noise"),
    (dict(magnitude="gaussian"), "magnitude must be one of"),
])
def test_hierarchy_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hierarchical_sparse_data(10, **kwargs)


def _by_hand(data: HierarchicalData, absorb: bool):
    """The true dictionary (one latent per feature, firing with it), or the absorbed one:
    each child latent writes (parent + child)/√2 and the parent latent fires only where no
    child of it does."""
    W = data.features.clone()
    active = data.codes > 0
    if absorb:
        for p, c in data.pairs():
            W[c] = (data.features[p] + data.features[c]) / math.sqrt(2)
            active[:, p] &= ~active[:, c]
    return W, active


def test_absorption_score_is_zero_for_the_true_dictionary_and_one_for_the_absorbed():
    data = hierarchical_sparse_data(5000, seed=2)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))  # latents in another order
    W, active = _by_hand(data, absorb=False)
    assert torch.equal(matched_latents(W[perm], data.features)[perm], torch.arange(20))
    clean = absorption_scores(W[perm], active[:, perm], data)
    assert clean.absorption == 0 and clean.parent_missed == 0
    assert abs(clean.child_parent_cos) < 1e-5
    W, active = _by_hand(data, absorb=True)
    absorbed = absorption_scores(W, active, data)
    assert absorbed.absorption == 1 and absorbed.parent_missed == 1
    assert absorbed.child_parent_cos == pytest.approx(1 / math.sqrt(2), abs=1e-5)
    assert [r["parent latent"] for r in absorbed.per_pair] == [p for p, _ in data.pairs()]
    assert all(r["tokens"] > 50 for r in absorbed.per_pair)
    with pytest.raises(ValueError, match=r"active must be a bool \[n, d_dict\] = \[5000, 20\]"):
        absorption_scores(W, active[:100], data)
    with pytest.raises(ValueError, match="W_dec must be"):
        absorption_scores(W[:, :5], active, data)


@pytest.fixture(scope="module")
def hierarchy():
    train, test = split_rows(hierarchical_sparse_data(8192 + 4096, seed=0), 8192)
    rows = hierarchy_benchmark(train, test, ("batchtopk", "matryoshka_batchtopk", "snmf"), seeds=(0, 1), **FIT)
    return rows, {r["kind"]: r for r in mean_over_seeds(rows)}


def test_matryoshka_batchtopk_absorbs_less_than_batchtopk(hierarchy):
    """The published direction (Nabeshima 2024; Bussmann et al. 2025) on their toy.
    Measured at these settings, seeds 0 and 1: absorption 0.56 and 0.67 (BatchTopK)
    against 0 and 0.33 (Matryoshka BatchTopK, default groups [10, 10]); the child latents'
    cosine with their parent 0.50/0.48 against -0.05/0.24. Per seed it is noisy (nine
    pairs, each absorbed or not): seed 2 gives 0.56 for both, hence two seeds and a margin
    of half the measured gap."""
    rows, mean = hierarchy
    b, m = mean["batchtopk"], mean["matryoshka_batchtopk"]
    assert b["seeds"] == m["seeds"] == 2
    assert m["absorption"] < b["absorption"] - 0.2, (m, b)
    assert m["child-parent cos"] < b["child-parent cos"] - 0.2, (m, b)
    assert b["absorption"] > 0.3  # the toy does make BatchTopK absorb
    for r in rows:
        assert 0.9 <= r["L0"] <= 1.1 or r["kind"] == "snmf", r  # k = round(1.12) = 1
    assert all("group_sizes=[10, 10]" in r["settings"] for r in rows if r["kind"] == "matryoshka_batchtopk")


def test_snmf_hierarchy_finds_the_parents_at_level_two(hierarchy):
    """SNMF's level 1 absorbs (nothing in semi-NMF asks for pure children: measured
    absorption 0.65 and 0.78), and so its level 2, the common part of the level-1
    features, recovers the parent directions (measured MMCS 0.83 and 0.78; random
    directions: 0.43) with most children linked under their parent (0.67 and 0.78)."""
    _, mean = hierarchy
    s = mean["snmf"]
    chance = chance_mmcs(11, 3, 20)
    assert s["level-2 parent MMCS"] > chance + 0.15, (s, chance)
    assert s["children under parent"] >= 0.5, s
    assert s["FVU"] < 1e-6  # 20 features for rank-20 data: an exact factorisation
    assert s["absorption"] > mean["matryoshka_batchtopk"]["absorption"], s
