"""Crash consistency and full-disk behaviour of saekit's writers ("nothing lost, nothing
corrupt accepted").

Every job runs in a real child process that is killed with SIGKILL at random points (a
seeded RNG; the delays are printed), then rerun; the result must equal an uninterrupted
run's byte for byte, and no half-written file may ever be read as complete. Full disks
are simulated with ``RLIMIT_FSIZE`` in the child (SIGXFSZ ignored, so writes fail with
EFBIG, the way ENOSPC fails them), which needs no root; a tmpfs variant with a real
ENOSPC runs too where mounting is allowed.

The children are forked from one "zygote" process that has imported torch and loaded
the demo LM once, so a trial costs a fork rather than a 5 s model load. The zygote (not
the test) sends the SIGKILL, so the kill never depends on the test's own scheduling.
"""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
DEMO_LM = Path(os.environ.get("SAEKIT_TEST_DEMO_LM", ROOT / "checkpoints" / "demo-lm"))
TOPK = ROOT / "checkpoints" / "demo-topk"
RNG_SEED = 20261205
TRIALS = 4  # kills per job spread over the run (the harvest and collect add 2 aimed at commits)

# --------------------------------------------------------------------------- the zygote

ZYGOTE = textwrap.dedent(r'''
    import json, os, resource, signal, sys, time, traceback

    reply = os.fdopen(os.dup(1), "w")  # replies on the real stdout; library prints go to stderr
    os.dup2(2, 1)
    import torch

    torch.set_num_threads(1)
    import saekit
    from saekit.activations import CacheWriter
    from saekit.data import text_convention
    from saekit.fileio import atomic_directory, atomic_write_bytes
    from saekit.interp.llm import LLMClient
    from saekit.interp.store import FeatureStore, collect
    from saekit.models import hook_width, model_name, model_processing

    DEMO_LM, TOPK = sys.argv[1], sys.argv[2]
    MODEL = saekit.load_model(DEMO_LM, device="cpu")
    DICT = saekit.load_dictionary(TOPK)
    HOOKS = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]
    CTX = 64
    TOKENS = {}

    def tokens(n_tokens, seed):
        if (n_tokens, seed) not in TOKENS:
            TOKENS[n_tokens, seed] = saekit.load_tokens("demo", MODEL, n_tokens, CTX, seed=seed)
        return TOKENS[n_tokens, seed]

    T0 = 0.0  # when the zygote forked the running child (time.monotonic())
    MARK_FD = None  # the child tells the zygote "a commit starts now" with one byte here

    def traced(cls, name, windows):
        """Record when ``cls.name`` runs, as (start, end) seconds since the fork, and signal
        each start to the zygote; used only to aim some kills at the commit phase (fsyncs,
        renames) of a writer."""
        inner = getattr(cls, name)

        def wrapper(*a, **k):
            start = time.monotonic() - T0
            os.write(MARK_FD, b"m")
            try:
                return inner(*a, **k)
            finally:
                windows.append((start, time.monotonic() - T0))
        setattr(cls, name, wrapper)

    def harvest(out, n_tokens, seed=0, overwrite=False, shard_tokens=256, batch_size=2, trace=False):
        """What `saekit harvest` does (cli._cmd_harvest), on the preloaded model."""
        windows = []
        if trace:
            traced(CacheWriter, "close", windows)
        widths = {h: hook_width(MODEL, h) for h in HOOKS}
        with CacheWriter(out, widths, model=model_name(MODEL), processing=model_processing(MODEL),
                         data="demo", dtype=torch.float32, shard_tokens=shard_tokens, ctx_len=CTX,
                         extra={"text": text_convention(MODEL)}, overwrite=overwrite) as writer:
            for batch in saekit.iter_harvest(MODEL, HOOKS, tokens(n_tokens, seed), batch_size, device="cpu"):
                writer.add(batch)
            writer.close()
        return {"windows": windows}

    def store(out, n_tokens=4096, seed=3, checkpoint_every=1, batch_size=2, resume=True, trace=False):
        windows = []
        if trace:
            traced(FeatureStore, "save", windows)
        s = collect(MODEL, DICT, tokens(n_tokens, 5), top_k=4, n_samples=4, batch_size=batch_size, seed=seed,
                    out=out, resume=resume, checkpoint_every=checkpoint_every)
        return {"complete": s.complete, "n_tokens": s.n_tokens, "windows": windows}

    def store_save(out, seed):
        s = collect(MODEL, DICT, tokens(1024, 5), top_k=4, n_samples=4, batch_size=8, seed=seed)
        s.save(out)

    def llm(url, cache_dir, n, record_warnings=False):
        client = LLMClient(url, "judge", cache_dir=cache_dir, max_concurrency=4, timeout=30, max_retries=0)
        if not record_warnings:
            return client.chat_many([f"describe feature {i}" for i in range(n)])
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            answers = client.chat_many([f"describe feature {i}" for i in range(n)])
        return {"answers": answers, "warnings": [str(w.message) for w in caught]}

    def write_bytes(path, n):
        atomic_write_bytes(path, b"n" * n)

    def write_dir(path, n):
        with atomic_directory(path) as tmp:
            (tmp / "a.bin").write_bytes(b"n" * n)
            (tmp / "sub").mkdir()
            (tmp / "sub" / "b.txt").write_text("new")

    def dict_save(path):
        DICT.save(path)

    JOBS = {f.__name__: f for f in (harvest, store, store_save, llm, write_bytes, write_dir, dict_save)}
    from pathlib import Path  # noqa: E402  (jobs take str paths; the writers take either)

    def child(cmd, w, mark):
        global MARK_FD
        MARK_FD = mark
        try:
            if cmd.get("fsize"):
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (cmd["fsize"], resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            out = {"ok": True, "value": JOBS[cmd["job"]](**cmd["args"])}
        except BaseException as e:
            out = {"ok": False, "type": type(e).__name__, "mro": [c.__name__ for c in type(e).__mro__],
                   "message": str(e), "errno": getattr(e, "errno", None),
                   "filename": getattr(e, "filename", None), "traceback": traceback.format_exc()}
        data = json.dumps(out).encode()
        while data:
            data = data[os.write(w, data):]
        os._exit(0)

    for n_tokens, seed in ((8192, 0), (4096, 1), (2048, 1), (1024, 2), (256, 2), (4096, 5), (1024, 5)):
        tokens(n_tokens, seed)  # once here, not in every child
    reply.write(json.dumps({"ready": True}) + "\n")
    reply.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        r, w = os.pipe()
        mr, mw = os.pipe()
        os.set_blocking(mr, False)
        t0 = T0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.close(mr)
            child(cmd, w, mw)
        os.close(w)
        os.close(mw)
        killed, kill_after, kill_mark, marks = False, cmd.get("kill_after"), cmd.get("kill_mark"), 0
        start = t0 if kill_mark is None else None  # the kill timer starts at the fork or at a mark
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if start is None:
                try:
                    marks += len(os.read(mr, 4096))
                except BlockingIOError:
                    pass
                if marks >= kill_mark:
                    start = time.monotonic()
            if kill_after is not None and start is not None and time.monotonic() - start >= kill_after:
                os.kill(pid, signal.SIGKILL)
                killed = True
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.001)
        elapsed = time.monotonic() - t0
        os.close(mr)
        chunks = []
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)
        os.close(r)
        result = json.loads(b"".join(chunks)) if chunks else None
        reply.write(json.dumps({"pid": pid, "killed": killed, "elapsed": elapsed, "result": result}) + "\n")
        reply.flush()
''')


