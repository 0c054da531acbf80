"""Auto-interp: the feature store, offline describers, PRISM clusters and scorers, on the
demo LM with the shipped dictionaries (real model, real embedder, real files)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

import saekit
from saekit.interp import describe, prism, score
from saekit.interp.store import FeatureStore, collect
from saekit.tokenization import token_strings

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def topk():
    return saekit.load_dictionary(ROOT / "checkpoints" / "demo-topk")


@pytest.fixture(scope="module")
def small_tokens(demo_model):
    return saekit.load_tokens("demo", demo_model, n_tokens=24 * 64, ctx_len=64, seed=11)


@pytest.fixture(scope="module")
def vocab(demo_model):
    return token_strings(demo_model)


def dense_codes(model, d, tokens):
    """Brute force: the active codes of every token, [n_windows, T, d_dict], 0 where masked."""
    mask = saekit.token_mask(tokens, model)
    x = saekit.harvest(model, [d.cfg.hook], tokens)[d.cfg.hook]
    with torch.no_grad():
        c = d.encode(x)
        c = torch.where(d.active(c), c, torch.zeros_like(c))
    dense = torch.zeros(*tokens.shape, d.cfg.d_dict)
    dense[mask] = c
    return dense, mask


def test_store_matches_brute_force(demo_model, topk, small_tokens, tmp_path):
    dense, mask = dense_codes(demo_model, topk, small_tokens)
    store = collect(demo_model, topk, small_tokens, top_k=5, n_samples=4, batch_size=7, out=tmp_path / "s")
    assert store.complete and store.n_tokens == int(mask.sum())
    flat = dense[mask]
    torch.testing.assert_close(store.count(), (flat > 0).sum(0))
    torch.testing.assert_close(store.max(), flat.max(0).values)
    torch.testing.assert_close(store.mean(), (flat.sum(0).double() / (flat > 0).sum(0).clamp(min=1)), rtol=1e-5,
                               atol=1e-6)
    assert int(store.t["hist"].sum()) == int((flat > 0).sum())
    wmax = dense.amax(dim=1)                                    # [W, F]
    loaded = FeatureStore.load(tmp_path / "s")
    for f in store.count().argsort(descending=True)[:8].tolist() + [int(store.count().argmin())]:
        ex = loaded.examples(f)
        want = wmax[:, f].topk(5)
        want_n = int((want.values > 0).sum())
        assert len(ex) == want_n
        assert [e.max for e in ex] == pytest.approx(want.values[:want_n].tolist())
        for e in ex:
            ctx = dense[e.window, e.start:e.start + len(e.tokens), f]
            assert e.acts == pytest.approx(ctx.half().float().tolist())
            assert e.tokens == small_tokens[e.window, e.start:e.start + len(e.tokens)].tolist()
            assert max(e.acts) == pytest.approx(e.max, rel=1e-3)  # the context holds the maximum
        fired = set((wmax[:, f] > 0).nonzero().squeeze(1).tolist())
        samples = loaded.samples(f)
        assert len(samples) == min(4, len(fired)) and {e.window for e in samples} <= fired
        ids, count, total, mx = loaded.token_stats(f)
        on = flat[:, f] > 0
        tok = small_tokens[mask][on]
        assert sorted(ids.tolist()) == sorted(set(tok.tolist()))
        for i, c, s, m in zip(ids, count, total, mx, strict=True):
            vals = flat[on, f][tok == i]
            assert int(c) == len(vals) and float(s) == pytest.approx(float(vals.sum()), rel=1e-4)
            assert float(m) == pytest.approx(float(vals.max()))
    bos, _ = saekit.data.special_ids(demo_model)
    assert int(loaded.token_counts()[bos]) == 0  # BOS/separators never counted


def test_store_resumes_exactly_after_an_interruption(demo_model, topk, small_tokens, tmp_path):
    full = collect(demo_model, topk, small_tokens, top_k=4, n_samples=6, batch_size=4, seed=3)

    def interrupt(done: int) -> None:
        if done >= 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect(demo_model, topk, small_tokens, top_k=4, n_samples=6, batch_size=4, seed=3,
                out=tmp_path / "s", checkpoint_every=1, on_batch=interrupt)
    partial = FeatureStore.load(tmp_path / "s")
    assert not partial.complete and partial.manifest["next_window"] == 12
    seen = []
    resumed = collect(demo_model, topk, small_tokens, top_k=4, n_samples=6, batch_size=4, seed=3,
                      out=tmp_path / "s", on_batch=seen.append)
    assert seen[0] == 16, "the resumed pass must start after the saved windows"
    assert resumed.complete and resumed.n_tokens == full.n_tokens
    for key in ("count", "sum", "max", "hist", "windows", "token_count", "tok_key", "tok_count", "top_val",
                "top_win", "top_pos", "smp_val", "smp_win"):
        torch.testing.assert_close(resumed.t[key], full.t[key], msg=key)
    torch.testing.assert_close(resumed._context("top"), full._context("top"))
    # Different arguments never continue someone else's pass.
    other = collect(demo_model, topk, small_tokens, top_k=4, n_samples=6, batch_size=4, seed=4,
                    out=tmp_path / "s", on_batch=seen.append)
    assert seen[-len(range(0, 24, 4))] == 4 and other.complete
    again: list[int] = []  # the same finished pass is read back, not run again
    same = collect(demo_model, topk, small_tokens, top_k=4, n_samples=6, batch_size=4, seed=4,
                   out=tmp_path / "s", on_batch=again.append)
    assert again == [] and torch.equal(same.t["top_win"], other.t["top_win"])


def test_store_rejects_bad_files(demo_model, topk, small_tokens, tmp_path):
    collect(demo_model, topk, small_tokens[:4], top_k=2, n_samples=2, out=tmp_path / "s")
    data = (tmp_path / "s" / "store.safetensors").read_bytes()
    (tmp_path / "s" / "store.safetensors").write_bytes(data[:-100])
    with pytest.raises(ValueError, match=r"store\.safetensors.*sha256"):
        FeatureStore.load(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest\.json.*invalid JSON"):
        FeatureStore.load(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="not a feature store"):
        FeatureStore.load(tmp_path)
    with pytest.raises(ValueError, match="features must be indices"):
        collect(demo_model, topk, small_tokens, features=[5, 1024])
    with pytest.raises(ValueError, match="integer tensor"):
        collect(demo_model, topk, small_tokens.float())


def test_cosy_statistics_match_their_definitions():
    concept, control = [3.0, 1.0, 0.0, 2.0], [0.0, 1.0, 0.0, 0.5, 0.0]
    pairs = [(a, b) for a in concept for b in control]
    want_auc = sum((a > b) + 0.5 * (a == b) for a, b in pairs) / len(pairs)
    s = score.cosy(concept, control)
    assert s.auc == pytest.approx(want_auc)
    sd = torch.tensor(control).std().item()
    assert s.mad == pytest.approx((sum(concept) / 4 - sum(control) / 5) / sd)
    assert 0 < s.p < 0.5 and s.u == pytest.approx(want_auc * 20)
    silent = score.cosy([1.0, 2.0], [0.0, 0.0, 0.0])
    assert silent.auc == 1.0 and math.isnan(silent.mad)   # std0 = 0: undefined, not 0
    assert score.cosy([0.0], [0.0, 0.0]).auc == 0.5
    with pytest.raises(ValueError, match="control"):
        score.cosy([1.0], [0.0])


def test_polysemanticity():
    same = prism.polysemanticity(["days of the week", "days of the week"])
    mixed = prism.polysemanticity(["days of the week", "Python file handling functions"])
    assert same == pytest.approx(1.0, abs=1e-5) and mixed < 0.5
    assert prism.polysemanticity(["one"]) is None


def test_minilm_weights_are_checked(tmp_path):
    good = prism.minilm_path()
    assert prism.verified_minilm(good) == good
    bad = tmp_path / "minilm"
    shutil.copytree(good, bad)
    with open(bad / "model.safetensors", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match=r"model\.safetensors: sha256 .* differs"):
        prism.verified_minilm(bad)


def concept_features(model, d, tokens) -> dict[str, int]:
    """The feature with the best F1 for each planted concept family on ``tokens``."""
    from saekit.compare import ConceptCounts
    from saekit.data import FAMILIES, concept_labels

    dense, mask = dense_codes(model, d, tokens)
    counts = ConceptCounts(d.cfg.d_dict, len(FAMILIES))
    counts.update(dense[mask] > 0, concept_labels(tokens, model)[mask])
    f1 = counts.scores()["f1"]
    return {fam: int(f1[:, i].argmax()) for i, fam in enumerate(FAMILIES)}


@pytest.fixture(scope="module")
def concept_run(demo_model, topk, vocab):
    """The demo SAE's best feature for each planted concept family (F1 on the describing
    tokens), described from one store and scored on held-out demo text."""
    from saekit.data import CONCEPTS, FAMILIES

    tokens = saekit.load_tokens("demo", demo_model, n_tokens=160 * 128, seed=5)
    best = concept_features(demo_model, topk, tokens)
    store = collect(demo_model, topk, tokens, features=sorted(set(best.values())), top_k=50, n_samples=50)
    desc = describe.describe(store, vocab, model=demo_model, dictionary=topk)
    held = saekit.load_tokens("demo:heldout", demo_model, n_tokens=200 * 128, seed=0)
    corpus = score.scoring_corpus(demo_model, topk, held, store.features, vocab)
    scored = score.score_descriptions(corpus, {f: [("offline", desc[f]["text"])] for f in store.features})
    words = {fam: {w for g in CONCEPTS[fam].values() for w in g} for fam in FAMILIES}
    return best, desc, scored, words, store


def test_offline_descriptions_name_the_planted_concepts(concept_run):
    best, desc, _, words, _ = concept_run
    named = {fam: [t["token"].strip() for t in desc[f]["top_tokens"][:4]] for fam, f in best.items()}
    hits = {fam: len(set(named[fam]) & words[fam]) for fam in best}
    # Every family's best feature names at least two of the family's words among its
    # four top tokens, and the template shows them.
    assert all(h >= 2 for h in hits.values()), (hits, named)
    for fam, f in best.items():
        assert desc[f]["text"].startswith("tokens: ")
        assert any(w in desc[f]["text"] for w in words[fam])


def test_cosy_separates_real_from_random_descriptions(concept_run):
    best, _, scored, _, _ = concept_run
    s = {fam: scored[f][0]["scores"] for fam, f in best.items()}
    real = [v["cosy_auc"] for v in s.values()]
    rand = [v["random_cosy_auc"] for v in s.values()]
    assert all(v["cosy_auc"] > v["random_cosy_auc"] for v in s.values()), s
    assert sum(real) / len(real) > 0.65 and sum(rand) / len(rand) < 0.56, (real, rand)
    assert all(v["cosy_p"] < 0.05 for v in s.values())
    emb = [v["embedding_auroc"] for v in s.values()]
    emb_rand = [v["random_embedding_auroc"] for v in s.values()]
    assert sum(emb) / len(emb) > sum(emb_rand) / len(emb_rand) + 0.1, (emb, emb_rand)


def test_prism_clusters_and_logit_lens(concept_run, vocab):
    best, desc, _, words, store = concept_run
    f = best["city"]
    cl = prism.clusters(store, [f], vocab, max_windows=12)[f]
    assert 1 <= len(cl) <= 5 and sum(len(c.examples) for c in cl) == len(prism.band(store, f, max_windows=12))
    assert all(any(w in c.label for w in words["city"]) for c in cl), [c.label for c in cl]
    assert cl == sorted(cl, key=lambda c: -c.mean_act)
    lens = desc[f]["logit_lens"]
    assert len(lens["promoted"]) == 20 and lens["promoted"][0]["value"] > lens["suppressed"][0]["value"]
    assert all(store.token_counts()[vocab.index(t["token"])] > 0 for t in lens["promoted"][:5])
