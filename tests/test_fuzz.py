"""Property-based fuzzing of every file saekit reads.

Each test takes a valid file of one format, damages a copy of it (truncation at a
random length; random bit flips; random bytes overwritten; for JSON/TOML configs a
random field, at any depth, deleted or retyped: to a string, a list, null, a nested
object, a huge integer, a negative number, NaN, a float or a bool; for safetensors
files the header's dtype, shape or data_offsets of a tensor changed, a tensor renamed
or dropped, bad ``__metadata__``) and loads it with saekit's own loader. The property:

- it raises saekit's named error (``FormatError``, ``CacheError``, another
  ``ValueError`` subclass, ``ValueError`` or ``FileNotFoundError``) whose message names
  the file, or
- it loads, and then what it loaded is checked as below;

never an internal exception (TypeError, KeyError, AttributeError, IndexError,
struct.error, UnicodeDecodeError, RuntimeError from torch, OverflowError, ...; any of
them fails the test), never a hang (``pytest.mark.timeout``), never non-finite tensors.

What "loads" must give, per format (the honest part):

- **Files with a checksum detect every payload change**: a saekit dictionary's tensor
  files (sha256 per file in ``cfg.json["saekit"]["sha256"]``), an activation cache's
  shards (sha256 per shard in the manifest, checked on first read), a feature store's
  tensors (``tensors_sha256``) and a trainer checkpoint (``state.json["sha256"]``, for
  both ``state.safetensors`` and ``state.json``'s own fields; this module adds the
  entry itself when ``Trainer.save_checkpoint`` does not write it yet, exactly as
  ``save_checkpoint`` is to write it). Anything that loads from a damaged copy of these
  loads to exactly the original tensors (``torch.equal``).
- **Formats without a checksum** (SAELens, sparsify, dictionary_learning, Gemma Scope,
  OpenAI) cannot detect a bit flip inside the tensor payload that gives another finite
  number, nor a safetensors header edit that points a tensor at other bytes of the
  same size. For payload and header damage to these the property is: a named error,
  or a dictionary whose tensors are all finite and whose encode/decode of a small
  batch is finite and shaped right.
- **Configs are not checksummed** (cfg.json is meant to be read by SAELens and by
  people; recipes are written by hand). A deleted or retyped field loads to exactly
  the original unless it is a field the format makes optional or free-form (SAELens'
  hook/model names and flags with defaults, saekit's ``processing``/``options``/
  ``metadata``, a cache's or store's provenance strings): then the load must give the
  original tensors (where checksummed) and the file's own value for that field. A bit
  flip inside a config that leaves valid JSON/TOML with another valid value (a digit of
  an option, a letter of a model name) loads as the file says; saekit cross-checks
  what it can (``d_in``, ``d_sae``, ``k``, ``architecture``, hook and model names
  against the saekit section; manifest fields against the tensors they describe).
- A TOML recipe that parses must hold only values of each field's declared type and
  range (the rest raises a ValueError naming the file and key).

``CASES`` counts the cases tried per format and outcome; the module fixture
``fuzz_summary`` prints the table after the tests (run with ``-s``) and checks every
format fuzzed got at least 50 cases.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import shutil
import struct
import tempfile
import tomllib
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DataObject

import saekit
from saekit.activations import CacheError, CacheWriter, open_cache
from saekit.config import TrainConfig, load_config
from saekit.dictionaries import REGISTRY, DictionaryConfig
from saekit.formats import FormatError

FIXTURES = ROOT / "tests" / "fixtures" / "formats"
NAMED = (FormatError, CacheError, ValueError, FileNotFoundError)
CASES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def fuzz(n: int):
    """Hypothesis settings for ``n`` cases, reproducible (derandomized), no deadline."""
    return settings(FUZZ, max_examples=n)


# --------------------------------------------------------------------------- mutations


def json_paths(obj, prefix=()):
    """Every path (dict keys and list indices) to a value inside a JSON document."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    out = []
    for k, v in items:
        out.append((*prefix, k))
        out.extend(json_paths(v, (*prefix, k)))
    return out


RETYPES = ("delete", "str", "list", "null", "dict", "huge", "neg", "nan", "float", "bool")


