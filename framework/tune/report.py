"""What a tune run reports: ``tune.json``, a printed table, and a recipe with the chosen values.

Intervals are ``attnguide.metrics.stats.bootstrap_ci``'s seeded percentile bootstraps: of the
mean score per grid point on the calibration split, and on the held-out split of the chosen
point, of ``none``, and of their paired difference (same prompt and seed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..metrics.stats import bootstrap_ci
from .splits import Sample

RESULT_NAME = "tune.json"


def _estimate(values: Sequence[float]) -> dict[str, Any]:
    est = bootstrap_ci(values)
    return {"mean": _num(est.mean), "ci95": [_num(est.low), _num(est.high)], "n": est.n}


def _num(x: float) -> float | None:
    return None if x != x else round(float(x), 6)


def summarise(points: Sequence[Mapping[str, Any]], calib_scores: Sequence[Sequence[float]], best: int,
              held_chosen: Sequence[float], held_none: Sequence[float], heldout: Sequence[Sample], *,
              method: Sequence[Mapping[str, Any]], metric: str, search: Mapping[str, Any],
              sampling: Mapping[str, Any], calibration: Sequence[Sample]) -> dict[str, Any]:
    """``tune.json``'s dict: ``calibration`` (one row per point: params, mean, ci95, n),
    ``chosen`` (the params), ``heldout`` (``chosen``, ``none`` and the paired ``difference``
    with ``wins``/``losses``: samples where the chosen point scored higher / lower)."""
    diffs = [a - b for a, b in zip(held_chosen, held_none)]
    dims = [{"name": d.name, "values": list(d.values)} for d in search.get("dimensions", ())]
    return {
        "method": [dict(s) for s in method],
        "metric": metric,
        "search": {**{k: v for k, v in search.items() if k != "dimensions"}, "dimensions": dims},
        "sampling": dict(sampling),
        "splits": {"calibration": [asdict(s) for s in calibration], "heldout": [asdict(s) for s in heldout]},
        "calibration": [{"params": dict(p), **_estimate(s)} for p, s in zip(points, calib_scores)],
        "chosen": dict(points[best]),
        "heldout": {
            "chosen": _estimate(held_chosen),
            "none": _estimate(held_none),
            "difference": {**_estimate(diffs), "wins": sum(d > 0 for d in diffs),
                           "losses": sum(d < 0 for d in diffs)},
        },
    }


def write_json(folder: Path, result: Mapping[str, Any]) -> Path:
    """``folder/tune.json``, written atomically."""
    from ..results.files import atomic_write

    text = json.dumps(result, indent=2, default=str) + "\n"
    return atomic_write(folder / RESULT_NAME, lambda f: f.write(text.encode("utf-8")))


def table(result: Mapping[str, Any]) -> str:
    """The result as Markdown: the calibration grid (the chosen row marked), then the held-out
    comparison of the chosen values with ``none``."""
    def interval(row: Mapping[str, Any]) -> str:
        lo, hi = row["ci95"]
        return "—" if row["mean"] is None else f"{row['mean']:.4f} ({lo:.4f} to {hi:.4f})"

    names = [d["name"] for d in result["search"]["dimensions"]]
    lines = [f"calibration ({result['metric']}, mean and 95% CI):", "",
             "| " + " | ".join(names) + " | score | n | |", "|" + "---|" * (len(names) + 3)]
    for row in result["calibration"]:
        mark = "chosen" if row["params"] == result["chosen"] else ""
        cells = " | ".join(json.dumps(row["params"][n]) for n in names)
        lines.append(f"| {cells} | {interval(row)} | {row['n']} | {mark} |")
    held = result["heldout"]
    diff = held["difference"]
    chosen = ", ".join(f"{k}={json.dumps(v)}" for k, v in result["chosen"].items())
    lines += ["", f"held-out ({held['chosen']['n']} samples never used for choosing):", "",
              "| | score | n |", "|---|---|---|",
              f"| {chosen} | {interval(held['chosen'])} | {held['chosen']['n']} |",
              f"| none | {interval(held['none'])} | {held['none']['n']} |",
              f"| difference, paired | {interval(diff)}; wins/losses {diff['wins']}/{diff['losses']} | {diff['n']} |"]
    return "\n".join(lines)


def recipe(result: Mapping[str, Any], *, model: str, scheduler: str | None = None, parser: str | None = None,
           name: str = "tuned", prompts: int = 4) -> dict[str, Any]:
    """A recipe (``attnguide.runs.schema.Recipe``) that runs the tuned method with the chosen
    values on the first ``prompts`` held-out prompts, one seed each, and the run's sampling."""
    losses = [{**spec, **result["chosen"]} for spec in result["method"]]
    sampling = {k: v for k, v in result["sampling"].items() if k in ("steps", "guidance_scale", "height", "width")}
    heldout = result["splits"]["heldout"][:prompts]
    diff = result["heldout"]["difference"]
    gain = "" if diff["mean"] is None else f": {diff['mean']:+.4f} vs none on {diff['n']} held-out samples"
    out: dict[str, Any] = {
        "name": name,
        "description": f"{losses[0]['name']} with values chosen by attnguide tune ({result['metric']}{gain})",
        "model": {"id": model, **({"scheduler": scheduler} if scheduler else {})},
        "sampling": sampling,
    }
    if parser:
        out["parser"] = {"name": parser}
    out.update({"losses": losses, "prompts": [s["prompt"] for s in heldout],
                "seeds": [heldout[0]["seed"]] if heldout else [0], "output_dir": "outputs"})
    return out


def write_recipe(path: Path, data: Mapping[str, Any]) -> Path:
    """``data`` as a recipe YAML at ``path``, starting with the command that runs it."""
    from ..results.files import atomic_write
    from ..results.shared import dump_yaml

    text = dump_yaml(dict(data), f"attnguide run {path}\nWritten by attnguide tune: {data['description']}")
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
