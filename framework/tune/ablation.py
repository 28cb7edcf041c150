"""A calibrated ablation: several methods, each tuned on one calibration split and reported on one
held-out split that no method used for choosing, against one shared ``none`` baseline.

An ablation file (YAML) names each method (``NAME[:KEY=VALUE...]``, as ``--method``) and its
search space (as a space file's ``params``)::

    methods:
      syngen: {step_size: "log:1..20:3"}
      attend_excite: {scale_factor: "log:2..20:3"}

``attnguide tune --ablation FILE --out DIR`` scores ``none`` on the held-out split once
(``DIR/none/``), then runs ``tune`` for each method in ``DIR/<label>/`` (each resumable), and
writes ``DIR/ablation.json`` and ``DIR/ablation.md``. ``--ablation toyworld`` is the shipped file
behind the calibrated table of docs/toyworld.md (``attnguide/tune/ablations/toyworld.yaml``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .space import Dimension, read_yaml, space_dimensions

SHIPPED_DIR = Path(__file__).parent / "ablations"
RESULT_NAME = "ablation.json"
TABLE_NAME = "ablation.md"


@dataclass(frozen=True)
class Entry:
    """One method of an ablation: its label (``NAME[:KEY=VALUE...]``) and search space."""

    label: str
    dimensions: tuple[Dimension, ...]

    @property
    def folder(self) -> str:
        """The sub-folder of the ablation's output that holds this method's tune run."""
        return "".join(c if c.isalnum() or c in "_.-=" else "_" for c in self.label)


def shipped_ablations() -> list[str]:
    """Names of the ablation files shipped with attnguide (``--ablation NAME``)."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def ablation_path(name: str) -> Path:
    """``name`` as a file path, or the shipped ablation of that name."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = SHIPPED_DIR / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"--ablation {name!r}: no such file, and not a shipped ablation "
                      f"({', '.join(shipped_ablations())})")


def read_ablation(name: str) -> list[Entry]:
    """The entries of an ablation file (or shipped name); ``ConfigError`` naming the file and the
    key at fault."""
    file = ablation_path(name)
    raw = read_yaml(file, "ablation file")
    if not isinstance(raw, Mapping) or not isinstance(raw.get("methods"), Mapping) or not raw["methods"]:
        raise ConfigError(f"ablation file {file}: expected 'methods: {{METHOD: {{PARAM: VALUES, ...}}, ...}}'")
    unknown = sorted(set(raw) - {"methods"})
    if unknown:
        raise ConfigError(f"ablation file {file}: unknown key {unknown[0]!r} (keys: methods)")
    entries = []
    for label, params in raw["methods"].items():
        where = f"ablation file {file}: methods.{label}"
        if not isinstance(params, Mapping) or not params:
            raise ConfigError(f"{where}: expected {{PARAM: VALUES, ...}}, the parameters to tune")
        entries.append(Entry(str(label), tuple(space_dimensions(params, where))))
    folders = [e.folder for e in entries]
    clash = next((f for f in folders if folders.count(f) > 1 or f == "none"), None)
    if clash is not None:
        raise ConfigError(f"ablation file {file}: two methods (or a method and 'none') share the folder {clash!r}")
    return entries


def select_entries(entries: Sequence[Entry], only: str, source: str) -> list[Entry]:
    """The entries named in ``only`` (comma-separated; a label as written, or the plugin name
    before its ``:`` overrides), in the file's order; ``ConfigError`` naming an unknown one."""
    names = [n.strip() for n in only.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--only {only!r}: no method named")
    known = {e.label for e in entries} | {e.label.split(":")[0] for e in entries}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--only: {unknown[0]!r} is not a method of ablation {source!r} "
                          f"({', '.join(e.label for e in entries)})")
    return [e for e in entries if e.label in names or e.label.split(":")[0] in names]


def run_ablation(engine: Any, entries: Sequence[Entry], metric: Any, calibration: Sequence[Any],
                 heldout: Sequence[Any], *, out_dir: str | Path, batch_size: int = 8, progress: bool = True,
                 settings: Mapping[str, Any] | None = None, **sampling: Any) -> dict[str, Any]:
    """Tune every entry (``attnguide.tune.tune``) on ``calibration`` and report it on ``heldout``
    against one ``none`` baseline; write and return ``ablation.json``'s dict
    ``{"none": {mean, ci95, n}, "methods": {label: tune.json's dict}}``. Each method's run is
    written as soon as it finishes, so an interrupted ablation keeps the finished ones."""
    from .search import baseline_scores, tune

    out = Path(out_dir)
    shared = {"batch_size": batch_size, "progress": progress, "settings": settings, **sampling}
    baseline = baseline_scores(engine, metric, heldout, out_dir=out / "none", **shared)
    result: dict[str, Any] = {"methods": {}}
    for number, entry in enumerate(entries, 1):
        if progress:
            import sys

            print(f"[ablation] {number}/{len(entries)}: {entry.label}", file=sys.stderr, flush=True)
        tuned = tune(engine, entry.label, list(entry.dimensions), metric, calibration, heldout,
                     out_dir=out / entry.folder, baseline=baseline, **shared)
        result["methods"][entry.label] = tuned
        result["none"] = tuned["heldout"]["none"]
        write_ablation(out, result)
    return result


def write_ablation(folder: Path, result: Mapping[str, Any]) -> None:
    """``folder/ablation.json`` and ``folder/ablation.md``, each written atomically."""
    from ..results.files import atomic_write

    text = json.dumps(result, indent=2, default=str) + "\n"
    atomic_write(folder / RESULT_NAME, lambda f: f.write(text.encode("utf-8")))
    md = ablation_table(result) + "\n"
    atomic_write(folder / TABLE_NAME, lambda f: f.write(md.encode("utf-8")))


def ablation_table(result: Mapping[str, Any]) -> str:
    """One Markdown row per method: the values searched and chosen, the chosen point's
    calibration score, its held-out score and interval, and the paired difference with ``none``
    (interval; wins/losses). Scores in percent (the toy metric is 0/1 per image)."""
    def pct(row: Mapping[str, Any]) -> str:
        if row["mean"] is None:
            return "—"
        lo, hi = row["ci95"]
        return f"{100 * row['mean']:.1f} ({100 * lo:.1f} to {100 * hi:.1f})"

    def signed(row: Mapping[str, Any]) -> str:
        lo, hi = row["ci95"]
        return "—" if row["mean"] is None else f"{100 * row['mean']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})"

    none = result.get("none")
    n = none["n"] if none else 0
    lines = ["| method | searched | chosen | calibration % (n) | held-out % (95% CI) | vs none, paired "
             "(95% CI) | wins/losses |", "|---|---|---|---|---|---|---|"]
    if none:
        lines.append(f"| none | — | — | — | {pct(none)} | — | — |")
    for label, tuned in result["methods"].items():
        searched = "; ".join(f"{d['name']} " + ", ".join(json.dumps(v) for v in d["values"])
                             for d in tuned["search"]["dimensions"])
        chosen = ", ".join(f"{k}={json.dumps(v)}" for k, v in tuned["chosen"].items())
        calib = next(r for r in tuned["calibration"] if r["params"] == tuned["chosen"])
        diff = tuned["heldout"]["difference"]
        lines.append(f"| {label} | {searched} | {chosen} | {100 * calib['mean']:.1f} ({calib['n']}) | "
                     f"{pct(tuned['heldout']['chosen'])} | {signed(diff)} | {diff['wins']}/{diff['losses']} |")
    lines.append(f"\nheld-out samples: {n}, never used for choosing")
    return "\n".join(lines)
