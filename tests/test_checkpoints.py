"""The demo dictionaries shipped in checkpoints/ (``make checkpoints``): small, fitted on the
demo LM that is checked in beside them, and good enough to evaluate without training."""

import hashlib
import json

import pytest
import torch
from conftest import DEMO_LM, ROOT

import saekit
from saekit.metrics import StreamingStats

HOOK = "blocks.2.mlp.hook_post"


@pytest.mark.parametrize("name", ["demo-topk", "demo-snmf"])
def test_shipped_dictionary_matches_the_demo_lm_it_was_fitted_on(name):
    path = ROOT / "checkpoints" / name
    assert sum(f.stat().st_size for f in path.iterdir()) <= 5_000_000
    sha = hashlib.sha256((DEMO_LM / "model.safetensors").read_bytes()).hexdigest()
    recorded = json.loads((path / "cfg.json").read_text())["saekit"]["metadata"]["model_sha256"]
    assert recorded == sha, (f"{path} was fitted on other demo-LM weights: run `make checkpoints` "
                             "after rebuilding the demo LM")


def test_shipped_dictionaries_reconstruct_held_out_text(demo_model):
    tokens = saekit.load_tokens("demo:heldout", demo_model, n_tokens=8192, seed=0)
    acts = saekit.harvest(demo_model, [HOOK], tokens)[HOOK]
    # Measured 2026-11-21: topk FVU 0.202, L0 16, CE recovered 0.75; snmf FVU 0.591,
    # L0 12.0, CE recovered 0.49 (16 windows).
    bounds = {"demo-topk": (0.30, 0.6), "demo-snmf": (0.70, 0.3)}
    for name, (max_fvu, min_ce) in bounds.items():
        d = saekit.load_dictionary(ROOT / "checkpoints" / name)
        assert d.cfg.hook == HOOK and d.cfg.k == 16
        with torch.no_grad():
            stats = StreamingStats()
            codes = d.encode(acts)
            stats.update(acts, d.decode(codes), d.active(codes))
        rec = saekit.ce_kl_recovered(demo_model, d, tokens[:16], batch_size=16)
        assert stats.fvu() < max_fvu and rec.ce_recovered_zero > min_ce, (name, stats.fvu(), rec)


def test_info_describes_the_shipped_snmf(capsys):
    from saekit.cli import main

    assert main(["info", str(ROOT / "checkpoints" / "demo-snmf")]) == 0
    out = capsys.readouterr().out
    assert "snmf dictionary" in out and "neurons per feature: min 26, median 26, max 26" in out
    assert "fitted on model weights sha256" in out
