"""Writing results: atomic files (temp + rename), image metadata, latents.

A killed run never leaves a half-written file under a final name: everything is written to a
temporary file in the same directory and renamed into place.
"""

from __future__ import annotations

import json
import os
import platform
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write ``path`` through ``write(fileobj)`` into a temp file, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_png(path: Path, image: Any) -> Path:
    return atomic_write(path, lambda f: image.save(f, format="PNG"))


def write_tensors(path: Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save

    blob = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    return atomic_write(path, lambda f: f.write(blob))


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one line; a single ``write`` of a complete line, flushed and synced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, default=_jsonable) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def slugify(text: str, limit: int = 48) -> str:
    """File-name friendly form of a prompt: ``a pink sunflower`` -> ``a_pink_sunflower``."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return (slug[:limit].rstrip("_")) or "prompt"


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed; a ``ConfigError`` naming it when it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise ConfigError(f"output directory {str(path)!r} cannot be written ({exc.strerror or exc}); choose another --out") from None
    return path


def versions() -> dict[str, str]:
    """Versions that matter for reproducing an image."""
    import diffusers
    import torch
    import transformers

    from .. import __version__

    return {
        "attnguide": __version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
