"""Other libraries' checkpoints: every reader against files and outputs written by the real
library (tests/fixtures/formats, made by `make fixtures`), exporters, the registry through a
local Hugging Face cache, and refusal of bad or unsafe files."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file, save_file

import saekit
from saekit import formats
from saekit.cli import main
from saekit.dictionaries.base import REGISTRY, DictionaryConfig
from saekit.formats import FormatError

FIXTURES = ROOT / "tests" / "fixtures" / "formats"
NAMES = sorted(p.name for p in FIXTURES.iterdir() if (p / "fixture.json").is_file())


def spec_of(name: str) -> Path:
    """What a user passes for each fixture: the directory, or the file/hookpoint inside."""
    d = FIXTURES / name
    fmt = json.loads((d / "fixture.json").read_text())["format"]
    if fmt == "sparsify":
        return next(p for p in d.iterdir() if p.is_dir())
    if fmt == "gemma_scope":
        return next(d.rglob("params.npz"))
    if fmt == "openai":
        return d / "ae.pt"
    return d


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_fixtures_cover_every_format_and_sae_kind():
    fmts = {json.loads((FIXTURES / n / "fixture.json").read_text())["format"] for n in NAMES}
    # Gemma Scope 2's fixtures (SAE and transcoders) are read by tests/test_gemma_scope_2.py
    gs2 = ROOT / "tests" / "fixtures" / "transcoders" / "gemma_scope" / "gemma-scope-2-x-pt"
    assert fmts | ({"gemma_scope_2"} if any(gs2.rglob("params.safetensors")) else set()) == set(formats.READERS)
    kinds = {saekit.load_dictionary(spec_of(n)).cfg.kind for n in NAMES}
    assert kinds == {"relu", "topk", "batchtopk", "jumprelu", "gated"}


@pytest.mark.parametrize("name", NAMES)
def test_reader_reproduces_the_library(name):
    e = load_file(FIXTURES / name / "expected.safetensors")
    x = e["x"]
    with torch.no_grad():
        # The file's own parametrisation: the library's codes and reconstruction.
        raw = saekit.load_dictionary(spec_of(name), fold_decoder_norms=False)
        codes = raw.encode(x)
        assert rel(codes, e["codes"]) < 1e-5 and rel(raw.decode(codes), e["x_hat"]) < 1e-5
        # saekit's convention: unit decoder rows (except plain TopK), the same
        # reconstruction and firing, codes scaled by the decoder norms.
        d = saekit.load_dictionary(spec_of(name))
        folded = d.encode(x)
        assert rel(d.decode(folded), e["x_hat"]) < 1e-5
        assert torch.equal(d.active(folded), raw.active(codes))
        if d.cfg.kind != "topk":
            assert torch.allclose(d.W_dec.norm(dim=1), torch.ones(d.cfg.d_dict), atol=1e-5)
            assert rel(folded, codes * raw.W_dec.norm(dim=1)) < 1e-5
    assert d.cfg.metadata["source_format"] == json.loads((FIXTURES / name / "fixture.json").read_text())["format"]


def test_what_each_format_says_about_provenance():
    hooks = {n: saekit.load_dictionary(spec_of(n)).cfg for n in
             ("saelens_standard", "sparsify_topk", "dictionary_learning_topk", "saelens_attn", "openai_topk")}
    assert (hooks["saelens_standard"].hook, hooks["saelens_standard"].processing) == ("blocks.2.hook_resid_pre", "hooked")
    assert hooks["sparsify_topk"].hook == "blocks.0.hook_mlp_out"  # from the hookpoint layers.0.mlp
    assert hooks["sparsify_topk"].model == "EleutherAI/pythia-70m"  # from the run's config.json
    assert hooks["dictionary_learning_topk"].hook == "blocks.3.hook_resid_post"
    assert hooks["dictionary_learning_topk"].model == "EleutherAI/pythia-70m-deduped"
    assert hooks["saelens_attn"].hook == "blocks.0.attn.hook_z"
    assert hooks["openai_topk"].input_norm == "layer_norm" and hooks["openai_topk"].hook is None
    d = saekit.load_dictionary(spec_of("saelens_with_sparsity"))
    assert torch.equal(d.log_firing_freq, load_file(FIXTURES / "saelens_with_sparsity" / "expected.safetensors")["log_sparsity"])


def test_attention_sae_flattens_heads_like_saelens():
    e = load_file(FIXTURES / "saelens_attn" / "expected.safetensors")
    d = saekit.load_dictionary(spec_of("saelens_attn"), fold_decoder_norms=False)
    flat = e["x_z"].reshape(len(e["x_z"]), -1)  # what splice does to [batch, pos, head, d_head]
    assert torch.equal(flat, e["x"])
    with torch.no_grad():
        assert rel(d(flat).reshape(e["x_hat_z"].shape), e["x_hat_z"]) < 1e-5


def test_layer_norm_decode_needs_the_tokens_it_encoded():
    d = saekit.load_dictionary(spec_of("openai_topk"))
    x = load_file(FIXTURES / "openai_topk" / "expected.safetensors")["x"]
    codes = d.encode(x)
    with pytest.raises(RuntimeError, match="layer_norm"):
        d.decode(codes[:3])


def random_sae(kind: str, seed: int = 0, **kw):
    g = torch.Generator().manual_seed(seed)
    cfg = DictionaryConfig(kind=kind, d_in=16, d_dict=40, k=5 if kind in ("topk", "batchtopk") else None,
                           hook="blocks.0.hook_resid_pre", model="demo", **kw)
    d = REGISTRY[kind](cfg)
    with torch.no_grad():
        for p in d.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        d.W_dec.div_(d.W_dec.norm(dim=1, keepdim=True))
        if hasattr(d, "threshold"):
            d.threshold.copy_(torch.rand(d.threshold.shape, generator=g) * 0.3)
    return d, torch.randn(32, 16, generator=g) + 0.3


@pytest.mark.parametrize("kind", ["relu", "topk", "batchtopk", "jumprelu", "gated"])
def test_export_saelens_round_trips(kind, tmp_path):
    d, x = random_sae(kind)
    out = formats.export(d, tmp_path / "sl", to="saelens")
    cfg = json.loads((out / "cfg.json").read_text())
    assert "saekit" not in cfg and cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_pre"
    assert sorted(load_file(out / "sae_weights.safetensors")) == sorted(d.saelens_tensors())
    back = saekit.load_dictionary(out)
    assert back.cfg.kind == kind and back.cfg.metadata["source_format"] == "saelens"
    with torch.no_grad():
        assert torch.allclose(back(x), d(x), atol=1e-5)


def test_export_sparsify_round_trips_and_refuses_what_sparsify_cannot_hold(tmp_path):
    d, x = random_sae("topk")
    out = formats.export(d, tmp_path / "layers.0", to="sparsify")
    assert sorted(load_file(out / "sae.safetensors")) == ["W_dec", "b_dec", "encoder.bias", "encoder.weight"]
    back = saekit.load_dictionary(out)
    # the hook saekit recorded in cfg.json (saekit_hook), not the folder's guess (layers.0 -> resid_post)
    assert back.cfg.hook == "blocks.0.hook_resid_pre" and back.cfg.k == 5
    with torch.no_grad():
        assert torch.allclose(back(x), d(x), atol=1e-5)
    with pytest.raises(ValueError, match="sparsify holds TopK"):
        formats.export(random_sae("relu")[0], tmp_path / "r", to="sparsify")
    snmf = saekit.fit(x.abs(), kind="snmf", d_dict=4, wta_fraction=1.0, max_iter=5)
    with pytest.raises(ValueError, match="snmf dictionary has no saelens form"):
        formats.export(snmf, tmp_path / "s", to="saelens")
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()


def test_cli_convert_and_info_on_foreign_formats(tmp_path, capsys):
    assert main(["convert", str(spec_of("dictionary_learning_jumprelu")), str(tmp_path / "sk"), "--to", "saekit"]) == 0
    d = saekit.load_dictionary(tmp_path / "sk")  # native now: the settings travel with it
    assert d.cfg.options["apply_b_dec_to_input"] is False and d.cfg.metadata["source_format"] == "dictionary_learning"
    assert main(["convert", str(tmp_path / "sk"), str(tmp_path / "sk"), "--to", "saelens"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["info", str(spec_of("gemma_scope"))]) == 0
    out = capsys.readouterr().out
    assert "jumprelu dictionary" in out and "(gemma_scope)" in out and "d_in=48, d_dict=96" in out
    assert main(["info", str(FIXTURES / "sparsify_topk")]) == 2  # a run directory: name the hookpoints
    assert "layers.0.mlp" in capsys.readouterr().err


def test_saekit_sae_runs_in_saelens_layout_with_a_real_model(tmp_path, demo_model, demo_acts):
    h = "blocks.1.hook_resid_post"
    sae = saekit.fit(demo_acts[h][:2048], kind="topk", d_dict=64, k=4, hook=h, model=demo_model, batch_size=256)
    back = saekit.load_dictionary(formats.export(sae, tmp_path / "sl", to="saelens"))
    assert back.cfg.processing == "hooked"  # what a SAELens directory implies; saekit's own says more
    back.cfg.processing = sae.cfg.processing
    tokens = saekit.load_tokens("demo", demo_model, n_tokens=4 * 64, ctx_len=64, seed=9)
    with torch.no_grad(), saekit.splice(demo_model, sae):
        a = demo_model(tokens, return_type="loss")
    with torch.no_grad(), saekit.splice(demo_model, back):
        b = demo_model(tokens, return_type="loss")
    assert torch.allclose(a, b, atol=1e-5)


# -- the registry, through a local Hugging Face cache -----------------------------------


def fill_cache(cache: Path, repo: str, files: dict[str, Path]) -> None:
    """Lay files out as huggingface_hub's cache does: refs/main -> snapshots/<commit>/."""
    root = cache / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    for name, src in files.items():
        dst = root / "snapshots" / commit / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)


