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


@pytest.mark.timeout(240)
def test_tpp_ablating_a_concepts_features_breaks_its_probe_more_than_the_others(demo_model):
    """SAEBench's TPP on the planted families: removing the 20 demo-SAE features with the
    largest effect on a family's probe costs that probe far more accuracy than the other
    families' probes; 20 random features of the same SAE cost nothing."""
    from saekit.evals.tpp import Config as TPPConfig

    r = run("tpp", TPPConfig(n_tokens=16384, dictionaries=["checkpoints/demo-topk"], n_features=[1, 20]),
            model=demo_model)
    s = r.summary
    assert s["clean_accuracy"] > 0.97
    assert s["demo-topk@20"] > 0.2 and s["demo-topk@20"] > s["demo-topk/random@20"] + 0.2, s
    assert s["demo-topk@20"] >= s["demo-topk@1"], s
    assert {row["n"] for row in r.rows} == {1, 20} and len(r.rows) == 7 * 2 * 2


def test_absorption_counts_a_specific_feature_that_carries_the_concept_when_the_main_one_is_silent():
    from saekit.evals.absorption import absorbed_tokens

    p = torch.tensor([1.0, 0.0, 0.0])  # the concept's direction
    directions = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0], [0.8, 0.6, 0], [0, 0, 1.0]]), dim=1)
    # token 0: the main feature fires; token 1: only the specific feature (absorbing);
    # token 2: only an unrelated feature (missed, not absorbed).
    codes = torch.tensor([[1.0, 0, 0], [0, 1.25, 0], [0, 0, 1.0]])
    x = codes @ directions
    missed, absorbed, absorbing = absorbed_tokens(x, codes, codes > 0, directions, torch.tensor([0]), p, 0.1, 0.4)
    assert missed.tolist() == [False, True, True]
    assert absorbed.tolist() == [False, True, False]
    assert absorbing[1].tolist() == [False, True, False]


@pytest.mark.timeout(120)
def test_absorption_runs_on_the_shipped_dictionaries(demo_model):
    from saekit.evals.absorption import Config as AbsorptionConfig

    r = run("absorption", AbsorptionConfig(n_tokens=16384), model=demo_model)
    assert r.summary["concepts"] == 7 and len(r.rows) == 14
    for row in r.rows:
        assert 0 <= row["absorption_rate"] <= row["false_negative_rate"] <= 1


@pytest.mark.timeout(300)
def test_suite_gathers_one_row_per_dictionary_and_writes_saebench_files(demo_model, tmp_path):
    import json

    from saekit.evals import run_eval
    from saekit.evals.suite import Config as SuiteConfig

    cfg = SuiteConfig(dictionaries=["checkpoints/demo-topk", "checkpoints/demo-snmf"], n_tokens=8192,
                      parts=["core", "sparse_probing", "tpp", "absorption"])
    r = run_eval("suite", cfg, tmp_path / "suite", model=demo_model)
    assert [row["dictionary"] for row in r.rows] == ["demo-topk", "demo-snmf"]
    for row in r.rows:
        assert {"fvu", "l0", "ce_recovered_zero", "sparse_probing_top1", "tpp_top20", "absorption_rate"} <= set(row)
        assert 0 < row["fvu"] < 1 and row["ce_recovered_zero"] > 0.3
    assert set(r.tables) == {"core", "sparse_probing", "tpp", "absorption"}
    files = sorted(p.name for p in (tmp_path / "suite" / "saebench").iterdir())
    assert files == sorted(f"{d}_{p}_eval_results.json" for d in ("demo-topk", "demo-snmf")
                           for p in ("core", "sparse_probing", "tpp", "absorption"))
    doc = json.loads((tmp_path / "suite" / "saebench" / "demo-topk_sparse_probing_eval_results.json").read_text())
    assert doc["eval_type_id"] == "sparse_probing" and doc["sae_cfg_dict"]["d_sae"] == 1024
    assert doc["eval_result_metrics"]["saekit"]["sparse_probing_top1"] == r.rows[0]["sparse_probing_top1"]


