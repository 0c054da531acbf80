"""`saekit convert` (issue 21): a default-trained TopK SAE goes to every SAE format, each
refusal lists the formats that work, and sparsify output keeps the hook."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ROOT

import saekit
from saekit import formats
from saekit.cli import main

TOPK = ROOT / "checkpoints" / "demo-topk"  # trained at the defaults: input_norm = "scalar"
SNMF = ROOT / "checkpoints" / "demo-snmf"
RELU = ROOT / "tests" / "fixtures" / "formats" / "saelens_standard"


@pytest.mark.timeout(60)
def test_a_default_trained_topk_sae_converts_to_sparsify_and_keeps_its_hook(tmp_path, capsys):
    d = saekit.load_dictionary(TOPK)
    assert d.cfg.input_norm == "scalar" and d.cfg.hook == "blocks.2.mlp.hook_post"
    out = tmp_path / "layers.2.mlp"  # sparsify's own name for the hookpoint would say hook_mlp_out
    assert main(["convert", str(TOPK), str(out), "--to", "sparsify"]) == 0
    assert "as sparsify" in capsys.readouterr().out
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["saekit_hook"] == "blocks.2.mlp.hook_post" and cfg["saekit_model"] == d.cfg.model
    back = saekit.load_dictionary(out)
    assert (back.cfg.hook, back.cfg.model, back.cfg.processing, back.cfg.k) == (
        d.cfg.hook, d.cfg.model, d.cfg.processing, d.cfg.k)
    x = torch.randn(64, d.cfg.d_in, generator=torch.Generator().manual_seed(0)).abs()
    with torch.no_grad():  # the scalar normalisation is folded into the weights: raw x in, same out
        torch.testing.assert_close(back(x), d(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(back.encode(x), d.encode(x), rtol=1e-5, atol=1e-5)


@pytest.mark.timeout(60)
def test_every_refusal_names_the_formats_that_work(tmp_path, capsys):
    cases = [(SNMF, "saelens", ["saekit"]), (SNMF, "sparsify", ["saekit"]),
             (RELU, "sparsify", ["saekit", "saelens"]), (TOPK, "circuit_tracer", ["saekit", "saelens", "sparsify"])]
    for src, to, works in cases:
        d = saekit.load_dictionary(src)
        assert formats.export_targets(d) == works, (src.name, to)
        dst = tmp_path / f"{src.name}-{to}"
        assert main(["convert", str(src), str(dst), "--to", to]) == 2
        err = capsys.readouterr().err
        assert f"can be written as: {', '.join(works)} (--to {works[-1]})" in err, err
        assert not dst.exists()
        with pytest.raises(ValueError, match="can be written as: " + ", ".join(works)):
            formats.export(d, dst, to=to)
    # and each listed target does work
    for src, _, works in cases[1:]:
        for to in works:
            formats.export(saekit.load_dictionary(src), tmp_path / f"ok-{src.name}-{to}", to=to)


@pytest.mark.timeout(30)
def test_a_directory_of_one_dictionary_names_it(capsys):
    run = ROOT / "tests" / "fixtures" / "formats" / "sparsify_topk"
    with pytest.raises(formats.FormatError, match=r"a directory of 1 dictionary; load it: .*layers\.0\.mlp"):
        saekit.load_dictionary(run)
