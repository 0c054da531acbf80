"""Loading each model kind, hook helpers and their errors."""

import json
import shutil

import pytest
import torch
from conftest import DEMO_LM

import saekit
from saekit.models import hook_names, hook_width, validate_hook


def test_native_demo_lm_loads_and_predicts(demo_model, demo_tokens):
    assert demo_model.saekit_processing == "native"
    cfg = json.loads((DEMO_LM / "config.json").read_text())
    assert demo_model.cfg.n_layers == cfg["n_layers"] and demo_model.cfg.d_mlp == 4 * cfg["d_model"]
    with torch.no_grad():
        loss = float(demo_model(demo_tokens[:8], return_type="loss"))
    summary = json.loads((DEMO_LM / "train_summary.json").read_text())
    # A trained model: far below the unigram baseline it is reported against.
    assert loss < summary["unigram_heldout_loss"] - 1.0


def test_hooked_object_is_returned_as_is(demo_model):
    assert saekit.load_model(demo_model) is demo_model


def test_native_checkpoint_errors_name_the_file(tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(DEMO_LM, d, ignore=shutil.ignore_patterns("corpus"))
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors"):
        saekit.load_model(d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["d_model"] = "wide"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="d_model"):
        saekit.load_model(d)
    (d / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        saekit.load_model(d)


def test_missing_path_and_bad_processing():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        saekit.load_model("./no/such/model")
    with pytest.raises(ValueError, match="processing"):
        saekit.load_model(DEMO_LM, processing="folded")


def test_unknown_hf_name_lists_valid_specs():
    with pytest.raises(ValueError, match="Valid specs"):
        saekit.load_model("no-such-org/no-such-model-xyz")


def test_hook_helpers(demo_model):
    names = hook_names(demo_model)
    L = demo_model.cfg.n_layers
    assert len(names) == 7 * L and "blocks.0.mlp.hook_post" in names and "blocks.0.ln2.hook_out" in names
    assert hook_width(demo_model, "blocks.1.ln2.hook_out") == demo_model.cfg.d_model
    assert hook_width(demo_model, "blocks.1.mlp.hook_post") == demo_model.cfg.d_mlp
    assert hook_width(demo_model, "blocks.1.attn.hook_z") == demo_model.cfg.n_heads * demo_model.cfg.d_head
    assert hook_width(demo_model, "blocks.0.hook_resid_pre") == demo_model.cfg.d_model
    assert validate_hook(demo_model, "blocks.2.hook_mlp_out") == (2, "hook_mlp_out")
    w = saekit.W_out(demo_model, 1)
    assert w.shape == (demo_model.cfg.d_mlp, demo_model.cfg.d_model)


@pytest.mark.parametrize("bad", ["blocks.99.mlp.hook_post", "blocks.1.mlp.hook_pre", "resid"])
def test_unknown_hook_lists_choices(demo_model, bad):
    with pytest.raises(ValueError, match=r"Valid hooks: .*blocks\.L\.mlp\.hook_post"):
        validate_hook(demo_model, bad)


def test_W_out_layer_out_of_range(demo_model):
    with pytest.raises(ValueError, match="out of range"):
        saekit.W_out(demo_model, demo_model.cfg.n_layers)


def test_W_out_is_the_mlp_output_map(demo_model, demo_tokens):
    """hook_mlp_out = hook_post @ W_out + b_out, so MLP dictionaries map into the residual."""
    acts = saekit.harvest(demo_model, ["blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out"], demo_tokens[:4])
    b_out = demo_model.blocks[1].mlp.b_out.detach()
    pred = acts["blocks.1.mlp.hook_post"] @ saekit.W_out(demo_model, 1) + b_out
    torch.testing.assert_close(pred, acts["blocks.1.hook_mlp_out"], rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, demo_model):
    """A Hugging Face GPT-2 built locally from a config and saved to a directory."""
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("tiny-gpt2")
    tok = demo_model.tokenizer
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=128, vocab_size=len(tok),
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.mark.parametrize("processing", ["hooked", "raw"])
def test_local_hf_directory(hf_dir, demo_tokens, processing):
    from transformers import GPT2LMHeadModel

    model = saekit.load_model(hf_dir, processing=processing, device="cpu")
    assert model.saekit_processing == processing
    assert hook_width(model, "blocks.1.mlp.hook_post") == 256
    toks = demo_tokens[:2, :32]
    with torch.no_grad():
        ours = model(toks).log_softmax(-1)
        ref = GPT2LMHeadModel.from_pretrained(hf_dir).eval()(toks).logits.log_softmax(-1)
    # Folding LayerNorm and centering weights preserve the function.
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=1e-3)
    acts = saekit.harvest(model, ["blocks.0.mlp.hook_post", "blocks.1.hook_resid_post"], toks)
    assert acts["blocks.0.mlp.hook_post"].shape == (int(saekit.token_mask(toks, model).sum()), 256)


def test_hub_name_resolves_from_the_local_hf_cache(hf_dir, tmp_path):
    """The real download path (`boot_transformers` by name) served offline by an HF cache."""
    import os
    import subprocess
    import sys

    repo = tmp_path / "hub" / "models--saekit-test--tiny-gpt2"
    snap = repo / "snapshots" / ("0" * 40)
    shutil.copytree(hf_dir, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    code = ("import saekit; m = saekit.load_model('saekit-test/tiny-gpt2', device='cpu'); "
            "print(m.cfg.n_layers, saekit.hook_width(m, 'blocks.1.mlp.hook_post'), m.saekit_processing)")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-3:] == ["2", "256", "hooked"]


def test_native_dtype(demo_model, demo_tokens):
    bf16 = saekit.load_model(DEMO_LM, device="cpu", dtype=torch.bfloat16)
    assert next(bf16.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        a = float(demo_model(demo_tokens[:4], return_type="loss"))
        b = float(bf16(demo_tokens[:4], return_type="loss"))
    assert abs(a - b) < 0.05 * a
