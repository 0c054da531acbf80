"""Evaluators: sensitive directions, synthetic activations, steering, stable regions,
features across layers, sparse probing and targeted probe perturbation, for any
:class:`~saekit.Dictionary` on any TransformerLens model.

Each evaluator is a module with a config dataclass ``Config`` (a subclass of
:class:`EvalConfig`, loaded from TOML) and ``run(cfg, model=None, progress=False) ->
EvalResult``. ``saekit eval NAME [CONFIG.toml] [--out DIR] [--set key=value] [--FIELD
value ...]`` runs one (every field of its ``Config`` is also a flag), and
:func:`run_eval` is the same job from Python; recipes are in ``eval/`` (demo-LM
defaults, and GPT-2 small settings that match the papers). Interventions go through :func:`saekit.splice` or
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
from saekit.schema import add_config_arguments, given_overrides

#: evaluator name (the CLI's) -> module
EVALUATORS = {
    "sensitivity": "saekit.evals.sensitivity",
    "synthetic": "saekit.evals.synthetic",
    "steering": "saekit.evals.steering",
    "stable-regions": "saekit.evals.stable_regions",
    "layers": "saekit.evals.layers",
    "sparse_probing": "saekit.evals.sparse_probing",
    "tpp": "saekit.evals.tpp",
    "scr": "saekit.evals.scr",
    "absorption": "saekit.evals.absorption",
    "suite": "saekit.evals.suite",
}


def evaluator(name: str) -> Any:
    if name not in EVALUATORS:
        raise ValueError(f"unknown evaluator {name!r}; available: {sorted(EVALUATORS)}")
    return importlib.import_module(EVALUATORS[name])


def run(name: str, config: Any = None, overrides: list[str] | None = None, **kw: Any) -> EvalResult:
    """Run evaluator ``name`` with ``config`` (its ``Config``, a TOML file, or None for the
    defaults) and ``key=value`` overrides; compute and return the result, write nothing."""
    mod = evaluator(name)
    return mod.run(load_config(config, overrides, cls=mod.Config), **kw)


def default_out(name: str) -> Path:
    """``runs/eval/NAME``."""
    return Path("runs") / "eval" / name


def run_eval(name: str, config: Any = None, out: str | Path | None = None, overrides: list[str] | None = None, *,
             overwrite: bool = False, **kw: Any) -> EvalResult:
    """The ``saekit eval NAME`` job from Python: check the config (``config``: the
    evaluator's ``Config``, a TOML file, or None; then ``overrides``), claim ``out``
    (refused when it holds an earlier result, unless ``overwrite``), run, save there and
    return the result. Without ``out`` nothing is written (as :func:`run`). Further
    keywords go to the evaluator's ``run`` (``model=``, ``progress=``).

    Named ``run_eval``, not ``eval``, so as not to shadow Python's builtin on
    ``from saekit import *``.
    """
    mod = evaluator(name)
    cfg = load_config(config, overrides, cls=mod.Config)
    if out is not None:
        out = claim_output(out, overwrite=overwrite, what=f"{name} evaluation")
    result = mod.run(cfg, **kw)
    if out is not None:
        result.save(out)
    return result


def add_parser(sub: Any) -> None:
    """``saekit eval NAME [CONFIG] ...``: one sub-command per evaluator, whose flags are its
    ``Config``'s fields."""
    p = sub.add_parser("eval", help="run an evaluator: " + ", ".join(EVALUATORS))
    names = p.add_subparsers(dest="name", required=True, metavar="NAME",
                             help="evaluator: " + ", ".join(sorted(EVALUATORS)))
    for name in sorted(EVALUATORS):
        mod = evaluator(name)  # its Config makes the sub-command's flags
        about = " ".join((mod.__doc__ or "").strip().split("\n\n")[0].split())
        q = names.add_parser(name, help=about.split(". ")[0].rstrip(".") + ".")
        q.add_argument("config", nargs="?", default=None, help=f"TOML recipe (e.g. eval/"
                                                                f"{name.replace('-', '_')}_demo.toml)")
        q.add_argument("--out", default=None, help=f"output directory (default runs/eval/{name})")
        q.add_argument("--overwrite", action="store_true", help="replace an earlier result in the output directory")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe field (value parsed as TOML); repeatable")
        add_config_arguments(q, mod.Config)
        q.set_defaults(fn=run_cli, config_class=mod.Config)


def run_cli(args: argparse.Namespace) -> int:
    overrides = given_overrides(args.config_class, args) + args.set
    result = run_eval(args.name, args.config, args.out or default_out(args.name), overrides,
                      overwrite=args.overwrite, progress=True)
    out = Path(args.out or default_out(args.name))
    scalars = [{"metric": k, "value": v} for k, v in result.summary.items() if isinstance(v, (int, float, str))]
    print(text_table(scalars))  # curves and lists are in the JSON and the plots
    print(f"wrote {out}/report.md, {result.name}.csv, {result.name}.json, index.html"
          + (", " + ", ".join(result.figures) if result.figures else ""))
    return 0


__all__ = ["EVALUATORS", "EvalConfig", "EvalResult", "add_parser", "default_out", "evaluator", "run", "run_eval"]