def run_offline(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_registry_ids_and_hf_urls_load_from_the_hf_cache(tmp_path):
    cache = tmp_path / "hub"
    sl = FIXTURES / "saelens_standard"
    fill_cache(cache, "jbloom/GPT2-Small-SAEs-Reformatted",
               {f"blocks.8.hook_resid_pre/{f}": sl / f for f in ("cfg.json", "sae_weights.safetensors")})
    fill_cache(cache, "google/gemma-scope-2b-pt-res",
               {"layer_3/width_16k/average_l0_42/params.npz": spec_of("gemma_scope")})
    r = run_offline(
        "import saekit\n"
        "a = saekit.load_dictionary('gpt2-small-res-jb/blocks.8.hook_resid_pre')\n"
        "b = saekit.load_dictionary('gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_42')\n"
        "c = saekit.load_dictionary('hf://google/gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_42')\n"
        "print(a.cfg.kind, a.cfg.hook, a.cfg.model, a.cfg.processing)\n"
        "print(b.cfg.kind, b.cfg.hook, b.cfg.model, b.cfg.processing, c.cfg.hook, bool((b.W_dec == c.W_dec).all()))\n",
        cache)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    # The registry's hook and model win over the file's (the fixture says blocks.2 / gpt2).
    assert first == "relu blocks.8.hook_resid_pre gpt2 hooked"
    # hf:// reads the hook from the repository's name (-res) and the folder (layer_3).
    assert second == "jumprelu blocks.3.hook_resid_post google/gemma-2-2b raw blocks.3.hook_resid_post True"
    r = run_offline("import saekit; saekit.load_dictionary('gpt2-small-res-jb/blocks.9.hook_resid_pre')", cache)
    assert r.returncode != 0 and "not in the local Hugging Face cache: 'hf://jbloom" in r.stderr
    assert "HF_HUB_OFFLINE is set, so the hub was not asked" in r.stderr
    r = run_offline("import saekit; saekit.load_dictionary('gpt2-small-res-jb/layer_9')", cache)
    assert "has ids of the form 'blocks.{layer}.hook_resid_pre'" in r.stderr
    with pytest.raises(FileNotFoundError, match="not a registry id"):
        saekit.load_dictionary("no-such-release/x")


def test_registry_file_is_valid_and_rejects_unknown_fields(tmp_path):
    from saekit.formats.registry import load_registry

    reg = load_registry()
    assert {"gpt2-small-res-jb", "gemma-scope-2b-pt-res", "sae-llama-3-8b-32x"} <= set(reg)
    assert {r["format"] for r in reg.values()} == {"saelens", "gemma_scope", "gemma_scope_2", "sparsify", "dictionary_learning"}
    bad = tmp_path / "r.toml"
    bad.write_text('[x]\nrepo_id = "a/b"\nformat = "saelens"\nid = "{layer}"\npath = "p"\nhooks = "typo"\n')
    with pytest.raises(FormatError, match=r"unknown field\(s\) \['hooks'\]"):
        load_registry(bad)


# -- safety and bad input ---------------------------------------------------------------


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("layout", ["openai", "dictionary_learning"])
def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path, layout):
    target = tmp_path / "pwned"
    d = tmp_path / "ckpt"
    d.mkdir()
    state = {"pre_bias": torch.zeros(4), "latent_bias": torch.zeros(8), "encoder.weight": torch.zeros(8, 4),
             "decoder.weight": torch.zeros(4, 8), "activation": _Payload(str(target))}
    torch.save(state, d / "ae.pt")
    if layout == "dictionary_learning":
        (d / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoder"}}))
    with pytest.raises(FormatError, match="refused: this pickle needs more than tensors"):
        saekit.load_dictionary(d / "ae.pt" if layout == "openai" else d)
    assert not target.exists()
    # and plain pickle files are not opened at all
    (tmp_path / "x.pkl").write_bytes(pickle.dumps(_Payload(str(target))))
    with pytest.raises(FormatError):
        saekit.load_dictionary(tmp_path / "x.pkl")
    assert not target.exists()


def copy_fixture(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def test_bad_files_raise_errors_naming_file_and_problem(tmp_path):
    d = copy_fixture("saelens_standard", tmp_path)
    w = d / "sae_weights.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match=r"sae_weights\.safetensors: not a readable safetensors file"):
        saekit.load_dictionary(d)
    t = load_file(FIXTURES / "saelens_standard" / "sae_weights.safetensors")
    save_file({k: v for k, v in t.items() if k != "b_enc"}, str(w))
    with pytest.raises(FormatError, match=r"missing tensor\(s\) \['b_enc'\]"):
        saekit.load_dictionary(d)
    save_file({**t, "W_enc": t["W_enc"][:, :10].contiguous()}, str(w))
    with pytest.raises(ValueError, match="tensor 'W_enc' has shape"):
        saekit.load_dictionary(d)
    save_file({**t, "b_dec": t["b_dec"].long()}, str(w))
    with pytest.raises(FormatError, match="tensor 'b_dec' has dtype torch.int64"):
        saekit.load_dictionary(d)
    save_file(t, str(w))
    cfg = json.loads((d / "cfg.json").read_text())
    (d / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 7}))
    with pytest.raises(FormatError, match="cfg.json says d_sae=7"):
        saekit.load_dictionary(d)
    (d / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "constant_norm_rescale"}))
    with pytest.raises(FormatError, match="constant_norm_rescale"):
        saekit.load_dictionary(d)
    (d / "cfg.json").write_text("{not json")
    with pytest.raises(FormatError, match="cfg.json: not valid JSON"):
        saekit.load_dictionary(d)
    g = tmp_path / "params.npz"
    g.write_bytes(spec_of("gemma_scope").read_bytes()[:500])
    with pytest.raises(FormatError, match=r"params\.npz: not a readable \.npz"):
        saekit.load_dictionary(g)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FormatError, match="unknown layout"):
        saekit.load_dictionary(empty)


def test_loaded_only_settings_refuse_to_train():
    x = torch.randn(256, 16)
    with pytest.raises(ValueError, match="loads and runs but does not train"):
        saekit.fit(x, kind="gated", d_dict=8)
    with pytest.raises(ValueError, match="apply_b_dec_to_input=False"):
        saekit.fit(x, kind="jumprelu", d_dict=8, apply_b_dec_to_input=False)
