"""saekit.evals.layers (``saekit eval layers``): the streaming co-activation statistics
against a one-shot computation, a dictionary against itself, the shipped SAE against the
shipped SNMF, two quickly trained dictionaries on adjacent layers, bounded memory, the
recipes and the errors."""

import math

import numpy as np
import pytest
import torch
from conftest import DEMO_LM, ROOT

import saekit
from saekit.config import load_config
from saekit.evals import matching as mt

TOPK, SNMF = str(ROOT / "checkpoints" / "demo-topk"), str(ROOT / "checkpoints" / "demo-snmf")
ADJACENT = ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]


def _cfg(**kw):
    return mt.Config(model=str(DEMO_LM), **kw)


def test_streaming_statistics_equal_the_one_shot_ones():
    """Uneven batches, a large code offset (cancellation), a dead feature on each side."""
    g = torch.Generator().manual_seed(0)
    n, d_a, d_b = 3000, 7, 5
    a = torch.rand(n, d_a, generator=g) * (torch.rand(n, d_a, generator=g) < 0.3)
    b = torch.rand(n, d_b, generator=g) * (torch.rand(n, d_b, generator=g) < 0.4)
    b[:, 0] = a[:, 0] * 2  # fires exactly with a_0: Pearson 1, Jaccard 1
    a[:, 1] += 1e4  # always on, huge mean: E[ab] − E[a]E[b] would cancel in raw sums
    a[:, 6], b[:, 4] = 0, 0  # dead
    stats = mt.CoActivation(d_a, d_b)
    for lo, hi in ((0, 1), (1, 1000), (1000, 1000), (1000, 3000)):
        stats.update(a[lo:hi], b[lo:hi], a[lo:hi] > 0, b[lo:hi] > 0)
    assert stats.n_tokens == n

    with np.errstate(invalid="ignore"):  # the dead columns
        ref = np.corrcoef(np.concatenate([a.double().numpy(), b.double().numpy()], axis=1).T)[:d_a, d_a:]
    r = stats.pearson().numpy()
    live = np.ones((d_a, d_b), bool)
    live[6, :], live[:, 4] = False, False
    np.testing.assert_allclose(r[live], ref[live], atol=1e-9)
    assert np.isnan(r[~live]).all()
    assert r[0, 0] == pytest.approx(1.0, abs=1e-12)

    fa, fb = (a > 0).double(), (b > 0).double()
    both = fa.T @ fb
    either = fa.sum(0)[:, None] + fb.sum(0)[None, :] - both
    np.testing.assert_allclose(stats.jaccard()[:6, :4], (both / either)[:6, :4], atol=1e-12)
    np.testing.assert_allclose(stats.sufficiency()[:6], (both / fa.sum(0)[:, None])[:6], atol=1e-12)
    np.testing.assert_allclose(stats.necessity()[:, :4], (both / fb.sum(0)[None, :])[:, :4], atol=1e-12)
    assert torch.isnan(stats.sufficiency()[6]).all() and torch.isnan(stats.necessity()[:, 4]).all()

    best = mt.best_matches(stats, row_chunk=2)  # chunked finalisation = whole
    assert best.partner[0] == 0 and best.jaccard[0] == 1.0 and best.partner[6] == -1
    assert math.isnan(best.pearson[6]) and math.isnan(best.backward_pearson[4])
    np.testing.assert_allclose(best.pearson[:6], np.nanmax(ref[:6, :4], axis=1), atol=1e-9)
    np.testing.assert_allclose(best.backward_pearson[:4], np.nanmax(ref[:6, :4], axis=0), atol=1e-9)

    with pytest.raises(ValueError, match="rows must pair up"):
        stats.update(a[:3], b[:4], a[:3] > 0, b[:4] > 0)
    with pytest.raises(ValueError, match=r"codes_b and active_b must be \[n, 5\]"):
        stats.update(a[:3], a[:3], a[:3] > 0, a[:3] > 0)


