"""Every job runs from Python with the config its command takes, and the command calls
exactly that function: saekit.train, run_harvest, run_compare, run_eval, run_toy, run_demo."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import DEMO_LM, ROOT

import saekit
from saekit.cli import main
from saekit.report import Result

TOPK, SNMF = str(ROOT / "checkpoints" / "demo-topk"), str(ROOT / "checkpoints" / "demo-snmf")
HOOK = "blocks.2.mlp.hook_post"


def test_the_package_exports_every_job_entry_and_config():
    for name in ("train", "run_harvest", "run_compare", "run_eval", "run_toy", "run_demo", "load_config",
                 "TrainConfig", "HarvestConfig", "CompareConfig", "ToyConfig", "DemoConfig"):
        assert callable(getattr(saekit, name)), name
    # the in-memory functions keep their signatures
    assert saekit.harvest.__module__ == "saekit.activations.harvest" and saekit.compare.__name__ == "compare"


def test_run_harvest_from_a_config_object_equals_the_in_memory_harvest(tmp_path, demo_model):
    cfg = saekit.HarvestConfig(str(DEMO_LM), ["blocks.0.hook_resid_post", HOOK], 1024, ctx_len=64)
    cache = saekit.run_harvest(cfg, tmp_path / "cache", ["batch_size=4"], progress=False)
    assert isinstance(cache, saekit.ActivationCache) and cache.hooks == cfg.hooks
    ref = saekit.harvest(demo_model, cfg.hooks, saekit.load_tokens("demo", demo_model, 1024, 64))
    assert all(torch.equal(cache.tensor(h), ref[h]) for h in cfg.hooks)
    with pytest.raises(FileExistsError):  # the directory is refused before any work
        saekit.run_harvest(cfg, tmp_path / "cache", progress=False)


def test_run_harvest_from_toml_and_overrides(tmp_path):
    recipe = tmp_path / "h.toml"
    recipe.write_text(f'model = "{DEMO_LM}"\nhooks = ["blocks.0.hook_resid_post"]\nn_tokens = 4096\n')
    cache = saekit.run_harvest(recipe, tmp_path / "c", ["n_tokens=512", "ctx_len=32", 'dtype="bfloat16"'],
                               progress=False)
    assert cache.manifest["dtype"] == "bfloat16" and cache.manifest["ctx_len"] == 32
    assert cache.manifest["n_tokens"] < 512


def test_commands_call_the_python_entries(monkeypatch):
    """Each command hands its Python entry the config file, the flags as overrides (then
    --set) and the output directory: one code path."""
    calls = []

    def fake(name):
        def entry(*args, **kw):
            calls.append((name, args, kw))
            return {} if name == "train" else Result(name, [], {}, {})
        return entry

    monkeypatch.setattr(sys.modules["saekit.activations.job"], "run_harvest", fake("harvest"))
    monkeypatch.setattr(sys.modules["saekit.training.recipe"], "train", fake("train"))
    monkeypatch.setattr(sys.modules["saekit.demo"], "run_demo", fake("demo"))
    monkeypatch.setattr(sys.modules["saekit.toy_report"], "run_toy", fake("toy"))
    monkeypatch.setattr(sys.modules["saekit.evals"], "run_eval", fake("eval"))
    assert main(["harvest", "--model", "m", "--hooks", "a", "b", "--n-tokens", "64", "--out", "o"]) == 0
    assert calls[-1][1] == (None, "o", ['model="m"', 'hooks=["a", "b"]', "n_tokens=64"])
    assert main(["train", "r.toml", "--k", "8", "--no-stream", "--set", "d_dict=64", "--out", "o"]) == 0
    recipe, out, overrides = calls[-1][1]
    assert (recipe, str(out), overrides) == ("r.toml", "o", ["k=8", "stream=false", "d_dict=64"])
    assert main(["demo", "--n-tokens", "2048", "--out", "o"]) == 0
    assert calls[-1][1] == (None, "o", ["n_tokens=2048"])
    main(["toy", "--quick", "--config", "t.toml", "--out", "o"])
    assert calls[-1][0] == "toy" and calls[-1][1] == ("t.toml", "o", ["quick=true"])
    main(["eval", "sensitivity", "s.toml", "--n-tokens", "512", "--radii", "0.1", "0.3", "--out", "o"])
    assert calls[-1][0] == "eval" and calls[-1][1] == ("sensitivity", "s.toml", "o", ["n_tokens=512",
                                                                                        "radii=[0.1, 0.3]"])


def test_train_from_a_config_object(tmp_path):
    cfg = saekit.TrainConfig(model=str(DEMO_LM), hook=HOOK, n_tokens=4096, d_dict=64, k=4, batch_size=256,
                             eval_tokens=0, log_every=100)
    out = saekit.train(cfg, tmp_path / "run", ["seed=1"])
    (run_dir, d), = out.items()
    assert run_dir == tmp_path / "run" and (d.cfg.kind, d.cfg.d_dict, d.cfg.k, d.cfg.hook) == ("topk", 64, 4, HOOK)
    assert saekit.load_dictionary(run_dir / "dictionary").cfg.d_dict == 64


def test_run_compare_writes_and_returns_the_comparison(tmp_path):
    cfg = saekit.CompareConfig([TOPK, SNMF], str(DEMO_LM), n_tokens=1024, names=["sae", "snmf"])
    result = saekit.run_compare(cfg, tmp_path / "cmp", ["batch_size=8"], progress=False)
    assert isinstance(result, saekit.Comparison)
    assert [r["name"] for r in result.reconstruction] == ["sae", "snmf"]
    assert result.matching[0]["comparable"] and (tmp_path / "cmp" / "compare.json").is_file()
    assert Result.load(tmp_path / "cmp").rows == result.result.rows
    with pytest.raises(ValueError, match=r"key 'seeds' must be >= 1"):
        saekit.run_compare(cfg, overrides=["seeds=0"])


def test_run_eval_with_the_recipe_the_command_takes(tmp_path):
    recipe = ROOT / "eval" / "sensitivity_demo.toml"
    small = ["n_tokens=512", "radii=[0.3]", 'families=["isotropic"]', "pathology=false",
             'feature_classes=["active"]']
    result = saekit.run_eval("sensitivity", recipe, tmp_path / "ev", small)
    assert result.name == "sensitivity" and result.summary["kl_mean/isotropic"] > 0
    assert Result.load(tmp_path / "ev").summary == result.to_dict()["summary"]
    # the command, with flags for the same fields
    assert main(["eval", "sensitivity", str(recipe), "--n-tokens", "512", "--radii", "0.3", "--families", "isotropic",
                 "--no-pathology", "--feature-classes", "active", "--out", str(tmp_path / "cli")]) == 0
    assert Result.load(tmp_path / "cli").summary == result.to_dict()["summary"]
    with pytest.raises(ValueError, match=r"--set radii=\"big\": key 'radii' must be list\[float\]"):
        saekit.run_eval("sensitivity", recipe, None, ['radii="big"'])
    with pytest.raises(ValueError, match="unknown evaluator 'sensitive'"):
        saekit.run_eval("sensitive")


def test_run_toy_takes_its_config(tmp_path, monkeypatch):
    seen = []
    toy = sys.modules["saekit.toy_report"]
    monkeypatch.setattr(toy, "_run_toy", lambda quick, progress: seen.append(quick) or Result("toy", [], {}, {}))
    result = saekit.run_toy(saekit.ToyConfig(quick=True), tmp_path / "toy")
    assert seen == [True] and result.name == "toy" and (tmp_path / "toy" / "toy.json").is_file()
    saekit.run_toy(quick=False)  # the earlier keywords
    (tmp_path / "t.toml").write_text("quick = true\nthreads = 1\n")
    saekit.run_toy(tmp_path / "t.toml", overrides=["quick=false"])
    assert seen == [True, False, False]
    with pytest.raises(ValueError, match=r"key 'threads' must be >= 1, got 0"):
        saekit.run_toy(threads=0)


def test_run_demo_checks_its_config_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"--set n_tokens=0: key 'n_tokens' must be >= 1"):
        saekit.run_demo(saekit.DemoConfig(model=str(DEMO_LM)), tmp_path / "demo", ["n_tokens=0"])
    with pytest.raises(ValueError, match=r"unknown key 'modle'"):
        saekit.run_demo(None, tmp_path / "demo", ['modle="x"'])
    assert not (tmp_path / "demo").exists()
    # tests/test_cli.py::test_demo_end_to_end runs the whole job through `saekit demo`, which calls run_demo
