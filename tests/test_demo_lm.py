"""The committed demo LM: its files, its card, and that its tokenizer rebuilds from the seed."""

import importlib.util
import json
import sys

from conftest import DEMO_LM, ROOT


def _recipe_module():
    spec = importlib.util.spec_from_file_location("train_demo_lm", ROOT / "train" / "train_demo_lm.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_files_size_and_card():
    cfg = json.loads((DEMO_LM / "config.json").read_text())
    assert cfg["architecture"] == "TransformerLensNative"
    assert 2 <= cfg["n_layers"] <= 4 and 128 <= cfg["d_model"] <= 256 and cfg["d_mlp"] == 4 * cfg["d_model"]
    assert (DEMO_LM / "model.safetensors").stat().st_size <= 20 * 2**20
    summary = json.loads((DEMO_LM / "train_summary.json").read_text())
    card = (DEMO_LM / "README.md").read_text()
    assert f"{summary['heldout_loss']:.3f}" in card and f"{summary['unigram_heldout_loss']:.3f}" in card
    assert summary["train_seconds"] <= 60 * 60


def test_tokenizer_rebuilds_exactly_from_the_seed(tmp_path):
    mod = _recipe_module()
    recipe = mod.DemoLMRecipe(**{k: v for k, v in json.loads(
        (DEMO_LM / "train_summary.json").read_text())["recipe"].items()})
    mod.train_tokenizer(recipe, tmp_path / "tokenizer.json")
    rebuilt = json.loads((tmp_path / "tokenizer.json").read_text())
    committed = json.loads((DEMO_LM / "tokenizer.json").read_text())
    assert rebuilt["model"]["vocab"] == committed["model"]["vocab"]
    assert rebuilt["model"]["merges"] == committed["model"]["merges"]


def test_demo_lm_recipe_is_the_committed_models_recipe():
    import tomllib

    mod = _recipe_module()
    recipe = mod.DemoLMRecipe(**tomllib.loads((ROOT / "train" / "demo_lm.toml").read_text()))
    committed = json.loads((DEMO_LM / "train_summary.json").read_text())["recipe"]
    assert vars(recipe) == committed
