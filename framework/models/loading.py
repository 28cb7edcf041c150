"""Load Stable Diffusion pipelines and tokenizers by name: ``tiny``, a hub id, a local
directory, or a single-file checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnguide.errors import ModelLoadError
from attnguide.models.tokenizer import clip_tokenizer

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def load_tokenizer(model: str) -> Any:
    """The text tokenizer of ``model`` (``"tiny"``: the shipped CLIP BPE tokenizer)."""
    if model == "tiny":
        return clip_tokenizer()
    from transformers import CLIPTokenizer

    try:
        return CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
    except Exception as exc:  # noqa: BLE001 - transformers raises many types here
        raise ModelLoadError(_not_found(model, exc)) from None


def _not_found(model: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"cannot load model {model!r}: {first}. Use 'tiny', a local diffusers directory, a "
        "single-file .safetensors/.ckpt checkpoint, or a hub id already in the local cache "
        "(e.g. CompVis/stable-diffusion-v1-4 after `huggingface-cli download`)."
    )


def is_single_file(model: str) -> bool:
    return Path(model).suffix in SINGLE_FILE_SUFFIXES
