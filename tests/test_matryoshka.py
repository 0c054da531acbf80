"""Matryoshka SAEs (``matryoshka_batchtopk``, ``matryoshka_topk``): the nested loss, the
default groups, SAELens' layout, and what the nesting buys on data with a hierarchy."""

import json

import pytest
import torch

import saekit
from saekit import formats
from saekit.dictionaries import REGISTRY, DictionaryConfig
from saekit.dictionaries.matryoshka import default_group_sizes
from saekit.ground_truth import synthetic_sparse_data
from saekit.metrics import fvu

KINDS = ("matryoshka_batchtopk", "matryoshka_topk")


def make(kind, d_in=8, d_dict=32, k=3, **options):
    cfg = DictionaryConfig(kind=kind, d_in=d_in, d_dict=d_dict, k=k, hook="blocks.0.hook_resid_pre",
                           model="demo", options=options)
    sae = REGISTRY[kind](cfg)
    sae.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        if hasattr(sae, "threshold"):
            sae.threshold.fill_(0.05)
    return sae


def test_default_groups_double_and_keep_room_for_k():
    assert default_group_sizes(1024, 8) == [64, 64, 128, 256, 512]  # widths d/16 .. d
    assert sum(default_group_sizes(16384, 64)) == 16384
    assert default_group_sizes(128, 16) == [32, 32, 64]  # prefixes under 2k latents dropped
    assert default_group_sizes(16, 8) == [16]  # too small to nest: one group


@pytest.mark.parametrize("kind", KINDS)
def test_loss_is_the_mean_of_the_prefix_reconstructions(kind):
    sae = make(kind, group_sizes=[4, 12, 16])
    assert sae.widths == [4, 16, 32]
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(2))
    out = sae.train_step(x, step=0)
    codes = sae.batch_codes(sae.pre_acts(x), 0) if kind == "matryoshka_batchtopk" else \
        REGISTRY["topk"].encode(sae, x)
    levels = [(x - codes[:, :w] @ sae.W_dec[:w] - sae.b_dec).pow(2).sum(-1).mean() for w in (4, 16, 32)]
    torch.testing.assert_close(out.loss, torch.stack(levels).mean())  # no dead latents: no AuxK
    torch.testing.assert_close(out.terms["mse"], levels[-1])  # what FVU is logged from: the full width
    torch.testing.assert_close(out.terms["first_level_mse"], levels[0])
    out.loss.backward()
    assert sae.W_dec.grad[:4].abs().sum() > 0


def test_bad_group_sizes_name_the_option():
    with pytest.raises(ValueError, match=r"group_sizes \[8, 8\] sums to 16, but d_dict is 32"):
        make("matryoshka_topk", group_sizes=[8, 8])
    with pytest.raises(ValueError, match="group_sizes"):
        make("matryoshka_topk", group_sizes=[0, 32])
    with pytest.raises(ValueError, match="group_sizes"):
        saekit.fit(torch.randn(100, 8), "matryoshka_batchtopk", d_dict=32, k=2, group_sizes="16,16")


@pytest.mark.parametrize("kind", KINDS)
def test_saelens_layout_round_trips_with_the_widths(kind, tmp_path):
    sae = make(kind, group_sizes=[8, 8, 16])
    out = formats.export(sae, tmp_path / "sl", to="saelens")
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == ("jumprelu" if kind == "matryoshka_batchtopk" else "topk")
    assert cfg["metadata"]["training_architecture"] == kind
    assert cfg["metadata"]["training_architecture_details"] == {"k": 3, "matryoshka_widths": [8, 16, 32]}
    back = saekit.load_dictionary(out)
    assert back.cfg.kind == kind and back.cfg.options["group_sizes"] == [8, 8, 16]
    x = torch.randn(16, 8)
    with torch.no_grad():
        torch.testing.assert_close(back(x), sae(x))
    saved = sae.save(tmp_path / "native")
    assert saekit.load_dictionary(saved).cfg.options["group_sizes"] == [8, 8, 16]


@pytest.mark.timeout(240)
def test_first_prefix_reconstructs_alone_where_plain_batchtopk_does_not():
    """What the nesting is for: the first group must explain the data by itself. Plain
    BatchTopK spreads the frequent features over the whole dictionary, so its first
    eighth reconstructs much worse."""
    data = synthetic_sparse_data(60_000, d_in=32, n_features=128, p_active=3 / 128, feature_probs="zipf",
                                 zipf_exponent=1.0, noise=0.01, seed=3)
    x, test = data.x[:50_000], data.x[50_000:]
    fvu_first = {}
    for kind in ("batchtopk", "matryoshka_batchtopk"):
        sae = saekit.fit(x, kind, d_dict=128, k=3, **({"group_sizes": [16, 16, 32, 64]} if "matry" in kind else {}))
        with torch.no_grad():
            codes = sae.encode(test)
            first = codes[:, :16] @ sae.W_dec[:16] + sae.b_dec
        fvu_first[kind] = fvu(test, first)
        with torch.no_grad():
            assert 2.5 <= sae.active(codes).sum(1).float().mean().item() <= 3.5
    assert fvu_first["matryoshka_batchtopk"] < 0.8 * fvu_first["batchtopk"], fvu_first