def retyped(v, op):
    num = isinstance(v, (int, float)) and not isinstance(v, bool)
    return {"str": str(v) if not isinstance(v, str) else v + "x", "list": [v], "null": None,
            "dict": {"nested": {"v": v}}, "huge": 10**30, "neg": -abs(v) - 1 if num else -1,
            "nan": float("nan"), "float": (v + 0.5) if num else 0.5, "bool": not v if isinstance(v, bool) else True}[op]


def mutate_tree(doc, path, op):
    doc = json.loads(json.dumps(doc))  # a deep copy
    node = doc
    for k in path[:-1]:
        node = node[k]
    if op == "delete":
        del node[path[-1]]
    else:
        node[path[-1]] = retyped(node[path[-1]], op)
    return doc


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def toml_dumps(doc: dict) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in doc.items() if v is not None)


def mutate_bytes(data: bytes, draw: DataObject) -> tuple[str, bytes]:
    op = draw.draw(st.sampled_from(["truncate", "flip", "overwrite"]), label="bytes op")
    if op == "truncate" or not data:
        return "truncate", data[:draw.draw(st.integers(0, max(len(data) - 1, 0)), label="length")]
    out = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4), label="n")):
        i = draw.draw(st.integers(0, len(data) - 1), label="at")
        if op == "flip":
            out[i] ^= 1 << draw.draw(st.integers(0, 7), label="bit")
        else:
            out[i] = draw.draw(st.integers(0, 255), label="byte")
    return op, bytes(out)


