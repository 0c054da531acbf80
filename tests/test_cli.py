"""The command line: harvest into a cache, inspect and verify it; import stays light."""

import subprocess
import sys

import pytest
import torch
from conftest import DEMO_LM

import saekit
from saekit.cli import main
from saekit.models import portable_spec


def test_harvest_cache_info_verify(tmp_path, capsys, demo_model):
    out = tmp_path / "cache"
    hooks = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]
    rc = main(["harvest", "--model", str(DEMO_LM), "--hooks", *hooks, "--data", "demo",
               "--n-tokens", "2048", "--ctx-len", "64", "--shard-tokens", "700", "--out", str(out)])
    assert rc == 0
    cache = saekit.open_cache(out)
    assert cache.manifest["model"] == portable_spec(DEMO_LM) and cache.manifest["processing"] == "native"
    # The cache holds exactly what harvest returns for the same tokens.
    tokens = saekit.load_tokens("demo", demo_model, 2048, 64)
    ref = saekit.harvest(demo_model, hooks, tokens)
    for h in hooks:
        assert torch.equal(cache.tensor(h), ref[h])
    capsys.readouterr()
    assert main(["info", str(out), "--verify"]) == 0
    assert "verify: OK" in capsys.readouterr().out

    shard = out / hooks[1] / "shard_00001.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert main(["info", str(out), "--verify"]) == 1
    text = capsys.readouterr().out
    assert "shard_00001.safetensors" in text and "corrupted" in text


def test_harvest_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cache"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc = main(["harvest", "--model", str(DEMO_LM), "--hooks", "blocks.0.hook_resid_post",
               "--n-tokens", "256", "--out", str(out)])
    assert rc == 2 and "exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_info_on_model_and_unknown_path(tmp_path, capsys):
    assert main(["info", str(DEMO_LM)]) == 0
    assert "n_layers=" in capsys.readouterr().out
    assert main(["info", str(tmp_path)]) == 2


def test_import_is_light():
    """`import saekit` loads neither torch nor TransformerLens (they load on first use)."""
    code = ("import sys, saekit; heavy = [m for m in ('torch', 'transformer_lens', 'transformers', "
            "'datasets', 'wandb') if m in sys.modules]; print(heavy); assert not heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "saekit.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "harvest" in r.stdout and "demo" in r.stdout


def test_demo_end_to_end(tmp_path, capsys):
    import json

    assert main(["demo", "--out", str(tmp_path), "--n-tokens", "8192", "--model", str(DEMO_LM)]) == 0
    out = capsys.readouterr().out
    assert "Activations per hook" in out and "Planted concepts" in out
    doc = json.loads((tmp_path / "demo.json").read_text())  # the demo's Result, in every analysis's layout
    summary = {"sae": doc["rows"], **doc["tables"]}
    # Loading gives back the same table (its statistics as Stat cells, saved as {"mean", "se", "n"})
    loaded = saekit.report.Result.load(tmp_path).tables["concepts"]
    assert saekit.report.json_safe(loaded) == doc["tables"]["concepts"]
    assert isinstance(loaded[0]["AUROC ± SE"], saekit.report.Stat)
    assert {r["family"] for r in summary["concepts"]} == {"day", "month", "colour", "number", "animal", "city", "emotion"}
    assert all(r["AUROC"] > 0.5 for r in summary["concepts"])
    sae = summary["sae"][0]
    assert sae["FVU"] < 0.8 and sae["L0"] == pytest.approx(16) and sae["CE recovered (zero abl.)"] > 0.3
    snmf = summary["sae"][1]
    assert snmf["kind"] == "snmf" and snmf["FVU"] < 0.8 and 0 < snmf["L0"] <= 16
    assert snmf["neurons per feature"] <= 26 and snmf["CE recovered (zero abl.)"] > 0.3
    assert all(r["best SNMF feature AUROC"] > 0.5 for r in summary["concepts"])
    # Statistics are saved as {"mean", "se", "n"} (saekit.report.Stat)
    effects = {r["direction"]: {k: v["mean"] if isinstance(v, dict) else v for k, v in r.items()}
               for r in summary["effects"]}
    for kind in ("TopK SAE features", "SNMF features"):
        assert effects[kind]["concept log-prob gain at KL 0.25"] > effects["isotropic / random"]["concept log-prob gain at KL 0.25"]
    assert effects["isotropic / random"]["KL at 0.3 median norms"] < effects["cov-mixture"]["KL at 0.3 median norms"]
    shipped = summary["sae"][2]  # checkpoints/demo-topk, loaded and evaluated the same way
    assert shipped["kind"] == "topk (checkpoints/demo-topk)" and shipped["FVU"] < 0.5
    assert "saekit" not in json.loads((tmp_path / "sae-saelens" / "cfg.json").read_text())
    assert (tmp_path / "sae" / "sae_weights.safetensors").is_file()
    assert saekit.load_dictionary(tmp_path / "snmf").cfg.kind == "snmf"
    html = (tmp_path / "index.html").read_text()
    assert "data:image/png;base64," in html and "blocks.1.mlp.hook_post" in html
    interp = {(r["dictionary"], r["description"]): r for r in summary["interp"]}
    assert {("TopK SAE", "offline"), ("SNMF", "offline"), ("TopK SAE", "prism")} <= set(interp)
    assert all(0 <= r["CoSy AUC"]["mean"] <= 1 and r["CoSy AUC"]["n"] >= 1 for r in summary["interp"])
    for name, label in (("sae", "TopK SAE"), ("snmf", "SNMF")):
        index = tmp_path / "interp" / name / "index.html"
        assert f"feature dashboard ({label}): {index.resolve()}" in out
        records = json.loads((index.parent / "features.json").read_text())["features"]
        assert len(records) > 10 and all(r["examples"] for r in records)
    assert 'href="interp/sae/index.html"' in html


def test_info_on_a_dictionary(tmp_path, capsys):
    sae = saekit.fit(torch.randn(2048, 16), "topk", d_dict=32, k=4, batch_size=256, hook="blocks.0.hook_resid_post")
    sae.save(tmp_path / "d")
    assert main(["info", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "topk dictionary" in out and "d_in=16, d_dict=32, k=4, hook=blocks.0.hook_resid_post" in out
    assert "decoder row norms: min 1.0000, mean 1.0000, max 1.0000" in out and "firing frequency" in out
