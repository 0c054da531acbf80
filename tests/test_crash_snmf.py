"""SNMF fits resume from checkpoints bit for bit, and survive SIGKILL at any point."""

import inspect
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import saekit
from saekit.training.snmf import fit_snmf

ROOT = Path(__file__).resolve().parents[1]
KILLS, TRIAL_SECONDS = 2, 6  # per trial: at most 2 kills, the second only within 6 s


def structured(n=3000, d=48, k=24, seed=0):
    """Signed data with sparse non-negative structure plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(k, d, generator=g) * (torch.rand(k, d, generator=g) < 0.3)
    G = torch.rand(n, k, generator=g) * (torch.rand(n, k, generator=g) < 0.2)
    return G @ W + 0.05 * torch.randn(n, d, generator=g)


class Interrupted(Exception):
    pass


class StopAfter(list):
    """A history list that raises on its ``at``-th record, as a crash would end the fit."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def append(self, record):
        if len(self) >= self.at:
            raise Interrupted
        super().append(record)


def tensors(d):
    return {**d.saelens_tensors(), **d.extra_tensors()}


def assert_same_fit(a, b, hist_a=None, hist_b=None):
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name
    untimed = lambda m: {k: v for k, v in m.items() if k != "fit_seconds"}
    assert untimed(a.cfg.metadata) == untimed(b.cfg.metadata)
    if hist_a is not None:
        strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
        assert strip(hist_a) == strip(hist_b)