def test_a_dictionary_against_itself_passes_through_entirely(demo_model, tmp_path):
    r = mt.run(_cfg(dictionaries=[TOPK, TOPK], n_tokens=2048), model=demo_model)
    s = r.summary
    assert s["pass_through_fraction"] == 1.0 and s["pass_through_fraction_backward"] == 1.0
    assert s["mean_best_pearson"] == pytest.approx(1.0, abs=1e-9)
    assert s["mean_jaccard_of_best"] == 1.0
    assert s["mean_sufficiency_of_best"] == 1.0 and s["mean_necessity_of_best"] == 1.0
    live = [row for row in r.rows if row["firing_frequency"] > 0]
    assert len(r.rows) == 1024 and len(live) > 800
    assert all(row["partner"] == row["feature"] and row["passes_through"] for row in live)

    out = r.save(tmp_path / "layers")
    assert {"layers.csv", "layers.json", "layers.png", "report.md", "index.html"} <= {p.name for p in out.iterdir()}


def test_shipped_sae_against_shipped_snmf_gives_sensible_values(demo_model):
    """demo-topk (1,024 features) vs demo-snmf (128) on blocks.2.mlp.hook_post. Measured
    on 8,029 tokens (2026-11-21): mean best Pearson 0.47 (SAE → SNMF) and 0.69
    (SNMF → SAE), pass-through 4% and 16%, no dead features."""
    r = mt.run(_cfg(dictionaries=[TOPK, SNMF], n_tokens=4096), model=demo_model)
    s = r.summary
    assert r.config["hooks"] == ["blocks.2.mlp.hook_post"] * 2 and r.config["d_dict"] == [1024, 128]
    # the two share structure (far above unrelated sparse codes, ~0.05) but are not the same
    assert 0.3 < s["mean_best_pearson"] < 0.8, s
    # each coarse SNMF feature has a closer SAE counterpart than the average SAE feature has
    assert s["mean_best_pearson_backward"] > s["mean_best_pearson"], s
    # ... by more than the standard errors over features
    assert s["mean_best_pearson_backward"] - s["mean_best_pearson"] > 2 * (
        s["mean_best_pearson_se"] + s["mean_best_pearson_backward_se"]), s
    assert 0 <= s["pass_through_fraction"] < 0.5 and 0 < s["pass_through_fraction_backward"] < 1, s
    for row in r.rows:
        if row["partner"] < 0:
            continue
        assert 0 <= row["partner"] < 128 and -1 <= row["pearson"] <= 1
        assert 0 <= row["jaccard"] <= min(row["sufficiency"], row["necessity"]) + 1e-12 <= 1 + 1e-12
        assert row["jaccard"] <= row["max_jaccard"] + 1e-12
        assert row["passes_through"] == (row["pearson"] >= 0.95)


def test_two_dictionaries_on_adjacent_layers(demo_model, demo_tokens):
    """Two TopK SAEs trained in seconds on the residual stream after blocks 1 and 2: their
    codes co-vary far above a token-shuffled control, and every measure lies in (0, 1)."""
    acts = saekit.harvest(demo_model, ADJACENT, demo_tokens, batch_size=16)
    fit = dict(d_dict=128, k=8, batch_size=128, lr=2e-3, seed=0, model=demo_model)
    sae1, sae2 = (saekit.fit(acts[h], "topk", hook=h, **fit) for h in ADJACENT)
    r = mt.run(_cfg(n_tokens=4096), model=demo_model, dictionaries=[sae1, sae2])
    s = r.summary
    assert r.config["layers"] == [1, 2]
    for key in ("mean_best_pearson", "mean_best_pearson_backward", "mean_jaccard_of_best",
                "mean_sufficiency_of_best", "mean_necessity_of_best"):
        assert 0 < s[key] < 1, (key, s)
    assert 0 <= s["pass_through_fraction"] < 1, s

    # the same statistics with layer-2 codes of other tokens: what chance alignment reaches
    held = saekit.load_tokens("demo:heldout", demo_model, n_tokens=4096)
    x = saekit.harvest(demo_model, ADJACENT, held, batch_size=16)
    with torch.no_grad():
        c1, c2 = sae1.encode(x[ADJACENT[0]]), sae2.encode(x[ADJACENT[1]])
    aligned = mt.CoActivation(128, 128).update(c1, c2, sae1.active(c1), sae2.active(c2))
    perm = torch.randperm(len(c2), generator=torch.Generator().manual_seed(0))
    shuffled = mt.CoActivation(128, 128).update(c1, c2[perm], sae1.active(c1), sae2.active(c2[perm]))
    on, off = (np.nanmean(mt.best_matches(st).pearson.numpy()) for st in (aligned, shuffled))
    assert on == pytest.approx(s["mean_best_pearson"], abs=1e-9)  # run() streams the same numbers
    assert off < 0.15 and on > 2 * off, (on, off)


