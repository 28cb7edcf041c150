"""``evaluations.jsonl``: one line per scored image of a tune run, appended as each batch
finishes (flushed and fsynced), so a rerun of the same command skips what is done.

A line is ``{"settings", "split", "point", "index", "prompt", "seed", "score"}``: ``point`` is the
tuned parameters (``null`` for the ``none`` baseline), ``settings`` a hash of what else decides
the score (model, method, metric, sampling). A line of other settings is an error, not silently
mixed in; a last line cut short by a crash is dropped and written again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .splits import Sample

LOG_NAME = "evaluations.jsonl"


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short stable hash of ``settings`` (JSON with sorted keys; other objects by ``str``)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def point_key(point: Mapping[str, Any] | None) -> str:
    """``"none"`` for the baseline, else the point as JSON with sorted keys."""
    return "none" if point is None else json.dumps(dict(point), sort_keys=True)


class EvaluationLog:
    """The scores of a tune run, in memory and (with ``folder``) in ``folder/evaluations.jsonl``."""

    def __init__(self, folder: Path | None, settings: str) -> None:
        self.path = None if folder is None else folder / LOG_NAME
        self.settings = settings
        self.scores: dict[tuple[str, str, int], tuple[str, int, float]] = {}
        self._keep: int | None = None  # bytes to keep when the last line was cut short
        if self.path is not None and self.path.exists():
            self._read(self.path)

    def _read(self, path: Path) -> None:
        text = path.read_text(encoding="utf-8")
        body, _, tail = text.rpartition("\n")
        if tail:  # a last line without its newline: cut short by a crash, done again
            self._keep = len((body + "\n").encode("utf-8")) if body else 0
        for number, line in enumerate(body.split("\n") if body else [], 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = (str(record["split"]), point_key(record["point"]), int(record["index"]))
                value = (str(record["prompt"]), int(record["seed"]), float(record["score"]))
                settings = record["settings"]
            except (ValueError, TypeError, KeyError) as exc:
                raise ConfigError(f"{path}:{number}: not a tune record ({exc}); remove the line or choose "
                                  "another --out") from None
            if settings != self.settings:
                raise ConfigError(f"{path}:{number}: scored with other settings (model, method, metric or "
                                  "sampling) than this run's; choose another --out, or delete the file to start over")
            self.scores[key] = value

    def score(self, point: Mapping[str, Any] | None, sample: Sample) -> float | None:
        """The logged score of ``sample`` at ``point``, or None when it is not done (or was
        done on another prompt or seed under the same index)."""
        found = self.scores.get((sample.split, point_key(point), sample.index))
        if found is None or found[:2] != (sample.prompt, sample.seed):
            return None
        return found[2]

    def add(self, point: Mapping[str, Any] | None, samples: list[Sample], scores: list[float]) -> None:
        """Record a batch; with a file, append its lines and flush them to disk."""
        lines = []
        for sample, value in zip(samples, scores):
            self.scores[(sample.split, point_key(point), sample.index)] = (sample.prompt, sample.seed, float(value))
            lines.append(json.dumps({"settings": self.settings, "split": sample.split,
                                     "point": None if point is None else dict(point), "index": sample.index,
                                     "prompt": sample.prompt, "seed": sample.seed, "score": float(value)}))
        if self.path is None or not lines:
            return
        if self._keep is not None:
            with self.path.open("r+b") as cut:
                cut.truncate(self._keep)
            self._keep = None
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
