"""Run directories: no silent overwrite, --resume/--overwrite, SIGINT/SIGTERM, SIGKILL at
random points of `saekit train`, and default output directories that never collide."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import DEMO_LM, ROOT

import saekit
from saekit.cli import main
from saekit.jobs import MARKER, OutputExists, claim_output

SETS = [f'model="{DEMO_LM}"', "n_tokens=12288", "batch_size=256", "d_dict=512", "k=8", "log_every=2",
        "eval_tokens=0"]


def _args(out, *extra, sets=()):
    cmd = [sys.executable, "-m", "saekit.cli", "train", str(ROOT / "train" / "demo.toml"), "--out", str(out)]
    for s in [*SETS, *sets]:
        cmd += ["--set", s]
    return cmd + list(extra), dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


def _tensors(path):
    return saekit.load_dictionary(path / "dictionary").saelens_tensors()


def _same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    args, env = _args(out)
    subprocess.run(args, env=env, check=True, timeout=240, capture_output=True)
    return out


def _wait_for_training(proc, out, deadline):
    """Until the run has logged a training step (so a signal lands inside the loop)."""
    log = out / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().strip():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.timeout(300)
def test_a_finished_run_is_never_replaced_silently(uninterrupted, tmp_path):
    before = {p.name: p.read_bytes() for p in uninterrupted.iterdir() if p.is_file()}
    weights = (uninterrupted / "dictionary" / "sae_weights.safetensors").read_bytes()
    with pytest.raises(OutputExists):
        claim_output(uninterrupted)
    code = main(["train", str(ROOT / "train" / "demo.toml"), "--out", str(uninterrupted), "--set", "n_tokens=2048"])
    assert code == 2
    assert {p.name: p.read_bytes() for p in uninterrupted.iterdir() if p.is_file()} == before
    assert (uninterrupted / "dictionary" / "sae_weights.safetensors").read_bytes() == weights
    # --resume on a finished run does nothing; --resume with another recipe is refused
    args, env = _args(uninterrupted, "--resume")
    r = subprocess.run(args, env=env, timeout=240, capture_output=True, text=True)
    assert r.returncode == 0 and "already finished" in r.stdout, r.stderr
    args, env = _args(uninterrupted, "--resume", sets=["k=4"])
    r = subprocess.run(args, env=env, timeout=240, capture_output=True, text=True)
    assert r.returncode == 2 and "'k'" in r.stderr and "records another recipe" in r.stderr, r.stderr


def test_claim_output_rules(tmp_path, capsys):
    out = claim_output(tmp_path / "new", what="report")
    assert (out / MARKER).is_file()
    (out / "report.md").write_text("x")
    with pytest.raises(OutputExists, match=r"already holds a report; pass --overwrite"):
        claim_output(out, what="report")
    with pytest.raises(OutputExists, match=r"--resume to continue it, --overwrite"):
        claim_output(out, what="report", can_resume=True)
    assert claim_output(out, resume=True) == out and (out / "report.md").exists()
    claim_output(out, overwrite=True)
    assert not (out / "report.md").exists()
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(OutputExists, match="did not write"):
        claim_output(foreign, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"
    with pytest.raises(ValueError, match="contradict"):
        claim_output(out, overwrite=True, resume=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputExists, match="is a file"):
        claim_output(tmp_path / "file")


@pytest.mark.timeout(120)
def test_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text("training run\n")
    (run / "metrics.jsonl").write_text('{"step": 2, "loss": 1.0}\n{"step": 4, "lo')  # killed mid-line
    code = main(["train", str(ROOT / "train" / "demo.toml"), "--out", str(run), "--resume", *sum(
        (["--set", s] for s in SETS), [])])
    err = capsys.readouterr().err
    assert code == 2 and "no checkpoint" in err and "--overwrite" in err
    assert (run / "metrics.jsonl").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.timeout(400)
def test_a_signal_checkpoints_and_says_how_to_resume(sig, uninterrupted, tmp_path):
    out = tmp_path / "run"
    args, env = _args(out)  # checkpoint_every = 0: the interruption writes the only checkpoint
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for_training(proc, out, time.time() + 200), "training never started"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last and "--resume" in last and str(out) in last, err
    assert "Traceback" not in err
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert 0 < state["step"] < 48 and not (out / "dictionary").exists()
    args, env = _args(out, "--resume")
    subprocess.run(args, env=env, check=True, timeout=240, capture_output=True)
    _same(_tensors(out), _tensors(uninterrupted))
    assert not (out / "checkpoint").exists()


def _logged_step(out):
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return max((json.loads(x)["step"] for x in lines if x.endswith("}")), default=0)
    except (OSError, ValueError):
        return 0


@pytest.mark.timeout(600)
def test_sigkill_at_random_points_then_resume_is_bit_identical(uninterrupted, tmp_path):
    """Kill the run four times at random points (seeded; printed): once during start-up,
    then at a random training step plus a random few milliseconds (so some kills land
    inside a checkpoint write), each time continuing as a user would (--resume when a
    checkpoint exists, else --overwrite); then let it finish."""
    rng = random.Random(16)
    out = tmp_path / "run"
    trials = []
    for trial in range(4):
        started = (out / "checkpoint").exists() or (out / "dictionary").exists()
        flag = ["--resume"] if started else (["--overwrite"] if out.exists() else [])
        args, env = _args(out, *flag, sets=["checkpoint_every=1024"])
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if trial == 0:
            target, delay = 0, rng.uniform(0.5, 4.0)
        else:
            target, delay = _logged_step(out) + rng.randint(1, 5) * 2, rng.uniform(0.0, 0.02)
            deadline = time.time() + 200
            while proc.poll() is None and time.time() < deadline and _logged_step(out) < target:
                time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        ckpt = out / "checkpoint" / "state.json"
        step = json.loads(ckpt.read_text())["step"] if ckpt.exists() else None
        trials.append({"flags": flag, "kill at step": target, "+s": round(delay, 3), "checkpoint": step})
        # never a half-written checkpoint or dictionary presented as complete
        if (out / "checkpoint").exists():
            assert {p.name for p in (out / "checkpoint").iterdir()} == {"state.json", "state.safetensors"}
        assert not (out / "dictionary").exists() or (out / "dictionary" / "cfg.json").is_file()
    print("kill trials:", trials)
    assert sum(t["checkpoint"] is not None for t in trials) >= 2, trials  # most kills landed mid-training
    started = (out / "checkpoint").exists() or (out / "dictionary").exists()
    flag = ["--resume"] if started else (["--overwrite"] if out.exists() else [])
    args, env = _args(out, *flag, sets=["checkpoint_every=1024"])
    subprocess.run(args, env=env, check=True, timeout=240, capture_output=True)
    _same(_tensors(out), _tensors(uninterrupted))


def test_default_output_directories_do_not_collide():
    from saekit.cli import build_parser
    from saekit.demo import default_out
    from saekit.training.recipe import default_out as train_out

    ap = build_parser()
    outs = {"demo": default_out(DEMO_LM), "train demo.toml": train_out("train/demo.toml")}
    for argv in (["compare", "d", "--model", "m"], ["toy"], ["interp", "d", "--model", "m"]):
        outs[argv[0]] = ap.parse_args(argv).out
    outs["eval"] = "runs/eval/sensitivity"
    paths = [str(p) for p in outs.values()]
    assert len(set(paths)) == len(paths), outs
    for a in paths:
        for b in paths:
            assert a == b or not b.startswith(a + "/"), (a, b)


@pytest.mark.timeout(400)
def test_an_snmf_recipe_stops_on_sigint_and_resumes_to_the_same_dictionary(tmp_path):
    sets = [f'model="{DEMO_LM}"', "n_tokens=8192", "d_dict=48", "eval_tokens=0", "checkpoint_every=1",
            "options.stop_gain=0.0", "options.max_iter=60"]

    def args(out, *extra):
        cmd = [sys.executable, "-m", "saekit.cli", "train", str(ROOT / "train" / "demo_snmf.toml"), "--out", str(out)]
        return cmd + sum((["--set", s] for s in sets), []) + list(extra)

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    subprocess.run(args(tmp_path / "full"), env=env, check=True, timeout=240, capture_output=True)
    out = tmp_path / "run"
    proc = subprocess.Popen(args(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 200
    while proc.poll() is None and time.time() < deadline and not (out / "checkpoint" / "state.json").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err.strip().splitlines()[-1] and "Traceback" not in err, err
    assert (out / "checkpoint").exists() and not (out / "dictionary").exists()
    subprocess.run(args(out, "--resume"), env=env, check=True, timeout=240, capture_output=True)
    _same(_tensors(out), _tensors(tmp_path / "full"))
    a = saekit.load_dictionary(out / "dictionary").cfg.metadata
    b = saekit.load_dictionary(tmp_path / "full" / "dictionary").cfg.metadata
    assert a["iterations"] == b["iterations"] and a["rel_error"] == b["rel_error"]


def test_no_shipped_file_names_a_machine_path():
    """Shipped files record paths relative to the repository (or specs as given), never
    this checkout's absolute path or a home directory."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout.split()
    if not tracked:  # not a git checkout (an sdist): every file below the repository
        tracked = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]
    bad = []
    for name in tracked:
        path = ROOT / name
        if (path.suffix not in (".json", ".jsonl", ".md", ".toml", ".csv", ".html", ".txt", ".py")
                or not path.is_file() or path.resolve() == Path(__file__).resolve()):
            continue
        text = path.read_text(errors="replace")
        if str(ROOT) + "/" in text or "/home/" in text or "/root/" in text:
            bad.append(name)
    assert not bad, bad


