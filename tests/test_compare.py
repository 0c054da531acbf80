"""saekit.compare: reconstruction rows, Hungarian matching (in one space, through W_out),
activation correlation, stability across seeds, concept F1, the report files and the CLI."""

import argparse
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEMO_LM

import saekit
from saekit.compare import Comparison, ConceptCounts, add_parser, compare, match
from saekit.data import FAMILIES, concept_labels, token_mask
from saekit.dictionaries import REGISTRY, DictionaryConfig
from saekit.metrics.feature_space import chance_matched_cos, residual_directions
from saekit.metrics.spliced import evaluate
from saekit.report import Result

MLP, RESID = "blocks.1.mlp.hook_post", "blocks.1.hook_resid_post"
FIT = dict(d_dict=256, k=8, batch_size=128, lr=2e-3)  # one pass over ~6k tokens: 47 steps


def _hand_made(hook, d_in, w_dec, k=4):
    """A topk dictionary with given decoder rows (encoder W_decᵀ, zero biases)."""
    d = REGISTRY["topk"](DictionaryConfig(kind="topk", d_in=d_in, d_dict=len(w_dec), k=k, hook=hook))
    with torch.no_grad():
        d.W_dec.copy_(w_dec)
        d.enc_weight.copy_(w_dec)
    return d


@pytest.fixture(scope="module")
def sets(demo_model, demo_acts, demo_tokens):
    """Trained and hand-made dictionaries, and one comparison of all of them."""
    g = torch.Generator().manual_seed(0)
    mlp0 = saekit.fit(demo_acts[MLP], "topk", seed=0, hook=MLP, model=demo_model, **FIT)
    mlp1 = saekit.fit(demo_acts[MLP], "topk", seed=1, hook=MLP, model=demo_model, **FIT)
    resid = saekit.fit(demo_acts[RESID], "topk", seed=0, hook=RESID, model=demo_model, **FIT)
    # mlp0's directions written into the residual stream, shuffled: a perfect match
    # exists only through W_out.
    perm = torch.randperm(256, generator=g)
    mapped = F.normalize(mlp0.W_dec.detach() @ demo_model.blocks[1].mlp.W_out.detach(), dim=1)
    mlp_out = _hand_made("blocks.1.hook_mlp_out", 128, -mapped[perm])
    attn = _hand_made("blocks.2.attn.hook_z", 128, F.normalize(torch.randn(64, 128, generator=g), dim=1))
    sparse = torch.randn(64, 128, generator=g)
    sparse[:, 64:] = 0  # 64 nonzero entries per decoder row
    deep = _hand_made("blocks.2.hook_resid_post", 128, F.normalize(sparse, dim=1))
    # An SNMF dictionary through the same interface: 8 neurons per feature, NNLS codes, and
    # firing by a threshold relative to each token's largest code (not codes > 0).
    top = mlp0.W_dec.detach()[:32].abs().topk(8, dim=1).indices
    w = torch.zeros(32, 512).scatter_(1, top, mlp0.W_dec.detach()[:32].gather(1, top))
    snmf = REGISTRY["snmf"](DictionaryConfig(kind="snmf", d_in=512, d_dict=32, hook=MLP, options={"encode_iter": 50}))
    with torch.no_grad():
        snmf.W_dec.copy_(F.normalize(w, dim=1))
    names = ["mlp0", "mlp1", "mlp0-again", "resid", "mlp_out", "attn", "deep", "snmf"]
    dicts = [mlp0, mlp1, mlp0, resid, mlp_out, attn, deep, snmf]
    tokens = demo_tokens[:24]
    report = compare(dicts, demo_model, tokens, names=names, batch_size=24)  # one forward batch
    return dict(zip(names, dicts, strict=True)) | {"report": report, "tokens": tokens, "perm": perm}


def _pair(report, a, b):
    (row,) = [r for r in report.matching if (r["a"], r["b"]) == (a, b)]
    return row


def test_a_dictionary_matches_itself_perfectly(sets):
    row = _pair(sets["report"], "mlp0", "mlp0-again")
    assert row["comparable"] and row["space"] == "residual stream, layer 1" and row["n_matched"] == 256
    for key in ("mean_matched_cos", "mmcs_a_to_b", "mmcs_b_to_a", "act_corr_mean"):
        assert row[key] == pytest.approx(1.0, abs=1e-5), key
    assert row["frac_act_corr_above_0.5"] == 1.0
    assert sets["report"].histograms["counts"]["mlp0 vs mlp0-again"][-1] == 256


