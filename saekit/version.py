"""saekit's version, and the provenance every saved artefact records.

Only the standard library loads here (``import saekit`` reads ``__version__``); torch's
version is read where :func:`provenance` runs, when torch is loaded anyway.
"""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__version__ = "0.1.0"


def provenance() -> dict[str, Any]:
    """Versions of saekit, torch and TransformerLens, and the git SHA when in a checkout.

    Returns
    -------
    dict
        ``saekit_version``, ``torch_version``, ``transformer_lens_version`` (None when
        not installed) and ``git_sha`` (None outside a git checkout).
    """
    import torch  # heavy: `import saekit` reads this module without loading torch

    out = {"saekit_version": __version__, "torch_version": torch.__version__}
    try:
        out["transformer_lens_version"] = version("transformer-lens")
    except PackageNotFoundError:
        out["transformer_lens_version"] = None
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        out["git_sha"] = sha.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_sha"] = None
    return out