class Zygote:
    """A process with torch and the demo LM loaded that forks one child per job."""

    def __init__(self, log: Path):
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                   PYTHONPATH=str(ROOT))
        self.log = open(log, "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(DEMO_LM), str(TOPK)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.logpath = log
        ready = self.proc.stdout.readline()
        assert ready, f"the zygote died: {log.read_text()[-3000:]}"

    def run(self, job: str, *, kill_after: float | None = None, kill_mark: int | None = None,
            fsize: int | None = None, **args) -> dict:
        """Run ``job(**args)`` in a fresh child; SIGKILL it ``kill_after`` seconds after the
        fork, or after the ``kill_mark``-th commit it starts (jobs run with trace=True)."""
        args = {k: str(v) if isinstance(v, Path) else v for k, v in args.items()}
        cmd = {"job": job, "args": args, "kill_after": kill_after, "kill_mark": kill_mark, "fsize": fsize}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the zygote died: {self.logpath.read_text()[-3000:]}"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote") / "zygote.log")
    yield z
    z.close()


def ok(out: dict) -> dict:
    """The value of a job that must have finished."""
    assert not out["killed"] and out["result"] is not None, out
    assert out["result"]["ok"], out["result"].get("traceback")
    return out["result"]["value"]


def temporaries(parent: Path) -> list[str]:
    """Leftovers of saekit's writers: partial/old/tmp siblings (hidden or, as older cache
    writers named them, not)."""
    return sorted(p.name for p in parent.iterdir() if any(s in p.name for s in (".partial-", ".old-", ".tmp")))


