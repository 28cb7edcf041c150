"""What a model is, known before any weights load: its family and its attention layer names.

Recipes are validated without weights, so a method a family cannot run or a layer name that
does not exist should be an error at ``attnguide validate`` time. The family comes from the
model name (embedded models), ``model_index.json`` (a local diffusers folder or a hub id in the
local cache), or the tensor names in a single file's header; the layer names come from the
denoiser's ``config.json`` built on the ``meta`` device (no memory, no weights). ``None`` means
"cannot tell before loading"; the engine then checks again once the pipeline is built.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from .families import FAMILIES, Family
from .toy_names import TOY_MODELS, is_toy_model

EMBEDDED_FAMILIES: dict[str, Family] = {"tiny": "sd", **dict.fromkeys(TOY_MODELS, "sd"), "tiny-sdxl": "sdxl",
                                        "tiny-sd3": "sd3", "tiny-flux": "flux"}
SINGLE_FILE_MARKERS: tuple[tuple[str, Family], ...] = (
    ("double_blocks.0.img_attn.", "flux"),
    ("joint_blocks.0.context_block.", "sd3"),
    ("conditioner.embedders.1.", "sdxl"),
)
"""A tensor-name fragment of each family's original single-file layout (checked in order); a
checkpoint with none of them is read as SD 1.x/2.x."""
DENOISER_FOLDER: dict[Family, str] = {"sd": "unet", "sdxl": "unet", "sd3": "transformer", "flux": "transformer"}


def model_family(model: str) -> Family | None:
    """The family of ``model`` (a name ``load_pipeline`` accepts) without loading weights, or
    ``None`` when only loading can tell (a hub id not in the local cache, a ``.ckpt`` pickle)."""
    if model in EMBEDDED_FAMILIES:
        return EMBEDDED_FAMILIES[model]
    path = Path(model).expanduser()
    if path.suffix == ".safetensors":
        return single_file_family(path) if path.is_file() else None
    index = _local_json(model, "model_index.json")
    if index is None:
        return None
    return FAMILIES.get(str(index.get("_class_name", "")))


def single_file_family(path: str | Path) -> Family:
    """The family of a ``.safetensors`` checkpoint from the tensor names in its header (the
    header is read; no tensor is)."""
    names = safetensors_names(path)
    for marker, family in SINGLE_FILE_MARKERS:
        if any(marker in name for name in names):
            return family
    return "sd"


def safetensors_names(path: str | Path) -> list[str]:
    """The tensor names of a ``.safetensors`` file: its 8-byte little-endian header length, then
    that many bytes of JSON keyed by tensor name."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return [name for name in header if name != "__metadata__"]


def denoiser_layers(model: str) -> list[str] | None:
    """The attention processor names of ``model``'s UNet or transformer, from its config on the
    ``meta`` device; ``None`` when the config cannot be found without loading."""
    import torch

    family = model_family(model)
    if family is None:
        return None
    builder = _embedded_denoiser(model)
    if builder is None:
        config = _local_json(model, f"{DENOISER_FOLDER[family]}/config.json")
        if config is None:
            return None
        builder = _from_config(family, config)
    with torch.device("meta"):
        return list(builder().attn_processors)


def _embedded_denoiser(model: str) -> Any:
    """The constructor of an embedded model's denoiser (its layout, not its weights)."""
    if model == "tiny":
        from .tiny import tiny_unet

        return tiny_unet
    if is_toy_model(model):  # every toy-world name shares the toy UNet layout
        from ..toyworld.model import toy_unet

        return toy_unet
    if model == "tiny-sdxl":
        from .tiny_sdxl import tiny_sdxl_unet

        return tiny_sdxl_unet
    if model == "tiny-sd3":
        from .tiny_sd3 import tiny_sd3_transformer

        return tiny_sd3_transformer
    if model == "tiny-flux":
        from .tiny_flux import tiny_flux_transformer

        return tiny_flux_transformer
    return None


def _from_config(family: Family, config: dict[str, Any]) -> Any:
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel

    cls = {"sd": UNet2DConditionModel, "sdxl": UNet2DConditionModel, "sd3": SD3Transformer2DModel,
           "flux": FluxTransformer2DModel}[family]
    return lambda: cls.from_config(config)


def _local_json(model: str, name: str) -> dict[str, Any] | None:
    """``name`` inside a local diffusers folder or a cached hub snapshot of ``model``; never
    downloads."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        candidate: Path | None = folder / name
    else:
        candidate = _cached(model, name)
    if candidate is None or not candidate.is_file():
        return None
    try:
        loaded = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _cached(repo: str, name: str) -> Path | None:
    if repo.count("/") != 1 or repo.startswith(("/", ".", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a diffusers dependency
        return None
    try:
        found = try_to_load_from_cache(repo, name)
    except Exception:  # noqa: BLE001 - an invalid repo id is "unknown", not an error here
        return None
    return Path(found) if isinstance(found, str) else None