def test_two_seeds_match_partly_and_above_chance(sets):
    row = _pair(sets["report"], "mlp0", "mlp1")
    chance = chance_matched_cos(256, 256, 128)  # MLP features compare in the residual stream
    assert row["chance_matched_cos"] == chance
    assert chance + 0.03 < row["mean_matched_cos"] < 0.9, row  # measured 0.20 against 0.13
    assert row["mmcs_a_to_b"] >= row["mean_matched_cos"]  # one-to-one can only lose to best-of
    assert -1 <= row["act_corr_mean"] < 0.9


def test_mlp_dictionary_maps_through_W_out(sets, demo_model):
    mlp0, perm = sets["mlp0"], sets["perm"]
    w_out = demo_model.blocks[1].mlp.W_out.detach()  # [d_mlp, d_model]
    hand = mlp0.W_dec.detach() @ w_out
    hand = hand / hand.norm(dim=1, keepdim=True)
    got = residual_directions(mlp0, demo_model)
    assert got.shape == (256, 128)
    torch.testing.assert_close(got, hand)
    m = match(got, sets["mlp_out"].W_dec)  # the shuffle (and sign flip) is undone
    assert torch.equal(m.cols[perm], torch.arange(256)) and m.cos.min() > 0.9999
    row = _pair(sets["report"], "mlp0", "mlp_out")
    assert row["space"] == "residual stream, layer 1"
    assert row["mean_matched_cos"] == pytest.approx(1.0, abs=1e-5)
    # An MLP and a residual SAE of the same layer are comparable in the residual stream.
    row = _pair(sets["report"], "mlp0", "resid")
    assert row["comparable"] and row["space"] == "residual stream, layer 1"
    assert 0 < row["mean_matched_cos"] < 0.9


def test_pairs_without_a_common_space_get_a_reason(sets):
    report = sets["report"]
    row = _pair(report, "mlp0", "deep")
    assert not row["comparable"] and "different layers (1 vs 2)" in row["reason"]
    assert row["mean_matched_cos"] is None and row["act_corr_mean"] is None
    row = _pair(report, "resid", "attn")
    assert not row["comparable"] and "blocks.2.attn.hook_z has no map into the residual stream" in row["reason"]
    assert "mlp0 vs deep" not in report.histograms["counts"]
    assert len(report.matching) == 8 * 7 // 2


def test_reconstruction_rows_are_evaluates(sets, demo_model):
    rows = {r["name"]: r for r in sets["report"].reconstruction}
    ev = evaluate(demo_model, sets["mlp0"], sets["tokens"], batch_size=24)
    for key in ("fvu", "l0", "ce_recovered_zero", "ce_recovered_mean", "kl_recovered_zero",
                "kl_recovered_mean", "frac_dead"):
        assert rows["mlp0"][key] == pytest.approx(ev[key], rel=1e-9, abs=1e-12), key
    assert rows["mlp0"]["l0"] == pytest.approx(8.0)
    assert rows["mlp0"]["neurons_per_feature"] == 512 and rows["deep"]["neurons_per_feature"] == 64
    assert rows["snmf"]["neurons_per_feature"] == 8 and rows["snmf"]["kind"] == "snmf"
    assert rows["resid"]["hook"] == RESID and rows["resid"]["d_dict"] == 256


