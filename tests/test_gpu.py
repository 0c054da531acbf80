"""GPU checks, run by hand on a CUDA machine: `pytest -m gpu`."""

import pytest
import torch
from conftest import DEMO_LM, HOOKS

import saekit

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run by hand with -m gpu)")]


def test_harvest_on_gpu_matches_cpu(demo_model, demo_tokens):
    gpu_model = saekit.load_model(DEMO_LM, device="cuda")
    ref = saekit.harvest(demo_model, HOOKS, demo_tokens[:8])
    got = saekit.harvest(gpu_model, HOOKS, demo_tokens[:8])  # returned on CPU by default
    for h in HOOKS:
        assert got[h].device.type == "cpu"
        torch.testing.assert_close(got[h], ref[h], rtol=1e-3, atol=1e-3)
    stream = next(saekit.iter_harvest(gpu_model, HOOKS, demo_tokens[:8], batch_size=8))
    assert stream[HOOKS[0]].device.type == "cuda"
