"""Evaluators: sensitive directions, synthetic activations, steering, stable regions and
features across layers, for any :class:`~saekit.Dictionary` on any TransformerLens model.

Each evaluator is a module with a config dataclass ``Config`` (a subclass of
:class:`EvalConfig`, loaded from TOML) and ``run(cfg, model=None, progress=False) ->
EvalResult``. ``saekit eval NAME CONFIG.toml [--out DIR] [--set key=value]`` runs one;
recipes are in ``eval/`` (demo-LM defaults, and GPT-2 small settings that match the
papers). Interventions go through :func:`saekit.splice` or
:func:`saekit.evals.common.perturbation_kl`.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from saekit.config import load_config
from saekit.evals.common import EvalConfig, EvalResult
from saekit.jobs import claim_output
from saekit.report import text_table

#: evaluator name (the CLI's) -> module
EVALUATORS = {
    "sensitivity": "saekit.evals.sensitivity",
    "synthetic": "saekit.evals.synthetic",
    "steering": "saekit.evals.steering",
    "stable-regions": "saekit.evals.stable_regions",
    "layers": "saekit.evals.matching",
}


def evaluator(name: str) -> Any:
    if name not in EVALUATORS:
        raise ValueError(f"unknown evaluator {name!r}; available: {sorted(EVALUATORS)}")
    return importlib.import_module(EVALUATORS[name])


def run(name: str, config: str | Path | None = None, overrides: list[str] | None = None, **kw: Any) -> EvalResult:
    """Run evaluator ``name`` with the TOML ``config`` and ``key=value`` overrides."""
    mod = evaluator(name)
    return mod.run(load_config(config, overrides, cls=mod.Config), **kw)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="run an evaluator: " + ", ".join(EVALUATORS))
    p.add_argument("name", choices=sorted(EVALUATORS))
    p.add_argument("config", nargs="?", default=None, help="TOML recipe (e.g. eval/sensitivity_demo.toml)")
    p.add_argument("--out", default=None, help="output directory (default runs/eval/NAME)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result in the output directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field (value parsed as TOML); repeatable")
    p.set_defaults(fn=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    out = claim_output(args.out or Path("runs") / "eval" / args.name, overwrite=args.overwrite,
                       what=f"{args.name} evaluation")
    result = run(args.name, args.config, args.set, progress=True)
    out = result.save(out)
    scalars = [{"metric": k, "value": v} for k, v in result.summary.items() if isinstance(v, (int, float, str))]
    print(text_table(scalars))  # curves and lists are in the JSON and the plots
    print(f"wrote {out}/report.md, {result.name}.csv, {result.name}.json, index.html"
          + (", " + ", ".join(result.figures) if result.figures else ""))
    return 0


__all__ = ["EVALUATORS", "EvalConfig", "EvalResult", "add_parser", "evaluator", "run"]