@pytest.mark.timeout(300)
def test_suite_scores_a_transcoder_where_it_reads_and_writes(demo_model, tmp_path):
    """A transcoder (resid_mid -> mlp_out) gets codes from its input hook and is probed,
    ablated and checked for absorption at its output hook; the parts that perturb one
    hook along decoder rows say they were not run. Measured with 512 latents, k 16 on 32k
    tokens: sparse probing 0.88/0.98 at k 1/5, TPP@20 0.43 against 0.00 for random
    features, absorption 4.5%."""
    import saekit
    from saekit.evals import run_eval
    from saekit.evals.suite import Config as SuiteConfig

    hi, ho = "blocks.2.hook_resid_mid", "blocks.2.hook_mlp_out"
    tokens = saekit.load_tokens("demo", demo_model, 16384, seed=3)
    acts = saekit.harvest(demo_model, [hi, ho], tokens)
    tc = saekit.fit(acts[hi], "topk", d_dict=256, k=16, target=acts[ho], hook=hi, hook_out=ho, model=demo_model,
                    epochs=4, batch_size=256, seed=0)
    tc.save(tmp_path / "tc")
    cfg = SuiteConfig(dictionaries=[str(tmp_path / "tc")], n_tokens=8192,
                      parts=["sparse_probing", "tpp", "absorption", "scr", "sensitivity"])
    r = run_eval("suite", cfg, tmp_path / "suite", model=demo_model)
    (row,) = r.rows
    assert "scr_top20" in row and "scr_top20_random" in row
    assert (row["hook"], row["hook_out"]) == (hi, ho)
    assert row["sparse_probing_top5"] > 0.9 and row["tpp_top20"] > row["tpp_top20_random"] + 0.2, row
    assert 0 <= row["absorption_rate"] <= row["absorption_false_negatives"] <= 1
    # sensitivity perturbs the hook the transcoder writes, along its decoder rows
    assert {t["dictionary"] for t in r.tables["sensitivity"] if t.get("dictionary")} == {"tc"}
    assert any(k.startswith("sensitivity:") for k in row), row


def test_first_letter_labels_words_by_their_first_letter():
    from saekit.evals.concept_tasks import first_letter_lookup

    vocab = ["Ġapple", " Banana", "▁cat", "x", "12", "Ġé", "Ġa", "dog", "Ġdon't", "<|endoftext|>"]
    assert first_letter_lookup(vocab).tolist() == [0, 1, 2, -1, -1, -1, -1, 3, -1, -1]


@pytest.mark.timeout(300)
def test_real_text_tasks_run_on_the_demo_lm(demo_model):
    """First letter and text source label real tokens; a dense probe reads both well above
    chance (measured on 16k tokens: 0.89 over 22 letters, 0.80 for English vs the Python
    docs), and a task that cannot be built says why."""
    r = run("sparse_probing", Config(task="first_letter", n_tokens=8192, k_values=[1], dictionaries=[]),
            model=demo_model)
    assert r.summary["concepts"] >= 15 and r.summary["dense"] > 0.75, r.summary
    assert {row["concept"] for row in r.rows} <= set("abcdefghijklmnopqrstuvwxyz")
    r = run("sparse_probing", Config(task="source", sources=["english", "demo"], n_tokens=8192, k_values=[1],
                                     dictionaries=[]), model=demo_model)
    assert r.summary["concepts"] == 2 and r.summary["dense"] > 0.65, r.summary
    with pytest.raises(ValueError, match="task 'source' needs at least two text sources"):
        run("sparse_probing", Config(task="source", sources=["demo"], dictionaries=[]), model=demo_model)


def test_scr_splits_are_biased_balanced_and_disjoint():
    from saekit.evals.scr import Config as SCRConfig
    from saekit.evals.scr import scr_splits

    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 2, (8000,), generator=g)
    s = torch.rand(8000, generator=g) < 0.4
    split = scr_splits(t, s, SCRConfig(per_cell=200), torch.Generator().manual_seed(1))
    idx = torch.cat(list(split.values()))
    assert len(idx) == len(set(idx.tolist())) == 4 * 200 + 4 * 200 + 4 * 200
    b = split["biased"]
    assert bool(((t[b] == 0) == s[b]).all())  # source 0 words start with a spurious letter, source 1's do not
    for name in ("balanced", "test"):
        r = split[name]
        counts = [int(((t[r] == a) & (s[r] == bool(c))).sum()) for a in (0, 1) for c in (0, 1)]
        assert counts == [200] * 4, (name, counts)
    with pytest.raises(ValueError, match="SCR needs 120 words of each"):
        scr_splits(t[:50], s[:50], SCRConfig(), g)


@pytest.mark.timeout(300)
def test_scr_runs_on_the_demo_lm(demo_model):
    """The biased probe is worse than the oracle on the balanced test set, and each
    dictionary's ablations give a finite SCR beside its random control. (On the demo LM the
    gap is small, 0.78 against 0.82 at 32k tokens, so SCR itself is noisy there; the real
    model's numbers are in eval/results/scr_smollm2.json.)"""
    r = run("scr", __import__("saekit.evals.scr", fromlist=["Config"]).Config(
        hook="blocks.2.mlp.hook_post", dictionaries=["checkpoints/demo-topk"], n_tokens=16384, per_cell=400,
        n_features=[5]), model=demo_model)
    assert r.summary["biased_accuracy"] < r.summary["oracle_accuracy"]
    assert {row["dictionary"] for row in r.rows} == {"demo-topk", "demo-topk/random"}
    assert all(row["scr"] == row["scr"] for row in r.rows)  # finite
