"""A newcomer's first hour (issue 21): a bad value fails before any work, for every job
command; the docs stand alone; no stray noise in the output."""

from __future__ import annotations

import re
import time

import pytest
from conftest import ROOT

from saekit.cli import build_parser, main

TOPK = str(ROOT / "checkpoints" / "demo-topk")
LM = str(ROOT / "checkpoints" / "demo-lm")

#: (command line without --out, what the error must say). Each names the field and what it takes.
BAD = [
    (["train", "train/demo.toml", "--set", "k=sixteen"], r"key 'k' must be int \| None, got 'sixteen'"),
    (["train", "train/demo.toml", "--k", "sixteen"], r"--k: invalid int value: 'sixteen'"),
    (["train", "train/demo.toml", "--set", "device=gpu"], r"key 'device' must be 'auto', 'cpu', 'cuda'"),
    (["train", "train/demo.toml", "--set", "hook=blocks.9.mlp.hook_post"],
     r"--set hook=blocks.9.mlp.hook_post: key 'hook' names hook .* has 4 layers \(0\.\.3\)"),
    (["train", "train/demo.toml", "--set", "hook=blocks.1.mlp.hook_pots"], r"key 'hook' names hook .*valid: "),
    (["train", "train/demo.toml", "--set", "data=no-such-corpus.txt"], r"key 'data' names a text file"),
    (["train", "train/demo.toml", "--set", "model=checkpoints/nope"], r"key 'model' names a model directory"),
    (["train", "train/demo.toml", "--set", "kind=snmf", "--set", "stream=true"], r"kind 'snmf' is fitted by exact"),
    (["harvest", "--model", LM, "--hooks", "blocks.0.hook_resid_post", "--n-tokens", "64", "--set", "n_tokens=lots"],
     r"key 'n_tokens' must be int, got 'lots'"),
    (["harvest", "--model", LM, "--hooks", "blocks.0.hook_resid_post", "--n-tokens", "64", "--set", "dtype=float8"],
     r"key 'dtype' must be one of 'float32', 'float16', 'bfloat16'"),
    (["compare", TOPK, "--model", LM, "--set", "seeds=two"], r"key 'seeds' must be int, got 'two'"),
    (["compare", TOPK, "./no-such-dictionary", "--model", LM], r"key 'dictionaries' names a dictionary"),
    (["eval", "sensitivity", "--set", "batch_size=0"], r"key 'batch_size' must be >= 1, got 0"),
    (["eval", "steering", "--set", "seed=x"], r"key 'seed' must be int, got 'x'"),
    (["toy", "--set", "quick=maybe"], r"key 'quick' must be bool, got 'maybe'"),
    (["interp", TOPK, "--model", LM, "--features", "abc"], r"features must be a number, 'all' or a comma list"),
    (["interp", TOPK, "--model", LM, "--set", "n_samples=-1"], r"n_samples must be >= 0, got -1"),
    (["interp", TOPK, "--model", LM, "--set", "llm=maybe"], r"key 'llm' must be one of 'auto', 'on', 'off'"),
    (["demo", "--set", "n_tokens=lots"], r"key 'n_tokens' must be int \| None, got 'lots'"),
    (["convert", TOPK, "--to", "safetensors"], r"argument --to: invalid choice: 'safetensors'"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv,expected", BAD, ids=[f"{a[0]}-{i}" for i, (a, _) in enumerate(BAD)])
def test_a_bad_value_fails_before_any_work(argv, expected, tmp_path, capsys):
    """The error comes back in well under a second (a model load or a harvest takes
    longer), names the field and what it takes, and leaves no output directory behind."""
    build_parser()  # the commands' modules imported once, outside the timing
    import saekit.training.recipe  # noqa: F401  (imported by `saekit train` on its first call)
    out = tmp_path / "out"
    argv = argv + ([str(out)] if argv[0] == "convert" else ["--out", str(out)])
    start = time.perf_counter()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse: a flag's type or choices
        rc = e.code
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert rc == 2, err
    assert re.search(expected, err), err
    assert seconds < 1.0, f"{seconds:.2f} s: work started before the check"
    assert not out.exists()


# --------------------------------------------------------------------------- the docs stand alone


DOCS = ["README.md", "ARCHITECTURE.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]


@pytest.mark.timeout(30)
def test_the_docs_link_only_to_what_a_clone_has():
    """No link or mention of the shared folder outside the repository, and every relative
    Markdown link points at a file in the checkout."""
    texts = {name: (ROOT / name).read_text() for name in DOCS}
    code = {p.relative_to(ROOT).as_posix(): p.read_text() for p in (ROOT / "saekit").rglob("*.py")}
    for name, text in {**texts, **code}.items():
        assert "../shared" not in text and "shared/DESIGN" not in text, name
    for name, text in texts.items():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (ROOT / name).parent.joinpath(target).exists(), f"{name} links {target}, which is not in the repo"


@pytest.mark.timeout(30)
def test_the_readme_says_how_to_reach_the_command():
    """`saekit` is on PATH only inside the venv: the getting-started section says so."""
    readme = (ROOT / "README.md").read_text()
    start = readme[:readme.index("## A tour")]
    assert "source .venv/bin/activate" in start and ".venv/bin/saekit" in start


# --------------------------------------------------------------------------- noise


@pytest.mark.timeout(180)
def test_no_wandb_line_in_the_makefiles_runs(tmp_path):
    """`[INFO] Running in WANDB offline mode` was transformers' import-time print under the
    Makefile's WANDB_MODE=offline, reached through sentence-transformers (auto-interp) though
    nothing logs to wandb. Under the environment `make demo` sets, importing it is quiet,
    and a training log without a wandb project does not import wandb."""
    import os
    import subprocess
    import sys

    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("OFFLINE :="))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update(dict(item.split("=", 1) for item in line.split(":=", 1)[1].split()))
    code = ("import sys; from pathlib import Path; from saekit.training.metrics_log import MetricsLog; "
            f"log = MetricsLog(Path({str(tmp_path / 'm.jsonl')!r}), 0); log.write({{'step': 1}}); log.close(); "
            "import sentence_transformers; print('wandb imported:', 'wandb' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=170)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "WANDB" not in r.stdout + r.stderr, r.stdout
    assert "wandb imported: False" in r.stdout


# --------------------------------------------------------------------------- the hub probe and small wording


@pytest.mark.timeout(30)
def test_the_hub_probe_connects_once_to_hf_endpoint(monkeypatch):
    """A real TCP connect to the endpoint HF_ENDPOINT names (a listener on loopback here),
    remembered for the process; a closed port is no network; HF_HUB_OFFLINE skips the probe."""
    import socket

    from saekit import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}/")
    assert hub.endpoint() == f"http://127.0.0.1:{port}"
    assert hub.hub_state() == hub.HubState(True, "")
    listener.close()
    assert hub.hub_state().online  # remembered: one probe per endpoint and process
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed}")
    start = time.perf_counter()
    state = hub.hub_state()
    assert not state.online and f"127.0.0.1:{closed} cannot be reached" in state.reason
    assert time.perf_counter() - start < 5
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_state() == hub.HubState(False, "HF_HUB_OFFLINE is set")


@pytest.mark.timeout(30)
def test_path_like_names_and_plurals(tmp_path, monkeypatch):
    from saekit.hub import looks_like_path
    from saekit.schema import plural

    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    for spec in ("./x", "/abs/x", "~/x", "checkpoints/nope", "a/b/c", "bad name"):
        assert looks_like_path(spec), spec
    for spec in ("gpt2", "EleutherAI/pythia-70m", "smollm2-135m"):
        assert not looks_like_path(spec), spec
    assert [plural(n, "dictionary") for n in (0, 1, 2)] == ["0 dictionaries", "1 dictionary", "2 dictionaries"]
    assert (plural(1, "shard"), plural(3, "shard"), plural(2, "key"), plural(2, "index", "indices")) == (
        "1 shard", "3 shards", "2 keys", "2 indices")
