"""One typed config per job: checked in one place, written back as TOML, and turned into
command-line flags (saekit.schema, saekit.config); per-kind options checked against the
dataclass declared beside each dictionary class."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from conftest import DEMO_LM

from saekit.activations.job import HarvestConfig
from saekit.cli import build_parser, main
from saekit.compare import CompareConfig
from saekit.config import TrainConfig, load_config
from saekit.demo import DemoConfig
from saekit.dictionaries import REGISTRY, DictionaryConfig
from saekit.evals import EVALUATORS, evaluator
from saekit.schema import add_config_arguments, dump_toml, field_docs, given_overrides
from saekit.toy_report import ToyConfig


@dataclass
class Example:
    """A config with one field of each kind the generator maps."""

    name: str
    """Required: no default."""
    size: int = 8
    """How many (at least 1)."""
    rate: float | None = None
    """Optional rate."""
    mode: Literal["fast", "exact"] = "fast"
    """How to run."""
    verbose: bool = False
    """Say more."""
    keep: bool = True
    """Keep things."""
    items: list[str] = field(default_factory=list)
    """Several values."""
    table: dict[str, Any] = field(default_factory=dict)
    """Only from TOML or --set."""

    RANGES = {"size": (1, None)}


def _parser(**kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="example", exit_on_error=False)
    add_config_arguments(p, Example, **kw)
    return p


# --------------------------------------------------------------------------- the generator


def test_flags_come_from_the_fields():
    p = _parser()
    actions = {a.dest: a for a in p._actions if a.dest != "help"}
    # a table has no flag form: TOML and --set only
    assert set(actions) == {"name", "size", "rate", "mode", "verbose", "keep", "items"}
    assert actions["size"].option_strings == ["--size"] and actions["size"].type is int
    assert actions["size"].default == 8 and actions["rate"].default is None and actions["rate"].type is float
    assert actions["mode"].choices == ("fast", "exact")
    assert actions["verbose"].option_strings == ["--verbose", "--no-verbose"]
    assert actions["items"].nargs == "+"
    helps = p.format_help()
    assert "How many (at least 1). (default: 8)" in helps and "Say more." in helps
    assert field_docs(Example)["table"] == "Only from TOML or --set."


def test_parsed_flags_become_overrides_in_the_order_given():
    args = _parser().parse_args(["--mode", "exact", "--no-keep", "--verbose", "--items", "a", "b", "--size", "8"])
    assert (args.mode, args.keep, args.verbose, args.items, args.rate) == ("exact", False, True, ["a", "b"], None)
    # --size 8 equals the default, and still counts: a flag beats the TOML file
    assert given_overrides(Example, args) == ['mode="exact"', "keep=false", "verbose=true", 'items=["a", "b"]',
                                              "size=8"]
    assert given_overrides(Example, _parser().parse_args([])) == []


def test_bad_flags_fail_in_argparse_naming_the_flag_and_choices():
    with pytest.raises(argparse.ArgumentError, match=r"--mode.*invalid choice: 'slow'.*'fast', 'exact'"):
        _parser().parse_args(["--mode", "slow"])
    with pytest.raises(argparse.ArgumentError, match=r"--size.*invalid int value: 'sixteen'"):
        _parser().parse_args(["--size", "sixteen"])


def test_positional_fields_and_a_single_or_several():
    p = argparse.ArgumentParser()
    add_config_arguments(p, Example, positional={"items": "ITEMS"}, exclude=("name",))
    assert p.parse_args(["x", "y"]).items == ["x", "y"]
    assert given_overrides(Example, p.parse_args([])) == []  # a positional that is not given
    args = build_parser().parse_args(["train", "r.toml", "--hook", "blocks.1.mlp.hook_post"])
    assert args.hook == "blocks.1.mlp.hook_post"  # `str | list[str]`: one value stays a string
    assert build_parser().parse_args(["train", "r.toml", "--hook", "a", "b"]).hook == ["a", "b"]


# --------------------------------------------------------------------------- checking, in one place


def test_values_are_checked_naming_the_source_the_key_and_what_it_takes(tmp_path):
    with pytest.raises(ValueError, match=r"--set k=sixteen: key 'k' must be int \| None, got 'sixteen'"):
        load_config(None, ["k=sixteen"])
    with pytest.raises(ValueError, match=r"--set mode=\"slow\": key 'mode' must be one of 'fast', 'exact'"):
        load_config(None, ['name="a"', 'mode="slow"'], cls=Example)
    with pytest.raises(ValueError, match=r"--set size=0: key 'size' must be >= 1, got 0"):
        load_config(None, ["size=0"], cls=Example)
    with pytest.raises(ValueError, match=r"--set nmae=1: unknown key 'nmae'; allowed: \[.*'name'"):
        load_config(None, ["nmae=1"], cls=Example)
    with pytest.raises(ValueError, match=r"defaults: missing required key\(s\) \['name'\].*--name"):
        load_config(None, [], cls=Example)
    bad = tmp_path / "h.toml"
    bad.write_text('model = "m"\nhooks = ["blocks.0.hook_resid_post"]\nn_tokens = 64\ndtype = "f32"\n')
    with pytest.raises(ValueError, match=r"h\.toml: key 'dtype' must be one of 'float32', 'float16', 'bfloat16', "
                                         r"got 'f32'"):
        load_config(bad, cls=HarvestConfig)
    bad.write_text('model = "m"\nhooks = []\nn_tokens = 64\n')
    with pytest.raises(ValueError, match=r"h\.toml: key 'hooks' lists no hook"):
        load_config(bad, cls=HarvestConfig)
    # a config object is checked as a file is
    with pytest.raises(ValueError, match=r"HarvestConfig given: key 'n_tokens' must be >= 1, got 0"):
        load_config(HarvestConfig("m", ["blocks.0.hook_resid_post"], 0), cls=HarvestConfig)


def test_the_command_fails_before_any_work(tmp_path, capsys):
    out = tmp_path / "cache"
    rc = main(["harvest", "--model", str(DEMO_LM), "--hooks", "blocks.0.hook_resid_post", "--n-tokens", "512",
               "--set", "ctx_len=sixteen", "--out", str(out)])
    assert rc == 2 and "--set ctx_len=sixteen: key 'ctx_len' must be int, got 'sixteen'" in capsys.readouterr().err
    assert not out.exists()
    assert main(["harvest", "--out", str(out)]) == 2
    assert "missing required key(s) ['hooks', 'model', 'n_tokens']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["harvest", "--dtype", "f32"])
    assert "invalid choice: 'f32' (choose from 'float32', 'float16', 'bfloat16')" in capsys.readouterr().err
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{DEMO_LM}"\n')
    rc = main(["train", str(recipe), "--set", "options.aux_coefficient='big'", "--out", str(out)])
    assert rc == 2 and "option 'aux_coefficient' of kind 'topk' must be float" in capsys.readouterr().err
    assert not out.exists()


def test_a_flag_overrides_the_toml_file_and_set_overrides_a_flag(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("k = 16\nd_dict = 512\n")
    args = build_parser().parse_args(["train", str(recipe), "--k", "32", "--set", "d_dict=1024"])
    overrides = given_overrides(TrainConfig, args) + args.set
    cfg = load_config(args.config, overrides)
    assert (cfg.k, cfg.d_dict) == (32, 1024)  # 32 is the default: the flag still wins over the file


# --------------------------------------------------------------------------- TOML round trip

JOB_CONFIGS = [
    TrainConfig(hook=["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"], kind="jumprelu", lr=3e-4,
                options={"target_l0": 20.0, "bandwidth": 0.01}, sweep=[{"d_dict": 1024}, {"k": 8}]),
    HarvestConfig("checkpoints/demo-lm", ["blocks.0.hook_resid_post"], 4096, dtype="bfloat16", device="cpu"),
    CompareConfig(["a", "b"], "m", names=["x", "y"], refit_options={"topk": {"lr": 1e-3}}),
    ToyConfig(quick=True, threads=2),
    DemoConfig(model="smollm2-135m", n_tokens=1024),
    *(evaluator(name).Config() for name in sorted(EVALUATORS)),
]


@pytest.mark.parametrize("cfg", JOB_CONFIGS, ids=lambda c: type(c).__module__.rpartition(".")[2] + "." +
                         type(c).__name__)
def test_toml_round_trip(tmp_path, cfg):
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg))
    assert load_config(path, cls=type(cfg)) == cfg


def test_toml_cannot_write_none_over_a_default():
    with pytest.raises(ValueError, match="field 'threads' is None.*default is 1"):
        dump_toml(ToyConfig(threads=None))


def test_every_job_config_field_is_documented():
    for cfg in JOB_CONFIGS[:5]:
        docs = field_docs(type(cfg))
        missing = [f.name for f in dataclasses.fields(cfg) if f.name not in docs]
        assert not missing, (type(cfg).__name__, missing)


# --------------------------------------------------------------------------- per-kind options


def test_each_kind_declares_typed_documented_options_beside_its_class():
    for kind, cls in REGISTRY.items():
        opts = cls.Options
        assert dataclasses.is_dataclass(opts), kind
        assert opts.__module__ == cls.__module__, f"{kind}: options declared in {opts.__module__}"
        assert cls.OPTIONS == {f.name: f.default for f in dataclasses.fields(opts)}
        docs = field_docs(opts)
        assert all(f.name in docs for f in dataclasses.fields(opts)), kind
    assert REGISTRY["nmf"].OPTIONS["wta_fraction"] == 1.0 and REGISTRY["snmf"].OPTIONS["wta_fraction"] == 0.01


def test_options_are_validated_by_kind():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['l1_coefficient'\] for kind 'topk'; allowed: "
                                         r"\['apply_b_dec_to_input', 'aux_coefficient', 'aux_k', 'skip'\]"):
        DictionaryConfig("topk", 8, 16, k=2, options={"l1_coefficient": 1.0})
    with pytest.raises(ValueError, match=r"option 'aux_k' of kind 'topk' must be int \| None, got 2.5"):
        DictionaryConfig("topk", 8, 16, k=2, options={"aux_k": 2.5})
    with pytest.raises(ValueError, match=r"option 'solver' of kind 'snmf' must be one of 'hals', 'apg', 'mu', "
                                         r"got 'adam'"):
        DictionaryConfig("snmf", 8, 4, input_norm="none", options={"solver": "adam"})
    with pytest.raises(ValueError, match=r"option 'apply_b_dec_to_input' of kind 'relu' must be bool, got 1"):
        DictionaryConfig("relu", 8, 16, options={"apply_b_dec_to_input": 1})
    assert DictionaryConfig("jumprelu", 8, 16, options={"target_l0": 4}).options["target_l0"] == 4
    # on disk, options stay a plain dict
    assert DictionaryConfig("snmf", 8, 4, input_norm="none").to_dict()["options"]["solver"] == "hals"


def test_recipe_options_are_checked_for_every_sweep_variant(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('kind = "topk"\n[options]\naux_coefficient = 0.5\n')
    assert load_config(recipe).options == {"aux_coefficient": 0.5}
    with pytest.raises(ValueError, match=r"r\.toml: unknown option\(s\) \['aux_coefficient'\] for kind 'relu'"):
        load_config(recipe, ['kind="relu"'])
    with pytest.raises(ValueError, match=r"r\.toml: sweep entry kind=relu: unknown option\(s\)"):
        load_config(recipe, ['sweep=[{kind = "relu"}]'])
    with pytest.raises(ValueError, match=r"key 'kind' is 'gated', not a kind saekit trains; valid: \[.*'topk'"):
        load_config(recipe, ['kind="gated"', "options={}"])


def test_interp_config_can_adopt_the_generator():
    """InterpConfig (saekit/interp/pipeline.py) still declares its flags by hand; generated
    from its fields, they keep every name and default the hand-written ones have."""
    from saekit.interp.pipeline import InterpConfig

    p = argparse.ArgumentParser()
    add_config_arguments(p, InterpConfig)
    generated = {a.option_strings[0]: a.default for a in p._actions if a.option_strings and a.dest != "help"}
    hand = argparse.ArgumentParser(prog="saekit")
    from saekit.interp.pipeline import add_parser

    sub = hand.add_subparsers()
    add_parser(sub)
    written = {a.option_strings[0]: a.default for a in sub.choices["interp"]._actions
               if a.option_strings and a.dest in {f.name for f in dataclasses.fields(InterpConfig)}}
    assert written and all(generated[flag] == default for flag, default in written.items()), (written, generated)
