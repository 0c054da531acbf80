"""Loading each model kind, hook helpers and their errors."""

import json
import shutil

import pytest
import torch
from conftest import DEMO_LM, ROOT

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


def _fill_hf_cache(hf_dir, cache, repo_id="saekit-test/tiny-gpt2"):
    """A Hugging Face hub cache holding ``hf_dir`` as ``repo_id`` (the layout hf_hub_download writes)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / ("0" * 40)
    shutil.copytree(hf_dir, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


NO_NETWORK_SCRIPT = """
import json, sys, time
import saekit, transformer_lens.model_bridge, transformers, huggingface_hub  # imports are not timed
out = {}
def attempt(name, fn):
    t = time.perf_counter()
    try:
        fn()
        out[name] = ["loaded", "", time.perf_counter() - t]
    except Exception as e:
        out[name] = [type(e).__name__, str(e), time.perf_counter() - t]
attempt("hub_name", lambda: saekit.load_model("saekit-test/not-cached", device="cpu"))
attempt("missing_dir", lambda: saekit.load_model("checkpoints/nope", device="cpu"))
attempt("registry_id", lambda: saekit.load_dictionary("gpt2-small-res-jb/blocks.3.hook_resid_pre"))
attempt("hf_path", lambda: saekit.load_dictionary("hf://jbloom/GPT2-Small-SAEs-Reformatted/blocks.3.hook_resid_pre"))
attempt("cached", lambda: saekit.load_model("saekit-test/tiny-gpt2", device="cpu"))
print(json.dumps(out))
"""


@pytest.mark.timeout(240)
def test_without_network_names_what_is_missing_at_once(hf_dir, tmp_path):
    """HF_HUB_OFFLINE unset and no route to the hub (the endpoint is a closed loopback port,
    so nothing leaves the machine): huggingface_hub alone retries five times with back-off
    (23-27 s a name measured on a machine without network); saekit probes once, reads the
    cache at once, and says which is missing: no network, or no such directory."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _fill_hf_cache(hf_dir, tmp_path / "hub")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HUB_CACHE=str(tmp_path / "hub"), HF_ENDPOINT=f"http://127.0.0.1:{port}",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))  # this checkout, from any cwd
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()  # not the checkout: checkpoints/ is found under the repository, nope is not
    r = subprocess.run([sys.executable, "-c", NO_NETWORK_SCRIPT], env=env, cwd=run_dir, capture_output=True,
                       text=True, timeout=220)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    kind, msg, seconds = out["hub_name"]
    assert kind == "ValueError" and "no network and not in the local Hugging Face cache" in msg, msg
    assert "'saekit-test/not-cached'" in msg and "HF_HUB_OFFLINE=1" in msg and seconds < 10, (msg, seconds)
    kind, msg, seconds = out["missing_dir"]
    assert kind == "FileNotFoundError" and msg.startswith("no such directory") and seconds < 10, (msg, seconds)
    assert "huggingface" not in msg.lower().split("valid specs")[0]  # no word of the hub before the list
    kind, msg, seconds = out["registry_id"]
    assert kind == "FormatError" and "no network and not in the local Hugging Face cache" in msg, msg
    assert "gpt2-small-res-jb" in msg and "not found (" not in msg and seconds < 10, (msg, seconds)
    kind, msg, seconds = out["hf_path"]  # not "no checkpoint saekit knows there"
    assert kind == "FormatError" and msg.startswith("no network and not in the local") and seconds < 10, msg
    kind, msg, seconds = out["cached"]
    assert kind == "loaded" and seconds < 30, (msg, seconds)  # the cache serves it with no network


def test_native_dtype(demo_model, demo_tokens):
    bf16 = saekit.load_model(DEMO_LM, device="cpu", dtype=torch.bfloat16)
    assert next(bf16.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        a = float(demo_model(demo_tokens[:4], return_type="loss"))
        b = float(bf16(demo_tokens[:4], return_type="loss"))
    assert abs(a - b) < 0.05 * a
