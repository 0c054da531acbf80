"""Integrity on load: sha256 of saekit's tensor files, finite/shape/dtype checks of every
format's tensors, config fields named in each file's own vocabulary, and the same for
trainer checkpoints, feature-store manifests and TOML recipes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file, save_file

import saekit
from saekit.dictionaries import REGISTRY, DictionaryConfig
from saekit.formats import FormatError
from saekit.formats.readers import FormatError as ReadersFormatError

pytestmark = pytest.mark.timeout(120)
FIXTURES = ROOT / "tests" / "fixtures" / "formats"


def make(kind="topk", d_in=64, d_dict=128, **kw):
    cfg = DictionaryConfig(kind=kind, d_in=d_in, d_dict=d_dict, hook="blocks.1.mlp.hook_post", model="demo-lm",
                           **({"k": 4} if kind in ("topk", "batchtopk") else {}), **kw)
    d = REGISTRY[kind](cfg)
    g = torch.Generator().manual_seed(0)
    if hasattr(d, "reset_parameters"):
        d.reset_parameters(g)
    else:
        with torch.no_grad():
            d.W_dec.copy_(torch.nn.functional.normalize(torch.randn(d_dict, d_in, generator=g), dim=1))
    d.log_firing_freq = torch.linspace(-3, -1, d_dict)
    return d


def same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return a.cfg == b.cfg and sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_format_error_is_one_class_everywhere():
    from saekit.dictionaries.base import FormatError as BaseFormatError

    assert FormatError is ReadersFormatError is BaseFormatError and issubclass(FormatError, ValueError)


@pytest.mark.parametrize("kind", ["topk", "snmf"])
def test_save_records_sha256_and_load_round_trips(kind, tmp_path):
    d = make(kind)
    d.save(tmp_path / "d")
    cfg = json.loads((tmp_path / "d" / "cfg.json").read_text())
    hashes = cfg["saekit"]["sha256"]
    assert set(hashes) == {p.name for p in (tmp_path / "d").glob("*.safetensors")}
    for name, sha in hashes.items():
        assert hashlib.sha256((tmp_path / "d" / name).read_bytes()).hexdigest() == sha
    back = saekit.load_dictionary(tmp_path / "d")
    assert same(back, d) and torch.equal(back.log_firing_freq, d.log_firing_freq)
    assert "sha256" not in back.cfg.to_dict() and "sha256" not in back.cfg.metadata
    back.save(tmp_path / "again")  # the loaded config writes the same section again
    again = json.loads((tmp_path / "again" / "cfg.json").read_text())
    assert again["saekit"] == cfg["saekit"]


def test_overwritten_4kib_is_caught_naming_the_file(tmp_path):
    make().save(tmp_path / "d")
    w = tmp_path / "d" / "sae_weights.safetensors"
    data = bytearray(w.read_bytes())
    assert len(data) > 12288
    data[8192:12288] = b"\xff" * 4096  # same size, inside the payload: NaNs where W_enc was
    w.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"sae_weights\.safetensors: sha256 [0-9a-f]{64} differs from "
                                          r"[0-9a-f]{64} recorded in cfg\.json; the file was modified or truncated"):
        saekit.load_dictionary(tmp_path / "d")
    make().save(tmp_path / "d")
    (tmp_path / "d" / "sparsity.safetensors").write_bytes((tmp_path / "d" / "sparsity.safetensors").read_bytes()[:-4])
    with pytest.raises(FormatError, match=r"sparsity\.safetensors: sha256 .* modified or truncated"):
        saekit.load_dictionary(tmp_path / "d")
    make().save(tmp_path / "d")
    (tmp_path / "d" / "sparsity.safetensors").unlink()
    with pytest.raises(FormatError, match=r"sparsity\.safetensors: missing, but cfg\.json records its sha256"):
        saekit.load_dictionary(tmp_path / "d")


def test_files_without_sha256_still_load(tmp_path):
    d = make()
    d.save(tmp_path / "d")
    cfg = json.loads((tmp_path / "d" / "cfg.json").read_text())
    del cfg["saekit"]["sha256"]
    (tmp_path / "d" / "cfg.json").write_text(json.dumps(cfg))
    assert same(saekit.load_dictionary(tmp_path / "d"), d)
    for name in ("demo-topk", "demo-snmf"):  # the shipped ones record them
        assert "sha256" in json.loads((ROOT / "checkpoints" / name / "cfg.json").read_text())["saekit"]
        saekit.load_dictionary(ROOT / "checkpoints" / name)


def test_strict_saelens_export_has_no_saekit_section(tmp_path):
    d = make()
    saekit.formats.export(d, tmp_path / "s", to="saelens")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert "saekit" not in cfg and "sha256" not in json.dumps(cfg)
    assert saekit.load_dictionary(tmp_path / "s").cfg.metadata["source_format"] == "saelens"


def test_nan_in_a_saelens_file_names_file_and_tensor(tmp_path):
    d = tmp_path / "saelens_standard"
    shutil.copytree(FIXTURES / "saelens_standard", d)
    t = load_file(d / "sae_weights.safetensors")
    t["W_enc"][3, 5] = float("nan")
    save_file(t, str(d / "sae_weights.safetensors"))
    with pytest.raises(FormatError, match=r"saelens_standard/sae_weights\.safetensors: tensor 'W_enc' has 1 NaN/inf"):
        saekit.load_dictionary(d)
    t["W_enc"][3, 5] = 3e37  # a flipped exponent bit: finite, but no dictionary's weight
    save_file(t, str(d / "sae_weights.safetensors"))
    with pytest.raises(FormatError, match=r"tensor 'W_enc' holds values up to 3e\+37"):
        saekit.load_dictionary(d)


def test_non_finite_tensors_are_refused_in_every_format(tmp_path):
    # sparsity of a SAELens file
    d = tmp_path / "sp"
    shutil.copytree(FIXTURES / "saelens_with_sparsity", d)
    save_file({"sparsity": torch.full((64,), float("inf"))}, str(d / "sparsity.safetensors"))
    with pytest.raises(FormatError, match=r"sparsity\.safetensors: tensor 'sparsity' has 64 NaN/inf"):
        saekit.load_dictionary(d)
    # a Gemma Scope .npz
    import numpy as np

    src = next((FIXTURES / "gemma_scope").rglob("params.npz"))
    arrays = dict(np.load(src))
    arrays["threshold"][0] = np.nan
    np.savez(tmp_path / "params.npz", **arrays)
    with pytest.raises(FormatError, match=r"params\.npz: tensor 'threshold' has 1 NaN/inf"):
        saekit.load_dictionary(tmp_path / "params.npz")
    # saekit's own file without hashes (so that the finite check is what catches it)
    dd = make()
    with torch.no_grad():
        dd.W_dec[0, 0] = float("inf")
    dd.save(tmp_path / "own")
    with pytest.raises(FormatError, match=r"own/sae_weights\.safetensors: tensor 'W_dec' has 1 NaN/inf"):
        saekit.load_dictionary(tmp_path / "own")


def _edit(path: Path, edit) -> None:
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("d_in"), r"cfg\.json: field 'd_in' missing \(SAELens' activation width\)"),
    (lambda c: c.pop("d_sae"), r"cfg\.json: field 'd_sae' missing \(SAELens' number of features\)"),
    (lambda c: c.pop("architecture"), r"cfg\.json: field 'architecture' missing"),
    (lambda c: c.update(d_sae=64), r"field 'd_sae' is 64, but the saekit section \(saekit\.d_dict\) makes it 128"),
    (lambda c: c.update(d_in="64"), r"field 'd_in' is '64', but the saekit section"),
    (lambda c: c.update(architecture="standard"), r"field 'architecture' is 'standard'.*saekit\.kind"),
    (lambda c: c["metadata"].update(hook_name="blocks.2.hook_resid_post"),
     r"field 'metadata\.hook_name' is 'blocks\.2\.hook_resid_post', but saekit\.hook is 'blocks\.1\.mlp\.hook_post'"),
    (lambda c: c["saekit"].pop("d_in"), r"cfg\.json: field 'saekit\.d_in' missing"),
    (lambda c: c["saekit"].pop("d_dict"), r"cfg\.json: field 'saekit\.d_dict' missing"),
    (lambda c: c["saekit"].update(d_dict="128"), r"field 'saekit\.d_dict' must be a positive integer, got '128'"),
    (lambda c: c["saekit"].update(d_dict=[128]), r"field 'saekit\.d_dict' must be a positive integer"),
    (lambda c: c["saekit"].update(k=None), r"kind 'topk' needs k"),
    (lambda c: c["saekit"].update(kind=["topk"]), r"field 'saekit\.kind' must be a string"),
    (lambda c: c["saekit"].update(options=[]), r"field 'saekit\.options' must be an object"),
    (lambda c: c["saekit"]["options"].update(aux_coefficient="1"),
     r"field 'saekit\.options\.aux_coefficient' must be like its default"),
    (lambda c: c["saekit"].update(hook=3), r"field 'saekit\.hook' must be a string or null, got 3"),
    (lambda c: c["saekit"].update(sha256="abc"), r"field 'saekit\.sha256' must be an object"),
    (lambda c: c["saekit"]["sha256"].update({"sae_weights.safetensors": 7}),
     r"field 'saekit\.sha256\.sae_weights\.safetensors' must be 64 lowercase hex digits"),
    (lambda c: c.update(saekit=[]), r"field 'saekit' must be an object"),
    (lambda c: c["saekit"].update(schema_version=True), r"saekit schema_version True"),
])
def test_saekit_config_fields_are_named(tmp_path, edit, message):
    make().save(tmp_path / "d")
    _edit(tmp_path / "d" / "cfg.json", edit)
    with pytest.raises(FormatError, match=message):
        saekit.load_dictionary(tmp_path / "d")


@pytest.mark.parametrize("fixture, file, edit, message", [
    ("saelens_topk", "cfg.json", lambda c: c.pop("d_sae"), r"field 'd_sae' missing \(SAELens' number of features\)"),
    ("saelens_topk", "cfg.json", lambda c: c.pop("d_in"), r"field 'd_in' missing \(SAELens' activation width\)"),
    ("saelens_topk", "cfg.json", lambda c: c.pop("k"), r"field 'k' missing \(SAELens' codes kept per token\)"),
    ("saelens_topk", "cfg.json", lambda c: c.update(k="8"), r"field 'k' must be a positive integer.*got '8'"),
    ("saelens_topk", "cfg.json", lambda c: c.update(k=65), r"field 'k' is 65, more than the 64 features"),
    ("saelens_topk", "cfg.json", lambda c: c.update(architecture=["topk"]), r"field 'architecture' must be a string"),
    ("saelens_topk", "cfg.json", lambda c: c.update(metadata=[]), r"field 'metadata' must be an object or null"),
    ("saelens_topk", "cfg.json", lambda c: c["metadata"].update(hook_name=5),
     r"field 'metadata\.hook_name' must be a string or null, got 5"),
    ("saelens_topk", "cfg.json", lambda c: c.update(apply_b_dec_to_input="yes"),
     r"field 'apply_b_dec_to_input' must be true/false"),
    ("saelens_batchtopk", "cfg.json", lambda c: c["metadata"].update(training_architecture_details=[6]),
     r"field 'metadata\.training_architecture_details' must be an object"),
    ("sparsify_topk/layers.0.mlp", "cfg.json", lambda c: c.pop("k"), r"field 'k' missing \(sparsify's codes kept"),
    ("sparsify_topk/layers.0.mlp", "cfg.json", lambda c: c.update(num_latents=70), r"says num_latents=70"),
    ("sparsify_topk/layers.0.mlp", "cfg.json", lambda c: c.update(num_latents="72"),
     r"field 'num_latents' must be an integer \(sparsify's number of features\)"),
    ("sparsify_topk/layers.0.mlp", "cfg.json", lambda c: c.update(transcode="no"), r"field 'transcode' must be"),
    ("sparsify_topk/layers.0.mlp", "../config.json", lambda c: c.update(model=["x"]),
     r"config\.json: field 'model' must be"),
    ("dictionary_learning_topk", "config.json", lambda c: c.update(trainer=[]),
     r"field 'trainer' must be an object"),
    ("dictionary_learning_topk", "config.json", lambda c: c["trainer"].pop("dict_class"), r"no trainer\.dict_class"),
    ("dictionary_learning_topk", "config.json", lambda c: c["trainer"].update(dict_class=5),
     r"field 'trainer\.dict_class' must be a string"),
    ("dictionary_learning_topk", "config.json", lambda c: c["trainer"].update(k=9), r"k=8, but config\.json says trainer\.k=9"),
    ("dictionary_learning_topk", "config.json", lambda c: c["trainer"].update(dict_size=32),
     r"config\.json says trainer\.dict_size=32"),
    ("dictionary_learning_topk", "config.json", lambda c: c["trainer"].update(lm_name={"a": 1}),
     r"field 'trainer\.lm_name' must be a string or null"),
])
def test_foreign_config_fields_are_named_in_their_vocabulary(tmp_path, fixture, file, edit, message):
    top = fixture.split("/")[0]
    shutil.copytree(FIXTURES / top, tmp_path / top)
    target = tmp_path / fixture
    _edit(target / file, edit)
    with pytest.raises(FormatError, match=message):
        saekit.load_dictionary(target)


def test_foreign_pt_files_with_wrong_types_are_named(tmp_path):
    t = torch.load(FIXTURES / "openai_topk" / "ae.pt", weights_only=True)
    torch.save({**t, "activation_state_dict": [6]}, tmp_path / "a.pt")
    with pytest.raises(FormatError, match=r"a\.pt: field 'activation_state_dict' must be a dict"):
        saekit.load_dictionary(tmp_path / "a.pt")
    torch.save({**t, "activation_state_dict": {"k": "6"}}, tmp_path / "b.pt")
    with pytest.raises(FormatError, match=r"b\.pt: field 'activation_state_dict\.k' must be a positive integer"):
        saekit.load_dictionary(tmp_path / "b.pt")
    torch.save({**t, "encoder.weight": t["encoder.weight"][:, :5]}, tmp_path / "c.pt")
    with pytest.raises(FormatError, match=r"c\.pt: tensor 'encoder\.weight' has shape \(64, 5\), expected \(64, 32\)"):
        saekit.load_dictionary(tmp_path / "c.pt")
    (tmp_path / "d.pt").write_bytes((FIXTURES / "openai_topk" / "ae.pt").read_bytes()[:3000])
    with pytest.raises(FormatError, match=r"d\.pt: not a readable torch checkpoint"):
        saekit.load_dictionary(tmp_path / "d.pt")


# --------------------------------------------------------------------------- trainer checkpoints


def _checkpoint(tmp_path):
    from saekit.training import Trainer

    x = torch.randn(2048, 16, generator=torch.Generator().manual_seed(0))
    t = Trainer(x, "topk", 32, 4, batch_size=256, n_tokens=2048)
    for _ in range(3):
        t.train_step()
    t.save_checkpoint(tmp_path / "ck")
    return t, Trainer(x, "topk", 32, 4, batch_size=256, n_tokens=2048)


def test_checkpoint_hash_finite_and_shapes(tmp_path):
    t, fresh = _checkpoint(tmp_path)
    ck = tmp_path / "ck"
    fresh.load_checkpoint(ck)
    assert fresh.step == 3 and torch.equal(fresh.sae.W_dec, t.sae.W_dec)
    good = (ck / "state.safetensors").read_bytes()
    bad = bytearray(good)
    bad[-100] ^= 0x10
    (ck / "state.safetensors").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"state\.safetensors: sha256 .* modified or truncated"):
        fresh.load_checkpoint(ck)
    meta = json.loads((ck / "state.json").read_text())
    meta_good = dict(meta)
    meta["scale"] = meta["scale"] * 2
    (ck / "state.json").write_text(json.dumps(meta))
    (ck / "state.safetensors").write_bytes(good)
    with pytest.raises(ValueError, match=r"state\.json: its fields' sha256 differs"):
        fresh.load_checkpoint(ck)
    # without hashes (checkpoints of today's save_checkpoint): the tensors' own checks
    del meta_good["sha256"]
    (ck / "state.json").write_text(json.dumps(meta_good))
    tensors = load_file(ck / "state.safetensors")
    save_file({**tensors, "sae.W_dec": tensors["sae.W_dec"].clone().fill_(float("nan"))}, str(ck / "state.safetensors"))
    with pytest.raises(ValueError, match=r"state\.safetensors: tensor 'sae\.W_dec' has NaN/inf"):
        fresh.load_checkpoint(ck)
    save_file({**tensors, "opt.0.exp_avg": tensors["opt.0.exp_avg"][:3].contiguous()}, str(ck / "state.safetensors"))
    with pytest.raises(ValueError, match=r"state\.safetensors: tensor 'opt\.0\.exp_avg' is torch\.float32 \(3, 16\), "
                                         r"expected torch\.float32 \(32, 16\)"):
        fresh.load_checkpoint(ck)
    save_file({k: v for k, v in tensors.items() if k != "fired"}, str(ck / "state.safetensors"))
    with pytest.raises(ValueError, match=r"state\.safetensors: missing tensor\(s\) \['fired'\]"):
        fresh.load_checkpoint(ck)
    save_file(tensors, str(ck / "state.safetensors"))
    for field, value, message in (("step", "3", r"field 'step' must be an integer"),
                                  ("scale", float("nan"), r"field 'scale' must be a finite number"),
                                  ("step", 99, r"step 99 of 8 steps")):
        (ck / "state.json").write_text(json.dumps({**meta_good, field: value}))
        with pytest.raises(ValueError, match=r"state\.json: " + message):
            fresh.load_checkpoint(ck)
    (ck / "state.json").write_text(json.dumps({k: v for k, v in meta_good.items() if k != "seen"}))
    with pytest.raises(ValueError, match=r"field 'seen' must be an integer >= 0, got None \(missing\)"):
        fresh.load_checkpoint(ck)


# --------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("line, message", [
    ("d_dict = \"4096\"", r"key 'd_dict' must be int, got '4096'"),
    ("d_dict = -1", r"key 'd_dict' must be >= 1, got -1"),
    ("lr = nan", r"key 'lr' must be float \| None, got nan"),
    ("k = [8]", r"key 'k' must be int \| None"),
    ("options = 3", r"key 'options' must be dict"),
    ("stream = 1", r"key 'stream' must be bool"),
    ("sweep = [{k = \"8\"}]", r"sweep entry .*key 'k' must be int \| None"),
    ("decay_start = 1.5", r"key 'decay_start' must be in \[0.0, 1.0\]"),
])
def test_recipe_types_are_named(tmp_path, line, message):
    from saekit.config import load_config

    (tmp_path / "r.toml").write_text(line + "\n")
    with pytest.raises(ValueError, match=r"r\.toml: " + message):
        load_config(tmp_path / "r.toml")
    (tmp_path / "bin.toml").write_bytes(b"kind = \"\xff\"\n")
    with pytest.raises(ValueError, match=r"bin\.toml: not valid TOML"):
        load_config(tmp_path / "bin.toml")