def tree_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def delays(rng: random.Random, total: float, n: int = TRIALS) -> list[float]:
    """Kill times spread over the job: one per equal slice of [3%, 103%] of an uninterrupted
    run's duration (the last slice straddles the end: the final fsyncs and the rename)."""
    lo, hi = 0.03 * total, 1.03 * total
    step = (hi - lo) / n
    return [round(lo + step * (i + rng.random()), 4) for i in range(n)]


def aimed(rng: random.Random, windows: list[list[float]], n: int = 2) -> list[tuple[int, float]]:
    """``(kill_mark, kill_after)`` pairs that kill inside a commit phase (``windows``: the
    (start, end) seconds of the writer's close/save calls in an uninterrupted run): the
    timer starts when the child enters commit number ``kill_mark``, so the kill lands in
    its fsyncs and renames however loaded the machine is (give or take the jitter)."""
    out = []
    for _ in range(n):
        i = rng.randrange(len(windows))
        out.append((i + 1, round(rng.uniform(0, windows[i][1] - windows[i][0]), 4)))
    return out


# --------------------------------------------------------------------------- activation cache


def cache_state(path: Path) -> dict[str, bytes]:
    """A cache's files with the manifest's ``created`` timestamp (its only clock field) blanked."""
    from saekit.activations import ActivationCache

    cache = ActivationCache(path)
    assert cache.verify() == [], f"{path} is published but not a valid cache"
    files = tree_bytes(path)
    manifest = json.loads(files["manifest.json"])
    assert manifest["created"]
    manifest["created"] = None
    files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return files


@pytest.mark.timeout(150)
def test_harvest_killed_at_random_points_reruns_to_identical_cache(zygote, tmp_path):
    ref = zygote.run("harvest", out=tmp_path / "ref", n_tokens=8192, trace=True)
    windows = ok(ref)["windows"]
    want, T = cache_state(tmp_path / "ref"), ref["elapsed"]
    ok(zygote.run("harvest", out=tmp_path / "prev", n_tokens=4096, seed=1))
    previous = cache_state(tmp_path / "prev")
    rng = random.Random(RNG_SEED)
    report = []
    for trial, (mark, delay) in enumerate([(None, d) for d in delays(rng, T, 3)] + aimed(rng, windows)):
        overwrite = trial % 2 == 1  # odd trials replace an existing (different) cache
        work = tmp_path / f"t{trial}"
        work.mkdir()
        out = work / "cache"
        if overwrite:
            ok(zygote.run("harvest", out=out, n_tokens=4096, seed=1))
        run = zygote.run("harvest", out=out, n_tokens=8192, overwrite=overwrite, kill_after=delay, kill_mark=mark,
                         trace=True)
        # After the kill, the cache is absent, the previous one, or the complete new one.
        if out.exists():
            state = cache_state(out)
            seen = "new" if state == want else "previous" if state == previous else "OTHER"
            assert seen != "OTHER", "a killed harvest left a cache that is neither the old nor the new one"
        else:
            seen = "absent"
            assert not overwrite, "a killed overwrite lost the previous cache"
        left = temporaries(work)
        # The same command again (with --overwrite when it replaces a cache, as the user would).
        again = zygote.run("harvest", out=out, n_tokens=8192, overwrite=overwrite or seen == "new")
        ok(again)
        assert cache_state(out) == want, f"trial {trial}: the rerun differs from an uninterrupted harvest"
        assert temporaries(work) == [], f"trial {trial}: stale temporaries not cleaned: {temporaries(work)}"
        when = f"{delay:.3f}s of {T:.3f}s" if mark is None else f"{delay:.3f}s into close()"
        report.append(f"trial {trial}: kill at {when} ({'overwrite' if overwrite else 'fresh'}), "
                      f"killed={run['killed']}, cache after kill: {seen}, temporaries left: {len(left)}")
    print("\n".join(report))