def test_concept_counts_by_hand():
    # 6 tokens, 3 features, 2 classes; labels -1 = no concept.
    active = torch.tensor([[1, 0, 1], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.bool)
    labels = torch.tensor([0, 0, 1, -1, 1, 0])
    cc = ConceptCounts(3, 2)
    cc.update(active[:4], labels[:4])
    cc.update(active[4:], labels[4:])
    s = cc.scores()
    # Feature 0 fires on tokens 0, 1, 3, 5; class 0 is tokens 0, 1, 5: tp 3, P 3/4, R 3/3.
    assert s["precision"][0, 0] == pytest.approx(0.75) and s["recall"][0, 0] == pytest.approx(1.0)
    assert s["f1"][0, 0] == pytest.approx(2 * 0.75 * 1.0 / 1.75)
    # Feature 1 fires on tokens 2, 3; class 1 is tokens 2, 4: tp 1, P 1/2, R 1/2.
    assert s["f1"][1, 1] == pytest.approx(0.5)
    assert s["f1"][2, 1] == 0 and cc.pos.tolist() == [3, 2] and cc.fires.tolist() == [4, 2, 2]


def test_streamed_correlation_equals_numpy():
    from saekit.metrics import Correlation as _Correlation

    g = torch.Generator().manual_seed(0)
    a = torch.randn(1000, 4, generator=g).relu()
    b = a[:, [2, 0, 1, 3]] + 0.5 * torch.randn(1000, 4, generator=g).relu()
    a[:, 1] += 1e4  # a large, nearly constant code: the naive Σx² − n·mean² would cancel
    b[:, 3] = 0  # a dead feature: correlation undefined
    corr = _Correlation(torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 0, 3]))
    for lo in range(0, 1000, 300):  # uneven batches
        corr.update(a[lo:lo + 300], b[lo:lo + 300])
    r = corr.result()
    ref = [np.corrcoef(a[:, i].double().numpy(), b[:, j].double().numpy())[0, 1] for i, j in ((0, 1), (1, 2), (2, 0))]
    torch.testing.assert_close(r[:3], torch.tensor(ref, dtype=torch.float64), rtol=1e-9, atol=1e-9)
    assert r[0] > 0.8 and torch.isnan(r[3])


@pytest.mark.parametrize("name", ["resid", "snmf"])
def test_concept_rows_use_active_and_are_the_best_f1(sets, demo_model, name):
    tokens, d = sets["tokens"], sets[name]
    labels = concept_labels(tokens, demo_model)[token_mask(tokens, demo_model)]
    with torch.no_grad():
        codes = d.encode(saekit.harvest(demo_model, [d.cfg.hook], tokens)[d.cfg.hook])
    act = d.active(codes)
    if name == "snmf":  # its own firing rule differs from codes > 0, and it is the one used
        assert (act != (codes > 0)).any()
    rows = [r for r in sets["report"].concepts if r["dictionary"] == name]
    assert {r["family"] for r in rows} <= set(FAMILIES) and len(rows) >= 5
    for r in rows:
        on = labels == FAMILIES.index(r["family"])
        tp = (act & on[:, None]).sum(0).double()
        f1 = 2 * tp / (act.sum(0) + on.sum())
        assert r["tokens"] == int(on.sum()) and r["feature_fires"] == int(act[:, r["feature"]].sum())
        assert r["f1"] == pytest.approx(float(f1.max())) and r["f1"] == pytest.approx(float(f1[r["feature"]]))
        assert r["precision"] == pytest.approx(float(tp[r["feature"]] / act[:, r["feature"]].sum()))


