"""Load Stable Diffusion pipelines and tokenizers by name: ``tiny``, ``toyworld``, a hub id, a
local directory, or a single-file checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .tokenizer import clip_tokenizer
from .toy_names import TOY_MODELS, is_toy_model

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
EMBEDDED_MODELS = ("tiny", "tiny-sdxl", "tiny-sd3", "tiny-flux", *TOY_MODELS)
"""Models that ship with attnguide: ``tiny``, ``tiny-sdxl``, ``tiny-sd3``, ``tiny-flux`` (random weights, for tests) and
``toyworld`` (the trained toy-world model, docs/toyworld.md)."""


def load_tokenizer(model: str) -> Any:
    """The text tokenizer of ``model`` (``"tiny"``, ``"toyworld"``: the shipped CLIP BPE tokenizer)."""
    if model in EMBEDDED_MODELS:
        return clip_tokenizer()
    from transformers import CLIPTokenizer

    try:
        return CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
    except Exception as exc:  # noqa: BLE001 - transformers raises many types here
        raise ModelLoadError(_not_found(model, exc)) from None


def _not_found(model: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"cannot load model {model!r}: {first}. Use 'tiny', 'toyworld', a local diffusers directory, a "
        "single-file .safetensors/.ckpt checkpoint, or a hub id already in the local cache "
        "(e.g. CompVis/stable-diffusion-v1-4 after `huggingface-cli download`)."
    )


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or is_single_file(model) or model.count("/") > 1


def is_single_file(model: str) -> bool:
    return Path(model).suffix in SINGLE_FILE_SUFFIXES


def load_pipeline(
    model: str,
    *,
    scheduler: str | None = None,
    dtype: str = "float32",
    config: str | None = None,
    local_files_only: bool | None = None,
) -> Any:
    """A ``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``, ``StableDiffusion3Pipeline``
    or ``FluxPipeline`` for ``model``.

    Args:
        model: ``"tiny"``, ``"tiny-sdxl"``, ``"tiny-sd3"`` or ``"tiny-flux"`` (embedded random-weight models), ``"toyworld"`` (the shipped trained
            toy-world model, 64x64), a local diffusers directory (one without a ``tokenizer/``
            folder, like the shipped toy-world weights, gets the shipped CLIP tokenizer), a hub
            id (``CompVis/stable-diffusion-v1-4``, ``stabilityai/stable-diffusion-xl-base-1.0``),
            or a single-file checkpoint (``.safetensors``: SD 1.x/2.x, SDXL, SD3 or Flux, told
            apart by its tensor names; ``.ckpt``: SD 1.x/2.x). Flux and SD3 single files often
            hold the transformer only: give ``config`` (the diffusers folder or hub id of the
            rest).
        scheduler: short scheduler name (``ddim``, ``pndm``, ``euler`` ...) to swap in.
        dtype: ``float32``, ``float16`` or ``bfloat16`` weights.
        config: for single-file checkpoints, the diffusers config (hub id or local dir).
        local_files_only: default: true when ``HF_HUB_OFFLINE`` is set.
    """
    import torch

    if model == "tiny":
        from .tiny import tiny_pipeline

        pipe = tiny_pipeline()
    elif model == "tiny-sdxl":
        from .tiny_sdxl import tiny_sdxl_pipeline

        pipe = tiny_sdxl_pipeline()
    elif model == "tiny-sd3":
        from .tiny_sd3 import tiny_sd3_pipeline

        pipe = tiny_sd3_pipeline()
    elif model == "tiny-flux":
        from .tiny_flux import tiny_flux_pipeline

        pipe = tiny_flux_pipeline()
    elif is_toy_model(model):
        from ..toyworld.model import load_toy_pipeline, toy_weights_dir

        pipe = load_toy_pipeline(toy_weights_dir(model))
    else:
        torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
        if torch_dtype is None:
            raise ModelLoadError(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16")
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "safety_checker": None}
        if local_files_only is not None:
            kwargs["local_files_only"] = local_files_only
        if _looks_like_path(model) and not Path(model).expanduser().exists():
            raise ModelLoadError(
                f"model path {model!r} does not exist: give a diffusers directory (with model_index.json), "
                "a .safetensors/.ckpt file, 'tiny', or a hub id"
            )
        if _local_folder_without_tokenizer(model):
            kwargs["tokenizer"] = clip_tokenizer()  # e.g. a copy of the shipped toy-world weights
        try:
            if is_single_file(model):
                if not Path(model).is_file():
                    raise FileNotFoundError(f"no such checkpoint file {model}")
                cls = _single_file_class(model)
                if cls.__name__ != "StableDiffusionPipeline":
                    kwargs = {k: v for k, v in kwargs.items() if k != "safety_checker"}
                pipe = cls.from_single_file(model, config=config, **kwargs)
            else:
                pipe = _from_pretrained(model, kwargs)
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - diffusers/hub raise many types
            raise ModelLoadError(_not_found(model, exc)) from None
        pipe.set_progress_bar_config(disable=True)
    if scheduler:
        from .schedulers import make_scheduler

        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    return pipe


def _single_file_class(model: str) -> Any:
    """The pipeline class for a single-file checkpoint: from the tensor names of a
    ``.safetensors`` header (SD 1.x/2.x, SDXL, SD3, Flux); SD 1.x/2.x for a ``.ckpt``."""
    import diffusers

    from .families import PIPELINE_CLASS
    from .identify import single_file_family

    family = single_file_family(model) if Path(model).suffix == ".safetensors" else "sd"
    return getattr(diffusers, PIPELINE_CLASS[family])


def _from_pretrained(model: str, kwargs: dict[str, Any]) -> Any:
    """The pipeline class named by the model's ``model_index.json`` (SD 1.x/2.x or SDXL); a
    ``ModelLoadError`` naming the class for any other family."""
    from diffusers import DiffusionPipeline

    from .families import FAMILIES

    config = DiffusionPipeline.load_config(model, local_files_only=kwargs.get("local_files_only", False))
    class_name = str(config.get("_class_name", ""))
    if class_name not in FAMILIES:
        raise ModelLoadError(
            f"model {model!r} is a {class_name or 'pipeline of unknown class'}; attnguide drives "
            f"{', '.join(FAMILIES)}"
        )
    if class_name != "StableDiffusionPipeline":
        kwargs = {k: v for k, v in kwargs.items() if k != "safety_checker"}
    return DiffusionPipeline.from_pretrained(model, **kwargs)


def _local_folder_without_tokenizer(model: str) -> bool:
    """A local diffusers folder (``model_index.json``) that names a tokenizer but ships none."""
    folder = Path(model).expanduser()
    index = folder / "model_index.json"
    if not index.is_file() or (folder / "tokenizer").is_dir():
        return False
    try:
        return "tokenizer" in json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