@pytest.mark.timeout(60)
def test_stale_cache_temporaries_are_cleaned_but_live_writers_kept(tmp_path):
    """Temporaries of dead writers go when a new write of the same name starts; a live
    writer's (this process, another process) stay; a parked old cache comes back."""
    import torch

    from saekit.activations import ActivationCache, CacheWriter

    dead = dead_pid()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        name = "cache"
        for pid, tag in ((dead, "dead"), (sleeper.pid, "live"), (os.getpid(), "self")):
            d = tmp_path / f".{name}.partial-{pid}-{tag:_<8}"
            (d / "h").mkdir(parents=True)
            (d / "h" / "shard_00000.safetensors").write_bytes(b"x")
        (tmp_path / f"{name}.partial-{dead}-legacy__").mkdir()     # the older writers' name
        (tmp_path / f"{name}.old-2024-01-05").mkdir()               # a user's folder, not ours
        (tmp_path / f".{name}.partial-{dead}").mkdir()              # no random suffix: not ours
        first = CacheWriter(tmp_path / name, {"h": 4}, model="m", processing="raw", data="d")
        second = CacheWriter(tmp_path / name, {"h": 4}, model="m", processing="raw", data="d", overwrite=True)
        names = sorted(p.name for p in tmp_path.iterdir())
        assert f".{name}.partial-{dead}-dead____" not in names and f"{name}.partial-{dead}-legacy__" not in names
        for kept in (f".{name}.partial-{sleeper.pid}-live____", f".{name}.partial-{os.getpid()}-self____",
                     f"{name}.old-2024-01-05", f".{name}.partial-{dead}", first._tmp.name, second._tmp.name):
            assert kept in names, f"{kept} was removed"
        # Two live writers of one name: both finish; the second replaces the first.
        first.add({"h": torch.ones(3, 4)})
        second.add({"h": torch.zeros(5, 4)})
        first.close()
        second.close()
        assert ActivationCache(tmp_path / name).n_tokens == 5
        # A writer killed between the two renames of a non-atomic replace parks the old
        # cache as .NAME.old-<pid>-<hex>; the next writer puts it back before anything else.
        os.rename(tmp_path / name, tmp_path / f".{name}.old-{dead}-0badf00d")
        with pytest.raises(FileExistsError):
            CacheWriter(tmp_path / name, {"h": 4}, model="m", processing="raw", data="d")
        assert ActivationCache(tmp_path / name).n_tokens == 5
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.timeout(60)
def test_atomic_directory_cleans_stale_and_replaces_in_one_step(tmp_path, monkeypatch):
    from saekit import fileio

    dead = dead_pid()
    target = tmp_path / "ckpt"
    with fileio.atomic_directory(target) as tmp:
        (tmp / "state.json").write_text("1")
    (tmp_path / f".ckpt.partial-{dead}-abcdefgh").mkdir()
    (tmp_path / f".ckpt.partial-{os.getpid()}-abcdefgh").mkdir()   # a live writer's: kept
    (tmp_path / f".ckpt.tmp-{dead}-0123abcd").write_bytes(b"half")
    with fileio.atomic_directory(target) as tmp:
        (tmp / "state.json").write_text("2")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.bin").write_bytes(b"x")
    assert temporaries(tmp_path) == [f".ckpt.partial-{os.getpid()}-abcdefgh"]
    assert (target / "state.json").read_text() == "2" and (target / "sub" / "x.bin").read_bytes() == b"x"
    # Where the kernel cannot exchange two paths, two renames with the old one parked.
    monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
    with fileio.atomic_directory(target) as tmp:
        (tmp / "state.json").write_text("3")
    assert (target / "state.json").read_text() == "3"
    # An exception in the block leaves the old directory and no temporary.
    with pytest.raises(RuntimeError), fileio.atomic_directory(target) as tmp:
        (tmp / "state.json").write_text("4")
        raise RuntimeError("boom")
    assert (target / "state.json").read_text() == "3"
    assert temporaries(tmp_path) == [f".ckpt.partial-{os.getpid()}-abcdefgh"]


