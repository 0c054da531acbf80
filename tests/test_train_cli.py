"""`saekit train`: recipes, metrics.jsonl, checkpoints, and resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import DEMO_LM, ROOT, train_in_one_and_two_processes

import saekit
from saekit.config import TrainConfig, load_config
from saekit.dictionaries import REGISTRY, DictionaryConfig
from saekit.models import HOOK_RE, portable_spec

RECIPES = sorted(p for p in (ROOT / "train").glob("*.toml") if p.name != "demo_lm.toml")


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_loads_and_validates(recipe):
    cfg = load_config(recipe, machine=False)  # a recipe may name a cache its comment says to harvest first
    assert isinstance(cfg, TrainConfig)
    assert HOOK_RE.match(cfg.hook), cfg.hook
    assert cfg.kind in REGISTRY
    DictionaryConfig(kind=cfg.kind, d_in=1, d_dict=cfg.d_dict, k=cfg.k, options=cfg.options)
    assert cfg.n_tokens >= cfg.batch_size


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "topk"\nd_dikt = 10\n')
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['d_dikt'\]; allowed: .*'d_dict'"):
        load_config(bad)
    cfg = load_config(ROOT / "train" / "demo.toml", ["k=8", "options.aux_coefficient=0.5", "hook=blocks.1.mlp.hook_post"])
    assert cfg.k == 8 and cfg.options == {"aux_coefficient": 0.5} and cfg.hook == "blocks.1.mlp.hook_post"
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["k"])


def _train(out, *extra):
    args = [sys.executable, "-m", "saekit.cli", "train", str(ROOT / "train" / "demo.toml"), "--out", str(out),
            "--set", f'model="{DEMO_LM}"', "--set", "n_tokens=24576", "--set", "batch_size=512",
            "--set", "d_dict=256", "--set", "checkpoint_every=4096", "--set", "log_every=4",
            "--set", "eval_every=8192", "--set", "eval_tokens=2048", *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return args, env


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    args, env = _train(tmp_path / "full")
    subprocess.run(args, env=env, check=True, timeout=240, capture_output=True)
    full = saekit.load_dictionary(tmp_path / "full" / "dictionary")

    args, env = _train(tmp_path / "killed")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoint" / "state.json"
    deadline = time.time() + 200
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and json.loads(ckpt.read_text())["step"] >= 16:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (tmp_path / "killed" / "dictionary").exists()
    killed_at = json.loads(ckpt.read_text())["step"]
    assert 0 < killed_at < 48

    r = subprocess.run(args, env=env, timeout=60, capture_output=True, text=True)
    assert r.returncode == 2 and "--resume" in r.stderr  # refuses to clobber the checkpoint
    subprocess.run(args + ["--resume"], env=env, check=True, timeout=240, capture_output=True)
    resumed = saekit.load_dictionary(tmp_path / "killed" / "dictionary")
    for name, t in full.saelens_tensors().items():
        assert torch.equal(t, resumed.saelens_tensors()[name]), name
    lines = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    lines = [x for x in lines if "eval" not in x]
    steps = [x["step"] for x in lines]
    assert steps == sorted(set(steps)) and steps[-1] == 48, str(steps)
    first = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    first = [x for x in first if "eval" not in x][-1]
    assert lines[-1]["loss"] == first["loss"]
    assert {"loss", "mse", "aux", "fvu", "l0", "dead_pct", "lr", "tokens_per_s"} <= set(lines[-1])
    evals = [x["eval"] for x in (json.loads(y) for y in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()) if "eval" in x]
    assert len(evals) == 3  # at steps 16 and 32 (every 8192 tokens), and at the end
    final = json.loads((tmp_path / "full" / "eval.json").read_text())
    assert final == evals[-1]
    assert 0 < final["ce_recovered_zero"] <= 1.05 and 0 < final["fvu"] < 1 and final["l0"] == pytest.approx(16)
    assert {"kl_recovered_mean", "l2_ratio", "relative_reconstruction_bias", "cosine_similarity", "frac_dead"} <= set(final)
    cfg = json.loads((tmp_path / "full" / "dictionary" / "cfg.json").read_text())["saekit"]
    assert cfg["metadata"]["torch_version"] == torch.__version__ and "git_sha" in cfg["metadata"]


def test_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    from saekit.training import Trainer

    x = torch.randn(4096, 16)
    t = Trainer(x, "topk", 32, 4, batch_size=256, n_tokens=4096)
    for _ in range(4):
        t.train_step()
    t.save_checkpoint(tmp_path / "checkpoint")
    before = (tmp_path / "checkpoint" / "state.safetensors").read_bytes()
    with torch.no_grad():
        t.sae.W_dec[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="at step 4"):
        t.run(tmp_path, checkpoint_every=256)
    assert (tmp_path / "checkpoint" / "state.safetensors").read_bytes() == before
    fresh = Trainer(x, "topk", 32, 4, batch_size=256, n_tokens=4096)
    fresh.load_checkpoint(tmp_path / "checkpoint")
    assert fresh.step == 4


def test_torchrun_two_gloo_processes_match_one(tmp_path):
    """rank r trains on the r-th half of each global batch; gradients are averaged."""
    sets = [f'model="{DEMO_LM}"', "n_tokens=8192", "batch_size=512", "d_dict=256", "log_every=4",
            "device=\"cpu\"", "eval_tokens=0"]
    one, two = train_in_one_and_two_processes("demo.toml", sets, tmp_path)
    # Relative error of each tensor as a whole: the two runs sum gradients in a different
    # order, and Adam's g/sqrt(v) turns rounding in near-zero gradients into differences of
    # order lr in single elements, so an elementwise rtol would test rounding, not DDP.
    for name, t in one.saelens_tensors().items():
        rel = ((two.saelens_tensors()[name] - t).norm() / t.norm()).item()
        assert rel < 1e-5, (name, rel)


def test_train_from_an_activation_cache(tmp_path):
    from saekit.cli import main

    hook = "blocks.1.hook_resid_post"
    assert main(["harvest", "--model", str(DEMO_LM), "--hooks", hook, "--n-tokens", "8192",
                 "--out", str(tmp_path / "cache")]) == 0
    assert main(["train", str(ROOT / "train" / "demo_resid.toml"), "--out", str(tmp_path / "run"),
                 "--set", f'cache="{tmp_path / "cache"}"', "--set", "batch_size=512",
                 "--set", "d_dict=256", "--set", "checkpoint_every=0"]) == 0
    sae = saekit.load_dictionary(tmp_path / "run" / "dictionary")
    assert sae.cfg.hook == hook and sae.cfg.processing == "native" and sae.cfg.model == portable_spec(DEMO_LM)
    assert sae.cfg.metadata["tokens"] == 8192 // 128 * 127 // 512 * 512


def test_several_hooks_and_a_sweep_from_one_harvest(tmp_path):
    from saekit.cli import main

    hooks = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]
    rc = main(["train", str(ROOT / "train" / "demo.toml"), "--out", str(tmp_path),
               "--set", f'model="{DEMO_LM}"', "--set", f"hook={json.dumps(hooks)}",
               "--set", "sweep=[{k = 4}, {k = 8, d_dict = 128}]", "--set", "n_tokens=4096",
               "--set", "batch_size=512", "--set", "d_dict=64", "--set", "checkpoint_every=0",
               "--set", "eval_tokens=0"])
    assert rc == 0
    made = sorted(p.parent.name for p in tmp_path.glob("*/dictionary"))
    assert made == sorted(f"{h}__{v}" for h in hooks for v in ("k=4", "k=8__d_dict=128"))
    d = saekit.load_dictionary(tmp_path / f"{hooks[1]}__k=8__d_dict=128" / "dictionary")
    assert (d.cfg.hook, d.cfg.k, d.cfg.d_dict, d.cfg.d_in) == (hooks[1], 8, 128, 512)
    with pytest.raises(ValueError, match="cannot set"):
        load_config(None, ["sweep=[{hook = 'x'}]"]).runs()


def test_wandb_offline_run_gets_the_same_metrics(tmp_path, monkeypatch):
    """wandb is a sink beside metrics.jsonl; offline it writes a local run (no network)."""
    from saekit.training import Trainer

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    t = Trainer(torch.randn(2048, 16), "topk", 32, 4, batch_size=256, epochs=1)
    t.run(tmp_path / "run", log_every=2, wandb_project="saekit-test")
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_train_streaming_from_the_model(tmp_path):
    from saekit.cli import main

    assert main(["train", str(ROOT / "train" / "demo.toml"), "--out", str(tmp_path), "--set", f'model="{DEMO_LM}"',
                 "--set", "stream=true", "--set", "buffer_mb=4", "--set", "n_tokens=6144",
                 "--set", "batch_size=512", "--set", "d_dict=128", "--set", "eval_tokens=1024",
                 "--set", 'hook=["blocks.2.mlp.hook_post", "blocks.1.hook_resid_post"]']) == 0
    for hook in ("blocks.2.mlp.hook_post", "blocks.1.hook_resid_post"):  # trained together, one harvest
        d = saekit.load_dictionary(tmp_path / hook / "dictionary")
        assert d.cfg.metadata["steps"] == 12 and d.cfg.processing == "native" and d.cfg.hook == hook
        assert json.loads((tmp_path / hook / "eval.json").read_text())["fvu"] < 1
