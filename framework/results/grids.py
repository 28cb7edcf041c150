"""Comparison grids: one PNG per prompt, rows = seeds, columns = sweep cells, with labels.

Pillow only. A missing image (a failed or unfinished job) is a grey tile saying so, so a grid
can be drawn for a sweep that is still running or had failures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

BACKGROUND = (255, 255, 255)
MISSING = (200, 200, 200)
INK = (20, 20, 20)
PAD = 6


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels: broken at spaces, and inside a word only
    where the word alone is too wide (e.g. ``method=entropy_syngen_diffuse`` on a small tile)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}".strip()
            if line and draw.textlength(candidate, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
            while len(line) > 1 and draw.textlength(line, font=font) > width:
                cut = max(k for k in range(1, len(line)) if k == 1 or draw.textlength(line[:k], font=font) <= width)
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


def comparison_grid(
    title: str,
    columns: Sequence[str],
    rows: Sequence[str],
    images: Sequence[Sequence[Image.Image | None]],
    *,
    tile: int = 256,
    missing_text: str = "missing",
) -> Image.Image:
    """A labelled grid: ``images[r][c]`` is the image of row ``r`` and column ``c`` (or ``None``).

    Tiles are scaled to ``tile`` pixels on their longer side (small images, such as the toy
    model's 64x64, are enlarged with nearest-neighbour sampling so pixels stay sharp); column
    labels may hold several lines (``\\n``) and are wrapped to the tile width.
    """
    font, title_font = _font(13), _font(15)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = int(font.size if hasattr(font, "size") else 11) + 4
    col_lines = [_wrap(scratch, label, font, tile - 2 * PAD) for label in columns]
    header_h = max((len(lines) for lines in col_lines), default=1) * line_h + 2 * PAD
    row_w = int(max((scratch.textlength(label, font=font) for label in rows), default=40)) + 3 * PAD
    title_lines = _wrap(scratch, title, title_font, row_w + tile * max(len(columns), 1) - 2 * PAD)
    title_h = len(title_lines) * (line_h + 2) + 2 * PAD
    width = row_w + tile * len(columns)
    height = title_h + header_h + tile * len(rows)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((PAD, PAD + i * (line_h + 2)), line, fill=INK, font=title_font)
    for c, lines in enumerate(col_lines):
        for i, line in enumerate(lines):
            draw.text((row_w + c * tile + PAD, title_h + PAD + i * line_h), line, fill=INK, font=font)
    for r, label in enumerate(rows):
        top = title_h + header_h + r * tile
        draw.text((PAD, top + tile // 2 - line_h // 2), label, fill=INK, font=font)
        for c in range(len(columns)):
            image = images[r][c] if r < len(images) and c < len(images[r]) else None
            canvas.paste(_tile(image, tile, missing_text, font), (row_w + c * tile, top))
    return canvas


def _tile(image: Image.Image | None, size: int, missing_text: str, font: Any) -> Image.Image:
    out = Image.new("RGB", (size, size), MISSING if image is None else BACKGROUND)
    if image is None:
        ImageDraw.Draw(out).text((PAD, size // 2 - 6), missing_text, fill=INK, font=font)
        return out
    rgb = image.convert("RGB")
    enlarge = max(rgb.size) < size
    thumb = ImageOps.contain(rgb, (size, size), Image.Resampling.NEAREST if enlarge else Image.Resampling.LANCZOS)
    out.paste(thumb, ((size - thumb.width) // 2, (size - thumb.height) // 2))
    return out