@pytest.mark.timeout(60)
def test_atomic_write_cleans_dead_writers_tmp_files(tmp_path):
    from saekit.fileio import atomic_write_bytes, atomic_write_text

    dead = dead_pid()
    stale = [tmp_path / f".f.bin.tmp-{dead}-0123abcd", tmp_path / f".other.json.tmp-{dead}"]  # any name, old form too
    live = tmp_path / f".g.json.tmp-{os.getpid()}-0123abcd"
    for p in [*stale, live]:
        p.write_bytes(b"half")
    (tmp_path / "notes.tmp-1").write_bytes(b"user")  # not hidden: not ours
    atomic_write_bytes(tmp_path / "f.bin", b"new")
    atomic_write_text(tmp_path / "g.json", "{}")
    assert (tmp_path / "f.bin").read_bytes() == b"new" and (tmp_path / "g.json").read_text() == "{}"
    assert not any(p.exists() for p in stale) and live.exists() and (tmp_path / "notes.tmp-1").exists()


# --------------------------------------------------------------------------- feature store


@pytest.mark.timeout(200)
def test_collect_killed_at_random_points_resumes_to_identical_store(zygote, tmp_path):
    from saekit.interp.store import FeatureStore

    ref = zygote.run("store", out=tmp_path / "ref", trace=True)
    assert ok(ref)["complete"]
    want, T, windows = tree_bytes(tmp_path / "ref"), ref["elapsed"], ok(ref)["windows"]
    rng = random.Random(RNG_SEED + 1)
    report = []
    for trial, (mark, delay) in enumerate([(None, d) for d in delays(rng, T, 3)] + aimed(rng, windows)):
        work = tmp_path / f"t{trial}"
        work.mkdir()
        out = work / "store"
        run = zygote.run("store", out=out, kill_after=delay, kill_mark=mark, trace=True)
        if out.exists():
            # Whatever is there after a kill loads cleanly (a consistent pair of files).
            part = FeatureStore.load(out)
            seen = f"{'complete' if part.complete else 'partial'} store at window {part.manifest['next_window']}"
        else:
            seen = "no store yet"
        left = temporaries(work)
        resumed = ok(zygote.run("store", out=out))
        assert resumed["complete"]
        assert tree_bytes(out) == want, f"trial {trial}: the resumed store differs from an uninterrupted collect"
        assert temporaries(work) == [], f"trial {trial}: stale temporaries not cleaned: {temporaries(work)}"
        when = f"{delay:.3f}s of {T:.3f}s" if mark is None else f"{delay:.3f}s into save #{mark}"
        report.append(f"trial {trial}: kill at {when}, killed={run['killed']}, after kill: {seen}, temporaries left: {len(left)}")
    print("\n".join(report))


@pytest.mark.timeout(120)
def test_collect_starts_over_from_a_damaged_store(zygote, tmp_path):
    """A store whose tensors and manifest disagree (left by an older per-file save killed
    between its two renames) is never resumed from: collect warns and starts over."""
    ref = tmp_path / "ref"
    ok(zygote.run("store", out=ref, n_tokens=1024, checkpoint_every=1000))
    out = tmp_path / "s"
    ok(zygote.run("store", out=out, n_tokens=1024, seed=4, checkpoint_every=1000))
    (out / "store.safetensors").write_bytes((ref / "store.safetensors").read_bytes())  # new tensors, old manifest
    assert ok(zygote.run("store", out=out, n_tokens=1024, checkpoint_every=1000))["complete"]
    assert tree_bytes(out) == tree_bytes(ref)