def test_memory_stays_bounded_by_a_chunk_of_codes(demo_model, demo_tokens, monkeypatch):
    """Codes are never held for all tokens: each encode sees one chunk (forwards of 4
    windows gathered until 2,048 tokens), and a dictionary compared with itself encodes once."""
    from saekit.dictionaries import REGISTRY, DictionaryConfig

    full = saekit.load_dictionary(TOPK)
    topk = REGISTRY["topk"](DictionaryConfig(kind="topk", d_in=512, d_dict=64, k=4, hook=full.cfg.hook))
    with torch.no_grad():  # 64 of the shipped features: the [64, 64] statistics cost nothing
        for name in ("W_dec", "enc_weight", "b_enc"):
            getattr(topk, name).copy_(getattr(full, name)[:64])
        topk.b_dec.copy_(full.b_dec)
    seen = []
    original = type(topk).encode

    def encode(self, x):
        seen.append(len(x))
        return original(self, x)

    monkeypatch.setattr(type(topk), "encode", encode)
    stats = mt.co_activation(demo_model, topk, topk, demo_tokens, batch_size=4, chunk_tokens=2048)
    assert sum(seen) == stats.n_tokens == int(saekit.token_mask(demo_tokens, demo_model).sum())
    assert len(seen) == 3 and all(2048 <= n < 2048 + 4 * 127 for n in seen[:-1]), seen


@pytest.mark.parametrize("recipe", ["layers_demo.toml", "layers_gpt2.toml"])
def test_recipes_load_into_the_config(recipe):
    from saekit.formats.registry import resolve
    from saekit.models import hook_layer

    cfg = load_config(ROOT / "eval" / recipe, cls=mt.Config)
    assert len(cfg.dictionaries) == 2 and cfg.pass_through_threshold == 0.95
    if "gpt2" in recipe:  # the paper: res-jb SAEs on adjacent layers, 10M tokens of pile-10k
        a, b = (resolve(d) for d in cfg.dictionaries)
        assert a["release"] == b["release"] == "gpt2-small-res-jb" and a["model"] == cfg.model == "gpt2"
        assert hook_layer(b["hook"]) == hook_layer(a["hook"]) + 1
        assert (cfg.data, cfg.n_tokens, cfg.ctx_len, cfg.batch_size) == ("NeelNanda/pile-10k", 10_000_000, 128, 32)
    else:
        assert [saekit.load_dictionary(ROOT / d).cfg.hook for d in cfg.dictionaries] == ["blocks.2.mlp.hook_post"] * 2


@pytest.mark.parametrize("kw, message", [
    (dict(dictionaries=[TOPK]), "exactly two dictionaries"),
    (dict(dictionaries=[TOPK, SNMF], hook="blocks.1.mlp.hook_post"), "but Config.hook is 'blocks.1.mlp.hook_post'"),
    (dict(dictionaries=[TOPK, SNMF], pass_through_threshold=1.5), "pass_through_threshold must be in"),
])
def test_bad_settings_name_the_field(demo_model, kw, message):
    with pytest.raises(ValueError, match=message):
        mt.run(_cfg(n_tokens=256, **kw), model=demo_model)


def test_a_dictionary_on_the_wrong_width_is_refused(demo_model):
    topk = saekit.load_dictionary(TOPK)
    topk.cfg.hook = "blocks.2.hook_resid_post"  # d_model 128, the dictionary has d_in 512
    with pytest.raises(ValueError, match="d_in=512, but hook 'blocks.2.hook_resid_post' has width 128"):
        mt.run(_cfg(n_tokens=256), model=demo_model, dictionaries=[topk, topk])