def test_a_model_inside_the_repository_is_recorded_relative_to_it(demo_model):
    from saekit.models import REPO, model_name, portable_spec

    assert portable_spec(REPO / "checkpoints" / "demo-lm") == "checkpoints/demo-lm"
    assert portable_spec("/elsewhere/model") == "/elsewhere/model" and portable_spec("gpt2") == "gpt2"
    if DEMO_LM.resolve().is_relative_to(REPO):
        assert model_name(demo_model) == "checkpoints/demo-lm"
    cwd = os.getcwd()
    try:  # a relative spec recorded in a file loads from anywhere
        os.chdir("/")
        assert saekit.load_model("checkpoints/demo-lm").cfg.d_model == demo_model.cfg.d_model
    finally:
        os.chdir(cwd)


@pytest.mark.timeout(300)
def test_train_from_python_returns_the_dictionaries(tmp_path):
    sets = [*SETS, "n_tokens=4096", "sweep=[{k = 4}, {k = 8}]"]
    out = saekit.train(ROOT / "train" / "demo.toml", out=tmp_path / "run", overrides=sets)
    assert sorted(p.name for p in out) == ["blocks.2.mlp.hook_post__k=4", "blocks.2.mlp.hook_post__k=8"]
    assert [d.cfg.k for _, d in sorted(out.items())] == [4, 8]
    for run_dir, d in out.items():
        _same(d.saelens_tensors(), _tensors(run_dir))
    with pytest.raises(OutputExists, match="--resume"):
        saekit.train(ROOT / "train" / "demo.toml", out=tmp_path / "run", overrides=sets)
    again = saekit.train(ROOT / "train" / "demo.toml", out=tmp_path / "run", overrides=sets, resume=True)
    assert again.keys() == out.keys()