def siblings(ck: Path):
    return sorted(p.name for p in ck.parent.glob(f".{ck.name}.*"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("codes, solver, init", [("memory", "hals", "kmeans"), ("memmap", "hals", "kmeans"),
                                                 ("recompute", "hals", "kmeans"), ("memory", "apg", "svd"),
                                                 ("memmap", "mu", "random")])
def test_a_fit_interrupted_twice_resumes_to_the_uninterrupted_result(tmp_path, codes, solver, init):
    A = structured()
    kw = dict(seed=1, codes=codes, solver=solver, init=init, chunk_tokens=1000, wta_fraction=0.25, max_iter=30)
    ref_hist = []
    ref = fit_snmf(A, 16, history=ref_hist, **kw)
    ck = tmp_path / "ck"
    for at in (3, 8):  # the second run resumes from the first's checkpoint, and is itself cut short
        with pytest.raises(Interrupted):
            fit_snmf(A, 16, history=StopAfter(at), checkpoint=ck, checkpoint_every=2, **kw)
        assert (ck / "state.json").is_file()
    assert json.loads((ck / "state.json").read_text())["next_pass"] == 8  # passes 0..7 done
    hist = []
    d = fit_snmf(A, 16, history=hist, checkpoint=ck, checkpoint_every=2, **kw)
    assert ref.cfg.metadata["iterations"] > 8
    assert_same_fit(ref, d, ref_hist, hist)
    assert not ck.exists() and siblings(ck) == []  # removed once the fit returned
    # the config records no checkpoint arguments
    assert "checkpoint" not in d.cfg.options and "checkpoint_every" not in d.cfg.options


@pytest.mark.timeout(60)
def test_a_checkpoint_of_another_fit_is_refused_by_name(tmp_path):
    A = structured()
    kw = dict(seed=1, chunk_tokens=1000, wta_fraction=0.25, max_iter=30)
    ck = tmp_path / "ck"
    with pytest.raises(Interrupted):
        fit_snmf(A, 16, history=StopAfter(2), checkpoint=ck, checkpoint_every=1, **kw)
    before = (ck / "state.json").read_text()
    for args, other, what in [((A, 12), kw, "d_dict"), ((A, 16), {**kw, "seed": 2}, "seed"),
                              ((A, 16), {**kw, "wta_fraction": 0.5}, "options"),
                              ((A, 16), {**kw, "kind": "nmf"}, "kind"),
                              ((A[:2500], 16), kw, "n_tokens"), ((structured(seed=5), 16), kw, "data_head")]:
        with pytest.raises(ValueError, match=rf"checkpoint {ck}.*different fit.*{what}"):
            fit_snmf(*args, checkpoint=ck, checkpoint_every=1, **other)
    assert (ck / "state.json").read_text() == before  # refused, not overwritten
    alien = tmp_path / "notes"
    alien.mkdir()
    (alien / "x.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"checkpoint {alien} exists but is not an SNMF checkpoint"):
        fit_snmf(A, 16, checkpoint=alien, checkpoint_every=1, **kw)
    (ck / "state.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match=rf"checkpoint {ck} cannot be read"):
        fit_snmf(A, 16, checkpoint=ck, checkpoint_every=1, **kw)
    with pytest.raises(ValueError, match="checkpoint_every"):
        fit_snmf(A, 16, checkpoint_every=1, **kw)



CHILD = textwrap.dedent("""
    import json, sys, time
    import torch
    torch.set_num_threads(1)
    from saekit.fileio import atomic_write_text
    from saekit.training.snmf import fit_snmf

    out, stores, ck, slow = sys.argv[1], sys.argv[2].split(","), sys.argv[3], float(sys.argv[4])
    if slow:  # stretch each checkpoint write, so that kills often land inside one
        import safetensors.torch as st
        save_file = st.save_file
        def slow_save(*a, **k):
            save_file(*a, **k)
            time.sleep(slow)
        st.save_file = slow_save
    {structured}
    A = structured()
    print("fitting", flush=True)
    for codes in stores:  # the fit, with a checkpoint after every pass, and its history
        t, hist = time.time(), []
        d = fit_snmf(A, 16, seed=1, codes=codes, chunk_tokens=1000, wta_fraction=0.25, max_iter=60,
                     history=hist, checkpoint=f"{{ck}}-{{codes}}", checkpoint_every=1)
        atomic_write_text(f"{{out}}-{{codes}}.history.json",
                          json.dumps([{{k: v for k, v in r.items() if k != "seconds"}} for r in hist]))
        d.save(f"{{out}}-{{codes}}")
        print(codes, time.time() - t, flush=True)
""")
CHILD = CHILD.format(structured=inspect.getsource(structured))


def child(out, codes, ck, slow=0.0):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(out), codes, str(ck), str(slow)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()  # after the imports: the fit starts now
    assert line.startswith("fitting"), p.communicate()[1]
    return p


def check_checkpoint(ck: Path, last_pass: int) -> int:
    """A checkpoint, if present, must be complete (a kill mid-write leaves the previous
    one or none); its pass counter never goes back. Returns it, or 0 when there is none
    (not yet written, or removed because the fit had returned when the kill came)."""
    if not ck.exists():  # killed between the write's two renames: the previous one is aside
        olds = [ck.parent / s for s in siblings(ck) if ".old-" in s]
        if not olds:
            return 0
        ck = olds[0]
    meta = json.loads((ck / "state.json").read_text())
    state = load_file(ck / "state.safetensors")
    assert {"W", "Q", "generator", "s_AA"} <= state.keys() and meta["strides"].keys() == state.keys()
    assert meta["next_pass"] >= last_pass and len(meta["records"]) == meta["next_pass"] - 1
    return meta["next_pass"]


@pytest.mark.timeout(120)
def test_sigkill_at_random_points_still_ends_with_the_uninterrupted_dictionary(tmp_path):
    """Each trial restarts a fit (child process) until it finishes, SIGKILLing it at
    random points up to ``KILLS`` times; half the trials stretch the checkpoint writes so
    that kills land inside them. The seed of the delays is printed (``-s``)."""
    p = child(tmp_path / "ref", "memory,memmap", tmp_path / "ref-ck")  # uninterrupted
    stdout, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    seconds = {line.split()[0]: float(line.split()[1]) for line in stdout.splitlines()}
    refs = {c: (saekit.load_dictionary(tmp_path / f"ref-{c}"),
                json.loads((tmp_path / f"ref-{c}.history.json").read_text())) for c in seconds}
    passes = refs["memory"][0].cfg.metadata["iterations"] + 1
    seed = 20260 + int(time.time()) % 1000
    rng = random.Random(seed)
    print(f"kill delays seeded with {seed}; uninterrupted fits took {seconds} s, {passes} passes")
    trials = [("memory", 0.03), ("memmap", 0.03), ("memory", 0.0), ("memmap", 0.0)]
    log = []
    for t, (codes, slow) in enumerate(trials):
        work = tmp_path / f"trial{t}"
        work.mkdir()
        out, ck = work / "dict", work / "ck"
        out_c, ck = Path(f"{out}-{codes}"), Path(f"{ck}-{codes}")
        kills, last, began = 0, 0, time.time()
        while True:
            p = child(out, codes, work / "ck", slow)
            # a loaded machine (slow imports) runs fewer kills, not a longer test
            killing = kills < KILLS and (kills == 0 or time.time() < began + TRIAL_SECONDS)
            delay = rng.uniform(0, 0.9 * (seconds[codes] + passes * slow))  # mostly before the end
            try:
                _, err = p.communicate(timeout=delay if killing else 60)
            except subprocess.TimeoutExpired:
                if not killing:
                    raise
                p.send_signal(signal.SIGKILL)
                p.communicate()
                kills += 1
                partial = [s for s in siblings(ck) if ".partial-" in s]
                assert len(siblings(ck)) <= 2  # the restart tidies the last kill's leftovers
                last = check_checkpoint(ck, last)
                log.append(f"trial {t} ({codes}, slow={slow}): killed after {delay:.2f} s, checkpoint at pass "
                           f"{last}" + (", inside a write" if partial else "")
                           + (", after the fit returned" if not last and Path(f"{out_c}.history.json").exists()
                              else ""))
                print(log[-1], flush=True)
                continue
            assert p.returncode == 0, err
            log.append(f"trial {t}: finished after {kills} kills")
            print(log[-1], flush=True)
            break
        d = saekit.load_dictionary(out_c)
        assert_same_fit(refs[codes][0], d, refs[codes][1],
                        json.loads(Path(f"{out_c}.history.json").read_text()))
        assert not ck.exists() and siblings(ck) == []  # nothing left behind
    assert sum("killed" in line for line in log) >= 4


GLOO_CHILD = textwrap.dedent("""
    import json, os, sys
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    from saekit.training.snmf import fit_snmf
    {helpers}
    A, ck = structured(), sys.argv[1]
    kw = dict(seed=1, codes="memmap", chunk_tokens=500, wta_fraction=0.25, max_iter=30)
    ref_hist, hist = [], []
    ref = fit_snmf(A, 16, history=ref_hist, **kw)
    try:
        fit_snmf(A, 16, history=StopAfter(8), checkpoint=ck, checkpoint_every=2, **kw)
    except Interrupted:
        pass
    dist.barrier()
    next_pass = json.loads(open(ck + "/state.json").read())["next_pass"]
    d = fit_snmf(A, 16, history=hist, checkpoint=ck, checkpoint_every=2, **kw)
    strip = lambda h: [{{k: v for k, v in r.items() if k != "seconds"}} for r in h]
    print(json.dumps({{"W_dec": torch.equal(ref.W_dec, d.W_dec), "history": strip(ref_hist) == strip(hist),
                      "next_pass": next_pass, "iterations": d.cfg.metadata["iterations"]}}))
""").format(helpers="\n".join(inspect.getsource(f) for f in (structured, Interrupted, StopAfter)))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_gloo_processes_resume_from_one_checkpoint(tmp_path):
    """Rank 0 gathers the codes of both ranks' chunks and writes; both ranks resume from
    the one checkpoint to the dictionary of an uninterrupted two-process fit."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, "-c", GLOO_CHILD, str(tmp_path / "ck")], cwd=ROOT,
                              env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=110)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.splitlines()[-1]))
    for r in results:
        assert r == {"W_dec": True, "history": True, "next_pass": 8, "iterations": results[0]["iterations"]}
    assert results[0]["iterations"] > 8 and not (tmp_path / "ck").exists()
