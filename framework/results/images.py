"""Saving a ``GenerationResult``: per image a PNG, a metadata JSON and optional latents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..engine.engine import GenerationResult
from .files import slugify, versions, write_json, write_png, write_tensors


def image_name(prompt: str, seed: int, method: str = "") -> str:
    """``<prompt slug>_s<seed>[_<method>]`` - stable across runs."""
    name = f"{slugify(prompt)}_s{seed}"
    return f"{name}_{method}" if method else name


def image_metadata(result: GenerationResult, index: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to reproduce image ``index``: settings, bindings, losses, versions, and
    ``threads``, torch's intra-op thread count (CPU kernels may round otherwise with another;
    read as the image is written, right after it was generated in the same process)."""
    record = result.records[index]
    config = {k: v for k, v in result.config.items() if not k.startswith("_")}
    return {
        **(extra or {}),
        "prompt": record.prompt,
        "seed": record.seed,
        "sampling": config,
        "analysis": record.analysis.to_dict() if record.analysis else None,
        "losses": [r.to_dict() for r in record.losses],
        "skipped_updates": record.skipped,
        "refinement_iterations": {str(k): v for k, v in record.refinement_iterations.items()},
        "timings": dict(result.run.timings),
        "threads": torch.get_num_threads(),
        "versions": versions(),
    }


def save_image(
    result: GenerationResult,
    index: int,
    out_dir: Path,
    name: str,
    *,
    extra: dict[str, Any] | None = None,
    save_latents: bool = False,
) -> dict[str, Path]:
    """Write ``<name>.png``, ``<name>.json`` and optionally ``<name>.latents.safetensors``.

    The JSON is written last, so a present JSON means the image and latents are complete.
    """
    paths: dict[str, Path] = {}
    if result.images:
        paths["image"] = write_png(out_dir / f"{name}.png", result.images[index])
    if save_latents:
        paths["latents"] = write_tensors(
            out_dir / f"{name}.latents.safetensors", {"latents": result.latents[index : index + 1]}
        )
    for suffix, value in result.run.artifacts.get(index, {}).items():
        paths[suffix] = _write_artifact(out_dir / f"{name}.{suffix}", value)
    meta = image_metadata(result, index, extra)
    meta["files"] = {k: p.name for k, p in paths.items()}
    paths["metadata"] = write_json(out_dir / f"{name}.json", meta)
    return paths


def _write_artifact(path: Path, value: Any) -> Path:
    if path.suffix == ".png":
        return write_png(path, value)
    if path.suffix == ".safetensors":
        tensors, metadata = value
        return write_tensors(path, tensors, metadata)
    raise ValueError(f"no writer for artifact {path.name}")
