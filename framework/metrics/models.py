"""Loading the metric models (CLIP, BLIP-VQA) by hub id or local directory, with errors that
say how to make a model available on a machine without internet.

Scorers take a loaded model and processor, so tests (and callers with their own weights) build
them directly and never come here.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ModelLoadError

DEFAULT_CLIP = "openai/clip-vit-base-patch16"
DEFAULT_BLIP_VQA = "Salesforce/blip-vqa-base"


def missing_model_message(kind: str, model_id: str, exc: BaseException, option: str) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return (
        f"cannot load the {kind} model {model_id!r} ({first}). To make it available offline: on a "
        f"machine with internet run `huggingface-cli download {model_id}`, "
        "copy its cache (~/.cache/huggingface/hub, or set HF_HOME) here and set HF_HUB_OFFLINE=1; "
        f"or save the model to a directory and pass it with {option} PATH."
    )


def _local_only() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("", "0", "false", "no")


def load_clip(model_id: str = DEFAULT_CLIP, device: str = "cpu") -> tuple[Any, Any]:
    """``(CLIPModel, CLIPProcessor)`` in eval mode on ``device``."""
    from transformers import CLIPModel, CLIPProcessor

    try:
        model = CLIPModel.from_pretrained(model_id, local_files_only=_local_only())
        processor = CLIPProcessor.from_pretrained(model_id, local_files_only=_local_only())
    except Exception as exc:  # noqa: BLE001 - hub and file errors come in many types
        raise ModelLoadError(missing_model_message("CLIP", model_id, exc, "--clip-model")) from None
    return model.eval().to(device), processor


def load_blip_vqa(model_id: str = DEFAULT_BLIP_VQA, device: str = "cpu") -> tuple[Any, Any]:
    """``(BlipForQuestionAnswering, BlipProcessor)`` in eval mode on ``device``."""
    from transformers import BlipForQuestionAnswering, BlipProcessor

    try:
        model = BlipForQuestionAnswering.from_pretrained(model_id, local_files_only=_local_only())
        processor = BlipProcessor.from_pretrained(model_id, local_files_only=_local_only())
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(missing_model_message("BLIP-VQA", model_id, exc, "--vqa-model")) from None
    return model.eval().to(device), processor
