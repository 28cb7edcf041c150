"""``attnguide attention IMAGE.json``: re-render an image's heat-map sheet from its saved maps.

The ``heatmaps`` callback saves ``<name>.maps.safetensors`` (``step000``... each ``[words, H, W]``
float32; metadata ``words`` joined by ``|`` and ``steps``) beside the image and lists it under
``files`` in ``<name>.json``. This command draws the sheet again - with another opacity, or
only some steps or words - without generating anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..errors import ConfigError

MAPS_KEY = "maps.safetensors"


def register(sub: Any) -> None:
    p = sub.add_parser("attention", help="re-render an image's attention heat-map sheet from its saved maps")
    p.add_argument("metadata", metavar="IMAGE_JSON", help="the image's metadata file RUN_DIR/<cell>/<name>.json "
                   "(or its .png)")
    p.add_argument("--out", default=None, help="output PNG (default: <name>.attention.png beside the image)")
    p.add_argument("--alpha", type=float, default=0.6, help="heat-map opacity over the image, 0-1 (default 0.6)")
    p.add_argument("--steps", default=None, help="comma-separated steps to draw (default: all saved)")
    p.add_argument("--words", default=None, help="comma-separated words to draw (default: all saved)")
    p.set_defaults(func=run)


@dataclass
class SavedMaps:
    """Maps of one image: ``by_step[step]`` is ``[words, H, W]`` float32."""

    image_path: Path
    words: list[str]
    by_step: dict[int, Any]


def load_saved_maps(metadata_path: Path | str) -> SavedMaps:
    """The image and attention maps an image's metadata JSON points to."""
    from safetensors import safe_open

    path = Path(metadata_path)
    if path.suffix == ".png":
        path = path.with_suffix(".json")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read image metadata {str(path)!r}: {exc}") from None
    files = meta.get("files") or {}
    if MAPS_KEY not in files:
        raise ConfigError(f"{str(path)!r} lists no saved attention maps: generate with the heatmaps callback "
                          "(recipe `callbacks: [heatmaps]`, or `attnguide generate --heatmaps`)")
    maps_path, image_path = path.parent / files[MAPS_KEY], path.parent / files.get("image", f"{path.stem}.png")
    for needed in (maps_path, image_path):
        if not needed.is_file():
            raise ConfigError(f"{str(needed)!r} is missing (listed in {str(path)!r})")
    with safe_open(str(maps_path), framework="pt") as handle:
        info = handle.metadata() or {}
        by_step = {int(key.removeprefix("step")): handle.get_tensor(key) for key in handle.keys()}
    words = [w for w in info.get("words", "").split("|") if w] or [f"word {i}" for i in range(_rows(by_step))]
    return SavedMaps(image_path, words, dict(sorted(by_step.items())))


def _rows(by_step: dict[int, Any]) -> int:
    return next(iter(by_step.values())).shape[0] if by_step else 0


def select(saved: SavedMaps, steps: list[int] | None, words: list[str] | None) -> SavedMaps:
    """Only the given steps and words (in saved order); unknown ones are a ``ConfigError``."""
    if steps is not None:
        missing = [s for s in steps if s not in saved.by_step]
        if missing:
            raise ConfigError(f"steps {missing} were not saved; saved steps: {list(saved.by_step)}")
    if words is not None:
        missing_words = [w for w in words if w not in saved.words]
        if missing_words:
            raise ConfigError(f"words {missing_words} have no maps; saved words: {saved.words}")
    keep = [i for i, w in enumerate(saved.words) if words is None or w in words]
    by_step = {s: m[keep] for s, m in saved.by_step.items() if steps is None or s in steps}
    return SavedMaps(saved.image_path, [saved.words[i] for i in keep], by_step)


def render(saved: SavedMaps, alpha: float = 0.6) -> Any:
    """The sheet, drawn by the ``heatmaps`` callback's own renderer."""
    from PIL import Image

    from attnguide.plugins.heatmaps import render_sheet

    with Image.open(saved.image_path) as image:
        return render_sheet(image.convert("RGB"), saved.words, saved.by_step, alpha)


def _csv(text: str | None, cast: Any) -> list[Any] | None:
    if text is None:
        return None
    try:
        return [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"cannot read {text!r} as a comma-separated list") from None


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from ..results.files import write_png

    out = out or sys.stdout
    if not 0.0 <= args.alpha <= 1.0:
        raise ConfigError(f"--alpha must be between 0 and 1, got {args.alpha}")
    saved = select(load_saved_maps(args.metadata), _csv(args.steps, int), _csv(args.words, str))
    target = Path(args.out) if args.out else saved.image_path.with_suffix(".attention.png")
    write_png(target, render(saved, args.alpha))
    print(f"wrote {target} ({len(saved.words)} words x {len(saved.by_step)} steps)", file=out)
    return 0
