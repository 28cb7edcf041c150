"""Model construction and loading: the embedded tiny pipeline and real SD checkpoints."""

from __future__ import annotations

from .tokenizer import clip_tokenizer

__all__ = ["clip_tokenizer", "load_tokenizer", "tiny_pipeline", "load_pipeline"]


def __getattr__(name: str):  # lazy: keep `import attnguide.models` light
    if name == "tiny_pipeline":
        from .tiny import tiny_pipeline

        return tiny_pipeline
    if name in ("load_pipeline", "load_tokenizer"):
        from . import loading

        return getattr(loading, name)
    raise AttributeError(name)
