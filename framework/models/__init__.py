"""Model construction and loading: the embedded tiny pipeline and real SD checkpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .tokenizer import clip_tokenizer

if TYPE_CHECKING:  # the names __getattr__ imports on first use
    from .loading import load_pipeline, load_tokenizer
    from .tiny import tiny_pipeline

__all__ = ["clip_tokenizer", "load_tokenizer", "tiny_pipeline", "load_pipeline"]


def __getattr__(name: str) -> object:  # lazy: keep `import attnguide.models` light
    if name == "tiny_pipeline":
        from .tiny import tiny_pipeline

        return tiny_pipeline
    if name in ("load_pipeline", "load_tokenizer"):
        from . import loading

        return getattr(loading, name)
    raise AttributeError(name)
