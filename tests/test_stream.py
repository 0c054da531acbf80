"""Training from live harvesting: model → shuffle buffer, the LM running ahead in a thread."""

import torch

import saekit
from saekit.activations import LiveStream
from saekit.metrics import fvu
from saekit.training import Trainer

HOOK = "blocks.1.hook_resid_post"


def test_stream_is_deterministic_with_and_without_prefetch(demo_model, demo_tokens):
    kw = dict(batch_size=256, buffer_bytes=1024 * 128 * 4, seed=2, lm_batch=8)
    a = list(LiveStream(demo_model, HOOK, demo_tokens, prefetch=0, **kw).batches())
    stream = LiveStream(demo_model, HOOK, demo_tokens, prefetch=3, **kw)
    b = list(stream.batches())
    assert len(a) == len(stream) // 256 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    rows = torch.cat(a)
    ref = saekit.harvest(demo_model, [HOOK], demo_tokens)[HOOK]
    # Harvested rows, each served at most as often as it was harvested (repeated contexts
    # give identical rows), shuffled out of harvest order; only the last partial batch is dropped.
    from collections import Counter

    assert not torch.equal(rows, ref[:len(rows)])
    harvested = Counter(r.numpy().tobytes() for r in ref)
    served = Counter(r.numpy().tobytes() for r in rows)
    assert all(harvested[k] >= v for k, v in served.items())
    c = list(stream.batches(skip=5))
    assert all(torch.equal(x, y) for x, y in zip(a[5:], c, strict=True))


def test_train_from_a_live_stream_and_resume_exactly(demo_model, demo_tokens, tmp_path):
    def trainer():
        s = LiveStream(demo_model, HOOK, demo_tokens, 256, buffer_bytes=1024 * 128 * 4, seed=0, lm_batch=8)
        return Trainer(s, "topk", 256, 8, batch_size=256, n_tokens=256 * 20, hook=HOOK, model=demo_model)

    full = trainer().run(tmp_path / "full")
    t = trainer()
    for _ in range(7):
        t.train_step()
    t.save_checkpoint(tmp_path / "ckpt")
    resumed = trainer()
    resumed.load_checkpoint(tmp_path / "ckpt")
    done = resumed.run(tmp_path / "resumed")
    for name, x in full.saelens_tensors().items():
        assert torch.equal(x, done.saelens_tensors()[name]), name
    acts = saekit.harvest(demo_model, [HOOK], demo_tokens)[HOOK]
    with torch.no_grad():
        assert fvu(acts, full(acts)) < 0.9


def test_several_dictionaries_train_in_lockstep_from_one_harvest(demo_model, demo_tokens, tmp_path, monkeypatch):
    from saekit.activations import stream as stream_mod
    from saekit.training import train_together

    hooks = [HOOK, "blocks.2.mlp.hook_post"]
    passes = []
    real = stream_mod._Harvest.batches
    monkeypatch.setattr(stream_mod._Harvest, "batches", lambda self, skip=0: (passes.append(skip), real(self, skip))[1])

    def trainers():
        s = LiveStream.together(demo_model, hooks, demo_tokens, 256, buffer_bytes=4 << 20, seed=0, lm_batch=8)
        return [Trainer(s[h], kind, 128, 8, batch_size=256, n_tokens=256 * n, hook=h, model=demo_model)
                for h, kind, n in [(HOOK, "topk", 12), (hooks[1], "batchtopk", 9), (hooks[1], "topk", 12)]]

    together = train_together([(t, {"out": tmp_path / str(i)}) for i, t in enumerate(trainers())])
    assert passes == [0], "three dictionaries, two hooks: one pass over the model"
    for i, t in enumerate(trainers()):  # alone, each reads the same batches and ends the same
        alone = t.run()
        for name, x in alone.saelens_tensors().items():
            assert torch.equal(x, together[i].saelens_tensors()[name]), (i, name)
        assert (tmp_path / str(i) / "dictionary" / "cfg.json").exists()
    assert together[1].cfg.metadata["steps"] == 9