def test_save_writes_the_report_and_json_round_trips(sets, tmp_path):
    report = sets["report"]
    out = report.save(tmp_path / "cmp")
    for name in ("report.md", "compare.json", "fvu_l0.png", "similarity.png", "compare.csv",
                 "matching.csv", "concepts.csv", "index.html"):
        assert (out / name).is_file(), name
    assert not (out / "stability.csv").exists()  # seeds=1
    assert (out / "fvu_l0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "compare.json").read_text())
    assert data == report.to_dict()
    assert data["tables"]["matching"][0]["mean_matched_cos"] == report.matching[0]["mean_matched_cos"]
    assert Result.load(out) == report.result  # the one result type reads back
    text = (out / "report.md").read_text()
    assert "## Feature matching" in text and "](fvu_l0.png)" in text and "different layers" in text
    assert "## Planted concepts" in text and "## Stability" not in text


def test_stability_refits_each_configuration_with_each_seed(demo_model, demo_tokens, sets, monkeypatch):
    fits, fit = [], saekit.fit

    def spy(data, **kw):
        fits.append((kw, fit(data, **kw)))
        return fits[-1][1]

    monkeypatch.setattr(saekit, "fit", spy)
    monkeypatch.setattr(sys.modules["saekit.compare"], "fit", spy)  # compare calls the defining module's fit
    mlp0 = sets["mlp0"]
    report = compare([mlp0, sets["resid"], mlp0], demo_model, demo_tokens[:24], names=["a", "r", "b"], seeds=2,
                     batch_size=24, refit_batch_size=128, refit_options={"lr": 2e-3})
    assert [(kw["hook"], kw["seed"]) for kw, _ in fits] == [(MLP, 0), (MLP, 1), (RESID, 0), (RESID, 1)]
    kw = fits[0][0]
    assert (kw["kind"], kw["d_dict"], kw["k"], kw["batch_size"], kw["lr"]) == ("topk", 256, 8, 128, 2e-3)
    assert kw["aux_coefficient"] == mlp0.cfg.options["aux_coefficient"] and kw["model"] is demo_model
    mlp_row, resid_row = report.stability
    assert mlp_row["dictionaries"] == "a, b" and resid_row["dictionaries"] == "r" and mlp_row["seeds"] == 2
    assert mlp_row["refit_tokens"] == report.meta["n_tokens"]
    hand = match(fits[0][1].W_dec, fits[1][1].W_dec).cos.mean().item()
    assert mlp_row["mean_matched_cos"] == mlp_row["min_matched_cos"] == pytest.approx(hand)  # one pair of seeds
    # Different seeds give different dictionaries that still share more than random directions.
    assert mlp_row["chance_matched_cos"] < mlp_row["mean_matched_cos"] < 0.95
    assert "## Stability across 2 seeds" in report.markdown()


def test_bad_dictionaries_raise_clear_errors(demo_model, demo_tokens):
    no_hook = _hand_made(None, 128, torch.eye(128)[:8])
    with pytest.raises(ValueError, match="'nohook'.*no recorded hook"):
        compare([no_hook], demo_model, demo_tokens[:2], names=["nohook"])
    wrong = _hand_made(MLP, 128, torch.eye(128)[:8])
    with pytest.raises(ValueError, match=r"'wrong' has d_in=128, but hook 'blocks.1.mlp.hook_post'.*width 512"):
        compare([wrong], demo_model, demo_tokens[:2], names=["wrong"])
    far = _hand_made("blocks.9.hook_resid_post", 128, torch.eye(128)[:8])
    with pytest.raises(ValueError, match="'far'.*unknown hook"):
        compare([far], demo_model, demo_tokens[:2], names=["far"])
    elsewhere = _hand_made(RESID, 128, torch.eye(128)[:8]).to("meta")
    with pytest.raises(ValueError, match="'elsewhere' is on meta, the model on cpu"):
        compare([elsewhere], demo_model, demo_tokens[:2], names=["elsewhere"])
    with pytest.raises(ValueError, match="distinct"):
        compare([far, far], demo_model, demo_tokens[:2], names=["x", "x"])


def test_cli_end_to_end(sets, tmp_path, capsys, monkeypatch, demo_model):
    sets["mlp0"].save(tmp_path / "a" / "dictionary")
    sets["resid"].save(tmp_path / "b")
    # The demo LM is already loaded by the session; the CLI path under test is the rest.
    loaded = []

    def load_model(spec, device=None, **kw):
        if saekit.models.is_hooked_model(spec):
            return spec
        loaded.append((spec, device))
        return demo_model

    monkeypatch.setattr(saekit.models, "load_model", load_model)
    monkeypatch.setattr(sys.modules["saekit.compare"], "load_model", load_model)  # bound where it is used
    ap = argparse.ArgumentParser(prog="saekit")
    add_parser(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(["compare", str(tmp_path / "a" / "dictionary"), str(tmp_path / "b"), "--model",
                          str(DEMO_LM), "--n-tokens", "1024", "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert args.fn(args) == 0
    assert loaded == [(str(DEMO_LM), "cpu")]
    printed = capsys.readouterr().out
    assert "| a/dictionary | topk | blocks.1.mlp.hook_post |" in printed and "residual stream, layer 1" in printed
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert data["config"]["data"] == "demo:heldout" and data["config"]["n_windows"] == 8
    assert [r["name"] for r in data["rows"]] == ["a/dictionary", "b"]
    assert (tmp_path / "out" / "report.md").is_file()


def test_saekit_compare_is_the_function():
    from saekit.compare import add_parser  # noqa: F401  (loads the submodule first)

    assert saekit.compare is compare and saekit.Comparison is Comparison
