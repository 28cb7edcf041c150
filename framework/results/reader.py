"""Read a run directory back: which images exist, for which cell, prompt and seed.

What ``attnguide run`` writes (``attnguide.runs.runner``) and this reads::

    RUN_DIR/recipe.resolved.yaml          the run's recipe, resolved
    RUN_DIR/results.jsonl                 one row per image: cell, prompt, seed, status, image, metadata
    RUN_DIR/<cell>/recipe.resolved.yaml   each sweep cell as a stand-alone recipe
    RUN_DIR/<cell>/<name>.png             the image
    RUN_DIR/<cell>/<name>.json            its metadata (prompt, seed, cell, losses, files ...)
    RUN_DIR/<cell>/<name>.heatmaps.png    optional, from the ``heatmaps`` callback
    RUN_DIR/grids/<prompt>.png            comparison grid per prompt

Missing pieces are tolerated: without ``results.jsonl`` (a run still going, or the output of
``attnguide generate``) the metadata JSON files are found by scanning ``RUN_DIR`` and
``RUN_DIR/*/``; an image's cell is its metadata's ``cell`` (else ``method``, else its folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..runs.jobs import read_metadata, read_result_rows

RESULTS = "results.jsonl"
RESOLVED = "recipe.resolved.yaml"
_NOT_IMAGE_METADATA = {"summary.json", "metrics_summary.json"}


@dataclass
class ImageEntry:
    """One finished image. Paths are relative to the run directory, with ``/`` separators."""

    cell: str
    prompt: str
    seed: int
    image: str
    metadata: str
    meta: dict[str, Any] = field(default_factory=dict)

    def sibling(self, key: str) -> str | None:
        """Relative path of a file the metadata lists under ``files`` (``heatmaps.png`` ...)."""
        name = (self.meta.get("files") or {}).get(key)
        if not name:
            return None
        return str(Path(self.metadata).parent / name) if Path(self.metadata).parent != Path(".") else name


@dataclass
class RunContents:
    """Everything found in a run directory, in the run's order (cells, prompts, seeds)."""

    run_dir: Path
    name: str
    images: list[ImageEntry]
    cells: list[str]
    prompts: list[str]
    seeds: list[int]
    cell_labels: dict[str, dict[str, str]]
    failed: list[dict[str, Any]]
    recipe_text: str | None
    _index: dict[tuple[str, str, int], ImageEntry] = field(default_factory=dict, repr=False)

    def image(self, cell: str, prompt: str, seed: int) -> ImageEntry | None:
        if len(self._index) != len(self.images):
            self._index = {(e.cell, e.prompt, e.seed): e for e in self.images}
        return self._index.get((cell, prompt, seed))


def _rel(path: Path, run_dir: Path) -> str:
    return path.relative_to(run_dir).as_posix()


def _from_results(run_dir: Path) -> tuple[list[ImageEntry], list[dict[str, Any]]]:
    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in read_result_rows(run_dir / RESULTS):
        latest[(str(row["cell"]), str(row["prompt"]), int(row["seed"]))] = row  # last attempt wins
    entries, failed = [], []
    for (cell, prompt, seed), row in latest.items():
        if row.get("status", "ok") != "ok":
            failed.append(row)
            continue
        image, metadata = row.get("image"), row.get("metadata")
        if not image or not (run_dir / image).is_file():
            continue
        meta = read_metadata(run_dir / metadata) if metadata else None
        entries.append(ImageEntry(cell, prompt, seed, Path(image).as_posix(),
                                  Path(metadata).as_posix() if metadata else "", meta or {}))
    return entries, failed


def _scan(run_dir: Path) -> list[ImageEntry]:
    entries = []
    for path in sorted([*run_dir.glob("*.json"), *run_dir.glob("*/*.json")]):
        if path.name in _NOT_IMAGE_METADATA:
            continue
        meta = read_metadata(path)
        if not meta or not isinstance(meta.get("prompt"), str) or not isinstance(meta.get("seed"), int):
            continue
        image = path.with_name((meta.get("files") or {}).get("image") or f"{path.stem}.png")
        if not image.is_file():
            continue
        folder = path.parent.relative_to(run_dir).as_posix()
        cell = str(meta.get("cell") or meta.get("method") or (folder if folder != "." else "default"))
        entries.append(ImageEntry(cell, meta["prompt"], meta["seed"], _rel(image, run_dir), _rel(path, run_dir), meta))
    return entries


def read_run(run_dir: Path | str) -> RunContents:
    """Every finished image under ``run_dir``; a ``ConfigError`` when there is none."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {str(run_dir)!r} does not exist")
    entries, failed = _from_results(run_dir)
    known = {e.image for e in entries}
    entries += [e for e in _scan(run_dir) if e.image not in known]
    if not entries:
        raise ConfigError(f"no images in {str(run_dir)!r}: expected results.jsonl or <cell>/<name>.png with "
                          "<name>.json metadata, as `attnguide run` writes them")
    resolved = run_dir / RESOLVED
    recipe_text = resolved.read_text(encoding="utf-8") if resolved.is_file() else None
    labels = {e.cell: dict(e.meta.get("cell_labels") or {}) for e in entries}
    return RunContents(
        run_dir=run_dir,
        name=str(entries[0].meta.get("recipe") or run_dir.name),
        images=entries,
        cells=list(dict.fromkeys(e.cell for e in entries)),
        prompts=_prompt_order(recipe_text, entries),
        seeds=sorted({e.seed for e in entries}),
        cell_labels=labels,
        failed=failed,
        recipe_text=recipe_text,
    )


def _prompt_order(recipe_text: str | None, entries: list[ImageEntry]) -> list[str]:
    """The recipe's prompt order where known, else the order images were found in."""
    found = list(dict.fromkeys(e.prompt for e in entries))
    listed: list[str] = []
    if recipe_text:
        import yaml

        try:
            data = yaml.safe_load(recipe_text)
        except yaml.YAMLError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("prompts"), list):
            listed = [p for p in data["prompts"] if isinstance(p, str)]
    return [p for p in listed if p in found] + [p for p in found if p not in listed]