def mutate_header(data: bytes, draw: DataObject) -> tuple[str, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    header, payload = json.loads(data[8:8 + n]), data[8 + n:]
    names = sorted(k for k in header if k != "__metadata__")
    name = draw.draw(st.sampled_from(names), label="tensor")
    e = header[name]
    op = draw.draw(st.sampled_from(["dtype", "shape", "offsets", "delete", "rename", "metadata"]), label="header op")
    if op == "dtype":
        e["dtype"] = draw.draw(st.sampled_from(["F16", "BF16", "F64", "I32", "I64", "U8", "BOOL", "F8_E4M3", "Z9", 7,
                                                None]), label="dtype")
    elif op == "shape":
        shape = list(e["shape"])
        how = draw.draw(st.sampled_from(["+1", "-1", "0", "swap", "drop", "append", "huge", "neg", "str"]))
        i = draw.draw(st.integers(0, max(len(shape) - 1, 0)))
        if shape and how in ("+1", "-1", "0", "huge", "neg", "str"):
            shape[i] = {"+1": shape[i] + 1, "-1": shape[i] - 1, "0": 0, "huge": 2**40, "neg": -1, "str": "a"}[how]
        elif how == "swap":
            shape = shape[::-1]
        elif how == "drop":
            shape = shape[:-1]
        else:
            shape = [*shape, 1]
        e["shape"] = shape
    elif op == "offsets":
        lo, hi = e["data_offsets"]
        how = draw.draw(st.sampled_from(["start", "end", "both", "swap", "other", "huge", "str"]))
        delta = draw.draw(st.sampled_from([-8, -4, -1, 1, 4, 8]))
        if how == "start":
            lo += delta
        elif how == "end":
            hi += delta
        elif how == "both":
            lo, hi = lo + delta, hi + delta
        elif how == "swap":
            lo, hi = hi, lo
        elif how == "huge":
            hi = 2**62
        elif how == "other":
            other = header[draw.draw(st.sampled_from(names))]
            lo, hi = other["data_offsets"]
        e["data_offsets"] = [lo, hi] if how != "str" else [lo, "x"]
    elif op == "delete":
        del header[name]
    elif op == "rename":
        header[name + "_"] = header.pop(name)
    else:
        header["__metadata__"] = draw.draw(st.sampled_from([{"x": 1}, [1], "x", {"format": "pt", "y": None}]))
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    return f"header.{op}", struct.pack("<Q", len(new)) + new + payload


# --------------------------------------------------------------------------- the engine


@dataclasses.dataclass
class Mutation:
    file: str  # relative path of the damaged file
    op: str  # "truncate", "flip", "overwrite", "header.<op>", "json.<op>"
    path: tuple = ()  # the JSON/TOML field, for json ops


def mutate(root: Path, files: dict[str, str], draw: DataObject) -> Mutation:
    """Damage one file under ``root`` in place. ``files``: relative path -> kind
    (``json``, ``toml``, ``safetensors``, ``bytes``)."""
    rel = draw.draw(st.sampled_from(sorted(files)), label="file")
    kind, f = files[rel], root / rel
    data = f.read_bytes()
    families = ["bytes"] + {"json": ["tree"] * 2, "toml": ["tree"] * 2, "safetensors": ["header"] * 2}.get(kind, [])
    family = draw.draw(st.sampled_from(families), label="family")
    if family == "bytes":
        op, new = mutate_bytes(data, draw)
        f.write_bytes(new)
        return Mutation(rel, op)
    if family == "header":
        op, new = mutate_header(data, draw)
        f.write_bytes(new)
        return Mutation(rel, op)
    doc = json.loads(data) if kind == "json" else tomllib.loads(data.decode())
    paths = json_paths(doc)
    path = draw.draw(st.sampled_from(paths), label="field")
    op = draw.draw(st.sampled_from(RETYPES if kind == "json" else [r for r in RETYPES if r != "null"]), label="op")
    doc = mutate_tree(doc, path, op)
    f.write_text(json.dumps(doc, indent=1) if kind == "json" else toml_dumps(doc))
    return Mutation(rel, f"json.{op}", path)


def fuzz_one(fmt: str, template: Path, files: dict[str, str], draw: DataObject, load, check) -> None:
    """Copy ``template``, damage one file, load it; a named error must name the file,
    anything loaded goes to ``check(loaded, mutation)``, which returns the outcome."""
    tmp = Path(tempfile.mkdtemp(prefix=f"fuzz-{fmt}-"))
    try:
        root = tmp / template.name
        shutil.copytree(template, root)
        m = mutate(root, files, draw)
        try:
            loaded = load(root)
        except NAMED as e:
            msg = str(e)
            assert str(tmp) in msg or Path(m.file).name in msg, f"{type(e).__name__} names no file: {msg}"
            CASES[fmt]["error"] += 1
            return
        CASES[fmt][check(loaded, m)] += 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- dictionaries


def _state(d) -> dict[str, torch.Tensor]:
    out = dict(d.state_dict())
    if d.log_firing_freq is not None:
        out["log_firing_freq"] = d.log_firing_freq
    return out


def _cfg(d) -> dict:
    c = d.cfg.to_dict()
    c["metadata"] = {k: v for k, v in c["metadata"].items() if k != "source_path"}
    return c


def assert_sound(d) -> None:
    """The weak property: finite tensors, finite and well-shaped encode/decode."""
    for name, t in _state(d).items():
        assert torch.isfinite(t).all(), f"loaded tensor {name} is not finite"
    DictionaryConfig.from_dict(d.cfg.to_dict())  # a valid config
    x = torch.randn(5, d.cfg.d_in, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        codes = d.encode(x)
        x_hat = d.decode(codes)
    assert codes.shape == (5, d.cfg.d_dict) and x_hat.shape == (5, d.cfg.d_in)
    assert torch.isfinite(codes).all() and torch.isfinite(x_hat).all()


def is_exact(d, orig) -> bool:
    a, b = _state(d), _state(orig)
    return (type(d) is type(orig) and _cfg(d) == _cfg(orig) and a.keys() == b.keys()
            and all(torch.equal(a[k], b[k]) for k in a))


def dictionary_check(orig, payload_hashed: bool, optional: set[tuple], free_config: bool):
    """``payload_hashed``: tensor files carry a checksum. ``optional``: config paths
    (prefixes) whose change may legitimately change the dictionary. ``free_config``:
    byte damage to the config may load as the file says (tensors still exact if hashed)."""

    def check(d, m: Mutation) -> str:
        assert_sound(d)
        if is_exact(d, orig):
            return "exact"
        config = m.file.endswith((".json", ".toml"))
        a, b = _state(d), _state(orig)
        if m.path == ("saekit",) and m.op == "json.delete":  # what is left is a SAELens directory
            assert d.cfg.metadata.get("source_format") == "saelens" and all(torch.equal(a[k], b[k]) for k in b)
            return "file-says"
        if m.op.startswith("json.") and not any(m.path[:len(p)] == p for p in optional):
            raise AssertionError(f"{m}: a non-optional config field changed and it loaded to something else")
        if payload_hashed and not (a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)):
            raise AssertionError(f"{m}: checksummed tensors loaded changed")
        if payload_hashed and not config:
            raise AssertionError(f"{m}: damage to a checksummed file went undetected")
        if config and m.op.startswith("json."):
            return "file-says"
        if config and free_config:
            return "file-says"
        assert not payload_hashed
        return "weak"

    return check


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-templates")


def _small_topk():
    cfg = DictionaryConfig(kind="topk", d_in=8, d_dict=16, k=3, hook="blocks.1.mlp.hook_post", model="demo-lm",
                           processing="hooked")
    sae = REGISTRY["topk"](cfg)
    g = torch.Generator().manual_seed(0)
    sae.reset_parameters(g)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=g)
        sae.b_dec.normal_(0, 0.1, generator=g)
    sae.log_firing_freq = torch.linspace(-3, -1, 16)
    return sae


