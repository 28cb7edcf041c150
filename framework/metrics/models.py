"""Loading the metric models (CLIP, BLIP-VQA) by hub id or local directory, with errors that
say how to make a model available on a machine without internet.

Loading never waits on an unreachable hub: a local directory and the Hugging Face cache are read
with ``local_files_only=True``; only when the model is in neither does the loader go to the hub,
and only if ``HF_HUB_OFFLINE`` is unset and a connection to the hub opens within
``HUB_PROBE_TIMEOUT_S``. Otherwise the error comes at once, as one message (the hub client
would retry for about half a minute, logging each attempt).

Scorers take a loaded model and processor, so tests (and callers with their own weights) build
them directly and never come here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ModelLoadError

DEFAULT_CLIP = "openai/clip-vit-base-patch16"
DEFAULT_BLIP_VQA = "Salesforce/blip-vqa-base"
DEFAULT_ENDPOINT = "https://huggingface.co"
HUB_PROBE_TIMEOUT_S = 3.0

Loader = Callable[..., Any]  # transformers' ``from_pretrained``: (model_id, local_files_only=...) -> object


def missing_model_message(kind: str, model_id: str, exc: BaseException, option: str, reason: str = "") -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    why = f"{reason}; " if reason else ""
    return (
        f"cannot load the {kind} model {model_id!r} ({why}{first}). To make it available offline: on a "
        f"machine with internet run `huggingface-cli download {model_id}`, "
        "copy its cache (~/.cache/huggingface/hub, or set HF_HOME) here and set HF_HUB_OFFLINE=1; "
        f"or save the model to a directory and pass it with {option} PATH."
    )


def _local_only() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("", "0", "false", "no")


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (``HF_ENDPOINT``, default huggingface.co) opens
    within ``timeout`` seconds. Behind a proxy (``HTTPS_PROXY``/``HTTP_PROXY`` set) a direct
    connection says nothing, so the hub is assumed reachable and the client tries it."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return True
    url = urlsplit(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def load_parts(kind: str, model_id: str, option: str, loaders: Sequence[Loader]) -> list[Any]:
    """``[loader(model_id) for loader in loaders]``: from a local directory or the cache without
    touching the network; from the hub only when it is allowed and reachable. Any failure is one
    ``ModelLoadError`` saying what to do."""
    def load_all(local_only: bool) -> list[Any]:
        return [load(model_id, local_files_only=local_only) for load in loaders]

    try:
        return load_all(True)
    except Exception as exc:  # noqa: BLE001 - hub and file errors come in many types
        first_error: BaseException = exc
    if Path(model_id).expanduser().is_dir():
        raise ModelLoadError(missing_model_message(kind, model_id, first_error, option, "a local directory")) from None
    if _local_only():
        reason = "not in the Hugging Face cache and HF_HUB_OFFLINE is set"
    elif not hub_reachable():
        endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
        reason = f"not in the Hugging Face cache and {endpoint} is not reachable"
    else:
        try:
            return load_all(False)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(missing_model_message(kind, model_id, exc, option)) from None
    raise ModelLoadError(missing_model_message(kind, model_id, first_error, option, reason)) from None


def load_clip(model_id: str = DEFAULT_CLIP, device: str = "cpu") -> tuple[Any, Any]:
    """``(CLIPModel, CLIPProcessor)`` in eval mode on ``device``."""
    from transformers import CLIPModel, CLIPProcessor

    model, processor = load_parts("CLIP", model_id, "--clip-model", (CLIPModel.from_pretrained,
                                                                     CLIPProcessor.from_pretrained))
    return model.eval().to(device), processor


def load_blip_vqa(model_id: str = DEFAULT_BLIP_VQA, device: str = "cpu") -> tuple[Any, Any]:
    """``(BlipForQuestionAnswering, BlipProcessor)`` in eval mode on ``device``."""
    from transformers import BlipForQuestionAnswering, BlipProcessor

    model, processor = load_parts("BLIP-VQA", model_id, "--vqa-model", (BlipForQuestionAnswering.from_pretrained,
                                                                        BlipProcessor.from_pretrained))
    return model.eval().to(device), processor