# --------------------------------------------------------------------------- LLM answer cache


def _answer(body: dict) -> str:
    return "answer: " + body["messages"][-1]["content"].upper()


def cache_entries(cache: Path) -> dict[str, dict]:
    """Every published entry, which must be a whole JSON document with a usable answer."""
    out = {}
    for p in sorted(cache.rglob("*.json")):
        entry = json.loads(p.read_text(encoding="utf-8"))  # a truncated entry would fail here
        assert entry["response"]["choices"][0]["message"]["content"] == _answer(entry["request"])
        out[p.name] = entry
    return out


@pytest.mark.timeout(120)
def test_llm_batch_killed_at_random_points_reruns_to_identical_answers(zygote, tmp_path):
    from llm_server import ScriptedServer

    n = 40
    with ScriptedServer(_answer, delay=0.01) as server:
        ref = zygote.run("llm", url=server.url, cache_dir=tmp_path / "ref", n=n)
        want, T = ok(ref), ref["elapsed"]
        assert want == [f"answer: DESCRIBE FEATURE {i}" for i in range(n)]
        rng = random.Random(RNG_SEED + 2)
        report = []
        for trial, delay in enumerate(delays(rng, T)):
            cache = tmp_path / f"c{trial}"
            run = zygote.run("llm", url=server.url, cache_dir=cache, n=n, kill_after=delay)
            cached = cache_entries(cache) if cache.exists() else {}
            tmps = list(cache.rglob("*.tmp")) if cache.exists() else []
            sent = len(server.requests)
            assert ok(zygote.run("llm", url=server.url, cache_dir=cache, n=n)) == want
            resent = len(server.requests) - sent
            assert resent == n - len(cached), "the rerun must ask exactly for the answers not cached"
            assert len(cache_entries(cache)) == n and not list(cache.rglob("*.tmp"))
            assert not list(cache.rglob(".*.tmp-*")), "the rerun removes the killed writer's temporaries"
            report.append(f"trial {trial}: kill at {delay:.3f}s of {T:.3f}s, killed={run['killed']}, "
                          f"entries cached {len(cached)}/{n}, .tmp left {len(tmps)}, rerun sent {resent}")
        print("\n".join(report))

        # A partly written or damaged entry is a miss, and temporaries of dead writers go.
        cache = tmp_path / "c0"
        files = sorted(cache.rglob("*.json"))
        truncated, hollow = files[0], files[1]
        truncated.write_bytes(truncated.read_bytes()[:-7])
        entry = json.loads(hollow.read_text())
        entry["response"] = {"choices": []}
        hollow.write_text(json.dumps(entry))
        dead = dead_pid()
        stale = [truncated.parent / f".{truncated.stem[:16]}.{dead}-abcdefgh.tmp",
                 hollow.parent / f".{hollow.stem[:16]}.zyxwvuts.tmp"]  # an older writer's name, aged
        for p in stale:
            p.write_bytes(b'{"request": ')
        old = time.time() - 7200
        os.utime(stale[1], (old, old))
        live = truncated.parent / f".{truncated.stem[:16]}.{os.getpid()}-abcdefgh.tmp"
        live.write_bytes(b"{")
        sent = len(server.requests)
        assert ok(zygote.run("llm", url=server.url, cache_dir=cache, n=n)) == want
        assert len(server.requests) - sent == 2, "a truncated or answerless entry must be asked again"
        assert not any(p.exists() for p in stale) and live.exists()
        live.unlink()
        assert len(cache_entries(cache)) == n


# --------------------------------------------------------------------------- full disk