def _small_snmf():
    cfg = DictionaryConfig(kind="snmf", d_in=8, d_dict=12, hook="blocks.1.mlp.hook_post", model="demo-lm",
                           processing="hooked")
    d = REGISTRY["snmf"](cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        d.W_dec.copy_(torch.nn.functional.normalize(torch.randn(12, 8, generator=g), dim=1))
        d.b_dec.normal_(0, 0.1, generator=g)
    return d


@pytest.fixture(scope="module")
def saekit_dirs(workdir):
    """A TopK SAE with sparsity and an SNMF dictionary, saved natively; each with its check."""
    optional = {("saekit", "processing"), ("saekit", "metadata"), ("saekit", "options")}
    out = {}
    for name, d in (("topk", _small_topk()), ("snmf", _small_snmf())):
        path = d.save(workdir / f"saekit_{name}")
        files = {p.name: "json" if p.suffix == ".json" else "safetensors" for p in path.iterdir()}
        out[name] = (path, files, dictionary_check(saekit.load_dictionary(path), True, optional, free_config=True))
    return out


@pytest.mark.timeout(120)
@fuzz(1200)
@given(data=st.data())
def test_fuzz_saekit_dictionary(saekit_dirs, data):
    path, files, check = saekit_dirs[data.draw(st.sampled_from(sorted(saekit_dirs)), label="kind")]
    fuzz_one("saekit", path, files, data, saekit.load_dictionary, check)


# Paths (prefixes) of each foreign config whose change may change what loads.
SAELENS_OPTIONAL = {("architecture",), ("normalize_activations",), ("apply_b_dec_to_input",),
                    ("rescale_acts_by_decoder_norm",), ("metadata",), ("hook_name",), ("model_name",)}
FOREIGN = {
    # name: (template directory, what to load inside it, files, optional config paths)
    "saelens": ("saelens_topk", "", {"cfg.json": "json", "sae_weights.safetensors": "safetensors"},
                SAELENS_OPTIONAL),
    "saelens_sparsity": ("saelens_with_sparsity", "", {"cfg.json": "json", "sae_weights.safetensors": "safetensors",
                                                      "sparsity.safetensors": "safetensors"}, SAELENS_OPTIONAL),
    "sparsify": ("sparsify_topk", "layers.0.mlp", {"layers.0.mlp/cfg.json": "json", "config.json": "json",
                                                   "layers.0.mlp/sae.safetensors": "safetensors"},
                 {("model",)}),
    "dictionary_learning": ("dictionary_learning_batchtopk", "", {"config.json": "json", "ae.pt": "bytes"},
                            {("trainer", "submodule_name"), ("trainer", "lm_name")}),
    "gemma_scope": ("gemma_scope", "layer_3/width_16k/average_l0_20/params.npz", None, set()),
    "openai": ("openai_topk", "ae.pt", {"ae.pt": "bytes"}, set()),
}


@pytest.fixture(scope="module")
def foreign(workdir):
    out = {}
    for name, (fixture, inner, files, optional) in FOREIGN.items():
        template = workdir / fixture
        if not template.exists():  # a copy: the fixtures themselves are never touched
            shutil.copytree(FIXTURES / fixture, template,
                            ignore=shutil.ignore_patterns("expected.safetensors", "fixture.json"))
        if files is None:
            files = {str(p.relative_to(template)): "bytes" for p in template.rglob("*.npz")}
            inner = next(iter(files))
        orig = saekit.load_dictionary(template / inner)
        out[name] = (template, inner, files, dictionary_check(orig, False, optional, free_config=True))
    return out


@pytest.mark.timeout(180)
@fuzz(2500)
@given(data=st.data())
def test_fuzz_foreign_dictionaries(foreign, data):
    name = data.draw(st.sampled_from(sorted(foreign)), label="format")
    template, inner, files, check = foreign[name]
    fuzz_one(name, template, files, data, lambda root: saekit.load_dictionary(root / inner), check)


# --------------------------------------------------------------------------- activation caches

CACHE_HOOKS = {"blocks.0.hook_resid_post": 8, "blocks.1.mlp.hook_post": 12}
#: Manifest fields that are provenance only: a changed value loads as the file says.
CACHE_FREE = {"model", "processing", "data", "created", "extra", "ctx_len"}


@pytest.fixture(scope="module")
def cache_dir(workdir):
    path = workdir / "cache"
    g = torch.Generator().manual_seed(0)
    with CacheWriter(path, CACHE_HOOKS, model="toy", processing="raw", data="synthetic", shard_tokens=16,
                     ctx_len=8, extra={"note": "fuzz"}) as w:
        for n in (10, 20, 12):
            w.add({h: torch.randn(n, d, generator=g) for h, d in CACHE_HOOKS.items()})
    return path


def _read_cache(root):
    c = open_cache(root)
    return c.manifest, {h: c.tensor(h).clone() for h in c.hooks}


@pytest.mark.timeout(120)
@fuzz(800)
@given(data=st.data())
def test_fuzz_activation_cache(cache_dir, data):
    manifest, tensors = _read_cache(cache_dir)
    files = {str(p.relative_to(cache_dir)): "safetensors" for p in cache_dir.rglob("*.safetensors")}
    files["manifest.json"] = "json"

    def check(loaded, m: Mutation) -> str:
        got_manifest, got = loaded
        assert got.keys() == tensors.keys() and all(torch.equal(got[h], tensors[h]) for h in got), \
            f"{m}: a damaged cache loaded other activations"
        if got_manifest == manifest:
            return "exact"
        if m.op.startswith("json."):
            assert m.path[0] in CACHE_FREE, f"{m}: manifest field changed undetected"
        return "file-says"

    fuzz_one("cache", cache_dir, files, data, _read_cache, check)


# --------------------------------------------------------------------------- feature stores

#: Manifest fields that are provenance only (or optional): a changed value loads as the file says.
STORE_FREE = {"model", "processing", "hook", "dataset", "dictionary", "tokens_sha256", "features_sha256", "seed",
              "n_windows", "ctx_len", "top_k", "n_samples"}


@pytest.fixture(scope="module")
def store_dir(workdir, demo_model):
    from saekit.interp.store import collect

    topk = saekit.load_dictionary(ROOT / "checkpoints" / "demo-topk")
    tokens = saekit.load_tokens("demo", demo_model, n_tokens=6 * 32, ctx_len=32, seed=5)
    collect(demo_model, topk, tokens, features=list(range(8)), top_k=3, n_samples=2, out=workdir / "store",
            context=(4, 2))
    return workdir / "store"


@pytest.mark.timeout(120)
@fuzz(700)
@given(data=st.data())
def test_fuzz_feature_store(store_dir, data):
    from saekit.interp.store import FeatureStore

    orig = FeatureStore.load(store_dir)
    files = {"manifest.json": "json", "store.safetensors": "safetensors"}

    def check(store, m: Mutation) -> str:
        assert store.t.keys() == orig.t.keys() and all(torch.equal(store.t[k], orig.t[k]) for k in orig.t), \
            f"{m}: a damaged store loaded other tensors"
        if store.manifest == orig.manifest:
            return "exact"
        if m.op.startswith("json."):
            assert m.path[0] in STORE_FREE, f"{m}: manifest field changed undetected"
        return "file-says"

    fuzz_one("feature_store", store_dir, files, data, FeatureStore.load, check)


# --------------------------------------------------------------------------- trainer checkpoints


def _trainer():
    from saekit.training import Trainer

    x = torch.randn(2048, 16, generator=torch.Generator().manual_seed(0))
    return Trainer(x, "topk", 32, 4, batch_size=256, n_tokens=2048)


def _trainer_state(t) -> dict:
    tensors, meta = t.state()
    return {"tensors": {k: v.detach().clone() for k, v in tensors.items()},
            "meta": {k: meta[k] for k in ("step", "seen", "scale", "train_seconds", "steps")}}


@pytest.fixture(scope="module")
def checkpoint(workdir):
    t = _trainer()
    for _ in range(5):
        t.train_step()
    t.save_checkpoint(workdir / "checkpoint")
    assert "sha256" in json.loads((workdir / "checkpoint" / "state.json").read_text())
    return workdir / "checkpoint", _trainer_state(t), _trainer()


@pytest.mark.timeout(120)
@fuzz(700)
@given(data=st.data())
def test_fuzz_trainer_checkpoint(checkpoint, data):
    template, orig, target = checkpoint
    files = {"state.json": "json", "state.safetensors": "safetensors"}

    def load(root):
        target.load_checkpoint(root)
        return _trainer_state(target)

    def check(state, m: Mutation) -> str:
        a, b = state["tensors"], orig["tensors"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{m}: other tensors loaded"
        assert state["meta"] == orig["meta"], f"{m}: other fields loaded: {state['meta']} != {orig['meta']}"
        return "exact"

    fuzz_one("trainer_checkpoint", template, files, data, load, check)


# --------------------------------------------------------------------------- TOML recipes


@pytest.fixture(scope="module")
def recipe_dir(workdir):
    doc = tomllib.loads((ROOT / "train" / "demo.toml").read_text())
    doc.update(lr=0.001, warmup_steps=10, decay_start=0.8, options={"aux_coefficient": 0.5},
               sweep=[{"k": 8}, {"k": 16, "lr": 0.002}], dead_tokens=None)
    (workdir / "recipe").mkdir()
    (workdir / "recipe" / "recipe.toml").write_text(toml_dumps(doc))
    return workdir / "recipe"


def _conforms(cfg) -> None:
    from saekit.config import check_values

    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    check_values(TrainConfig, values, "loaded config")  # raises if a field has the wrong type or range


@pytest.mark.timeout(120)
@fuzz(700)
@given(data=st.data())
def test_fuzz_toml_recipe(recipe_dir, data):
    orig = load_config(recipe_dir / "recipe.toml")
    default = TrainConfig()

    def check(cfg, m: Mutation) -> str:
        _conforms(cfg)
        if cfg == orig:
            return "exact"
        changed = {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(orig, f.name)}
        if m.op.startswith("json."):
            assert changed == {m.path[0]}, f"{m}: fields {changed} changed"
            if m.op == "json.delete" and len(m.path) == 1:
                assert getattr(cfg, m.path[0]) == getattr(default, m.path[0])
        return "file-says"

    fuzz_one("toml_recipe", recipe_dir, {"recipe.toml": "toml"}, data,
             lambda root: load_config(root / "recipe.toml"), check)


# --------------------------------------------------------------------------- summary


@pytest.fixture(scope="module", autouse=True)
def fuzz_summary():
    """After the module's tests: print the cases fuzzed per format and outcome (``-s``
    shows it) and check that every format that was fuzzed got at least 50 cases."""
    yield
    if not CASES:  # every fuzz test deselected: nothing to report
        return
    width = max(map(len, CASES))
    outcomes = ("error", "exact", "file-says", "weak")
    print("\ncases fuzzed per format:")
    print(f"  {'format':<{width}}  " + "  ".join(f"{o:>9}" for o in outcomes) + "      total")
    for fmt in sorted(CASES):
        c = CASES[fmt]
        print(f"  {fmt:<{width}}  " + "  ".join(f"{c[o]:>9}" for o in outcomes) + f"  {sum(c.values()):>9}")
    for fmt, c in CASES.items():
        assert sum(c.values()) >= 50, f"only {sum(c.values())} cases fuzzed for {fmt}"
