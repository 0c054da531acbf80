"""Recursive SNMF: levels, the parent/child tree, neuron overlap."""

import pytest
import torch

import saekit
from saekit.hierarchy import fit_hierarchy, neuron_overlap, tree_edges


def clustered(n=4000, d=60, groups=3, per=4, seed=0):
    """Children in ``groups`` families: each child direction is its family's direction
    plus its own; tokens use a few children at a time. Returns ``(A, family directions)``."""
    g = torch.Generator().manual_seed(seed)
    parents = torch.randn(groups, d, generator=g)
    kids = parents.repeat_interleave(per, 0) + 0.6 * torch.randn(groups * per, d, generator=g)
    kids = kids / kids.norm(dim=1, keepdim=True)
    on = torch.rand(n, groups * per, generator=g) < 0.12
    codes = on * torch.rand(n, groups * per, generator=g)
    return codes @ kids, parents


def test_children_of_one_family_share_a_parent():
    A, parents = clustered()
    H = fit_hierarchy(A, [12, 3], wta_fraction=1.0, max_iter=80, seed=1)
    assert [d.cfg.d_dict for d in H.levels] == [12, 3] and H.links[0].shape == (12, 3)
    assert H.links[0].min() >= 0
    # The family of each level-0 feature (the planted family direction it is closest
    # to) against its strongest level-1 parent. Measured: 10 of 12 features sit under
    # their family's majority parent, and the three families get three parents.
    family = (H.levels[0].W_dec @ (parents / parents.norm(dim=1, keepdim=True)).T).argmax(1)
    parent = H.links[0].argmax(1)
    majority = [int(parent[family == f].mode().values) for f in range(3)]
    agree = sum(int((parent[family == f] == majority[f]).sum()) for f in range(3))
    assert len(set(majority)) == 3 and agree >= 9, (family, parent)
    leaves = {i for p in range(3) for i in H.leaves(1, p)}
    assert leaves <= set(range(12)) and len(leaves) >= 6  # measured 7: at most 4 children each


def test_tree_edges_thresholds_and_neuron_overlap():
    link = torch.tensor([[1.0, 0.0], [0.1, 0.0], [0.5, 0.0], [0.2, 0.0], [0.3, 2.0], [0.16, 0.0]])
    edges = tree_edges(link, level=0)
    assert [(c, p) for _, c, p, _ in edges] == [(0, 0), (2, 0), (4, 0), (3, 0), (4, 1)]  # ≥ 0.15·max, ≤ 4
    A, _ = clustered(n=1500)
    d = saekit.fit(A, kind="snmf", d_dict=6, wta_fraction=0.1, max_iter=10)
    M = neuron_overlap(d)
    assert torch.equal(M, M.T) and torch.equal(M.diagonal(), d.neurons_per_feature())
    with pytest.raises(ValueError, match="decreasing"):
        fit_hierarchy(A, [4, 8])


@pytest.mark.xfail(strict=True, reason=(
    "The natural check of the issue does not hold on the demo LM. Measured 2026-11-21 (2-core CPU) "
    "with this test's settings (blocks.1.mlp.hook_post, 32k tokens, ranks [128, 16], k = 8, "
    "wta_fraction 0.05, 30 passes): one level-0 feature (16) is the best for both weekday "
    "(F1 0.24) and weekend tokens (F1 0.18), and it sits under no level-1 feature. A larger "
    "run (ranks [256, 32, 8], k = 8, 64k tokens, 6 minutes) split them (F1 0.40 and 0.52) "
    "but gave the two no common parent."))
def test_weekday_and_weekend_features_share_a_parent_on_the_demo_lm(demo_model):
    from saekit.data import concept_groups, concept_labels

    hook = "blocks.1.mlp.hook_post"
    tokens = saekit.load_tokens("demo", demo_model, n_tokens=32768, seed=3)
    acts = saekit.harvest(demo_model, [hook], tokens, batch_size=32)[hook]
    labels = concept_labels(tokens, demo_model, level="group")[saekit.token_mask(tokens, demo_model)]
    H = fit_hierarchy(acts, [128, 16], k=8, wta_fraction=0.05, max_iter=30, hook=hook)
    active = H.levels[0].active(H.levels[0].encode(acts))
    best = {}
    for group in ("weekday", "weekend"):
        pos = labels == concept_groups().index(("day", group))
        f1 = 2 * (active & pos[:, None]).sum(0) / (active.sum(0) + pos.sum()).clamp_min(1)
        best[group] = (int(f1.argmax()), float(f1.max()))
    (wd, f_wd), (we, f_we) = best["weekday"], best["weekend"]
    parents = {c: {p for lv, ch, p, _ in H.edges if lv == 0 and ch == c} for c in (wd, we)}
    assert wd != we and min(f_wd, f_we) > 0.3, best
    assert parents[wd] & parents[we], parents