def assert_disk_full(out: dict, path: Path) -> None:
    res = out["result"]
    assert res is not None and not res["ok"], f"the write should have failed: {out}"
    assert "DiskFullError" in res["mro"] and "OSError" in res["mro"], res["traceback"]
    assert res["errno"] in (errno.EFBIG, errno.ENOSPC, errno.EDQUOT)
    assert str(path) in res["message"] and "no space" in res["message"], res["message"]
    assert "disk full or quota exceeded" in res["message"], res["message"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("writer", ["atomic_write_bytes", "atomic_directory", "dictionary_save",
                                    "cache_writer", "store_save"])
def test_full_disk_keeps_previous_state_and_says_so(zygote, tmp_path, writer):
    """RLIMIT_FSIZE in the child: the write fails with EFBIG part way through, as it would
    with ENOSPC; the previous version stays, no temporary is left, the error is clear."""
    work = tmp_path / "work"
    work.mkdir()
    if writer == "atomic_write_bytes":
        path, job, args, limit = work / "f.bin", "write_bytes", {"n": 1 << 20}, 1 << 16
        path.write_bytes(b"old")
    elif writer == "atomic_directory":
        path, job, args, limit = work / "d", "write_dir", {"n": 1 << 20}, 1 << 16
        (path / "sub").mkdir(parents=True)
        (path / "a.bin").write_bytes(b"old")
    elif writer == "dictionary_save":
        path, job, args, limit = work / "dict", "dict_save", {}, 1 << 16
        path.mkdir()
        (path / "cfg.json").write_text("{}")
    elif writer == "cache_writer":
        path, job, limit = work / "cache", "harvest", 1 << 16
        args = {"n_tokens": 2048, "seed": 1, "overwrite": True}
        ok(zygote.run("harvest", out=path, n_tokens=1024, seed=2))
    else:
        path, job, args, limit = work / "store", "store_save", {"seed": 1}, 1 << 16
        ok(zygote.run("store_save", out=path, seed=0))
    before = tree_bytes(path) if path.is_dir() else path.read_bytes()
    out = zygote.run(job, fsize=limit, out=path, **args) if job in ("harvest", "store_save") else \
        zygote.run(job, fsize=limit, path=path, **args)
    assert_disk_full(out, path)
    assert (tree_bytes(path) if path.is_dir() else path.read_bytes()) == before, "the previous version changed"
    assert temporaries(work) == [], f"temporaries left behind: {temporaries(work)}"
    print(f"{writer}: {out['result']['type']}: {out['result']['message']}")


@pytest.mark.timeout(60)
def test_full_disk_llm_answers_still_returned_not_cached(zygote, tmp_path):
    """An answer is paid for: when its cache entry cannot be written the client returns
    it anyway, warns that it was not cached, and leaves no temporary file."""
    from llm_server import ScriptedServer

    cache = tmp_path / "cache"
    with ScriptedServer(_answer) as server:
        got = ok(zygote.run("llm", fsize=200, url=server.url, cache_dir=cache, n=3, record_warnings=True))
    assert got["answers"] == [f"answer: DESCRIBE FEATURE {i}" for i in range(3)]
    assert len(got["warnings"]) == 3 and all("disk full or quota exceeded" in w and "not cached" in w
                                             for w in got["warnings"]), got["warnings"]
    assert not [p for p in cache.rglob("*") if p.is_file()], "nothing (not even a temporary) may be left"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs (real ENOSPC), where this user may mount one (root in a container)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here; the RLIMIT_FSIZE variant covers full disks")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.timeout(120)
def test_full_tmpfs_keeps_previous_state(zygote, small_tmpfs):
    f, d, c = small_tmpfs / "f.bin", small_tmpfs / "d", small_tmpfs / "cache"
    f.write_bytes(b"old")
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(b"old")
    ok(zygote.run("harvest", out=c, n_tokens=256, seed=2))
    before = (tree_bytes(d), tree_bytes(c))
    assert_disk_full(zygote.run("write_bytes", path=f, n=4 << 20), f)
    assert_disk_full(zygote.run("write_dir", path=d, n=4 << 20), d)
    assert_disk_full(zygote.run("harvest", out=c, n_tokens=8192, overwrite=True), c)
    assert f.read_bytes() == b"old" and (tree_bytes(d), tree_bytes(c)) == before
    assert temporaries(small_tmpfs) == []
