"""The training log: ``metrics.jsonl`` (one JSON record per line), and wandb when asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from saekit.fileio import atomic_write_text


def _step_of(line: str) -> int | None:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None


class MetricsLog:
    """Append-only JSONL, and wandb when a project is configured (imported only then).

    On resume, lines past the checkpoint's step are dropped.
    """

    def __init__(self, path: Path, step: int, wandb_project: str | None = None, config: dict | None = None):
        self.path = path
        if path.exists():  # a killed run may have left a partial last line: drop it too
            atomic_write_text(path, "".join(line + "\n" for line in path.read_text().splitlines()
                                            if _step_of(line) is not None and _step_of(line) <= step))
        self.wandb = None
        if wandb_project:
            import wandb

            self.wandb = wandb.init(project=wandb_project, dir=str(path.parent), config=config or {},
                                    name=path.parent.name, resume="allow")

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            flat = {**{k: v for k, v in record.items() if k != "eval"},
                    **{f"eval/{k}": v for k, v in record.get("eval", {}).items()}}
            self.wandb.log(flat, step=record["step"])

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
