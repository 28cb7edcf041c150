"""Writing results: atomic files (temp + rename), image metadata, latents.

A killed run never leaves a half-written file under a final name: everything is written to a
temporary file in the same directory and renamed into place, with the mode an ordinary
``open`` would give (``0o666`` less the umask: 0644 under umask 022; ``mkstemp`` alone gives
0600). An ``OSError`` from these writers names the file meant (not its temporary name), so an
error message can point at it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError

# errors no later write can avoid: a full disk or quota, a read-only file system
_DISK_FULL_OR_READ_ONLY = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS})
_NO_PERMISSION = frozenset({errno.EACCES, errno.EPERM})


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write ``path`` through ``write(fileobj)`` into a temp file, then rename it into place."""
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _new_file_mode())  # mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp:
            with contextlib.suppress(OSError):  # the error that matters is the one raised
                Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and (exc.filename is None or _is_temp_of(exc.filename, path)):
            exc.filename = str(path)
        raise
    return path


def _is_temp_of(name: object, path: Path) -> bool:
    return isinstance(name, str) and Path(name).name.startswith(f".{path.name}.") and name.endswith(".tmp")


def _new_file_mode() -> int:
    """``0o666`` less the process umask. The umask can only be read by setting it, so it is set
    and put back at once (no file is created in between)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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
    """Append one line; a single ``write`` of a complete line, flushed and synced. A last line cut
    short (a full disk, a killed process) is ended first, so it cannot swallow this one."""
    line = (json.dumps(row, default=_jsonable) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as handle:  # appends go to the end, wherever the reads were
            end = handle.seek(0, os.SEEK_END)
            if end:
                handle.seek(end - 1)
                if handle.read(1) != b"\n":
                    line = b"\n" + line
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        exc.filename = exc.filename or str(path)
        raise


def disk_fault(exc: BaseException, folder: Path) -> OSError | None:
    """The ``OSError`` in ``exc`` or its causes that no later write into ``folder`` can avoid - a
    full disk or quota, a read-only file system, no permission inside ``folder`` - else ``None``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and (current.errno in _DISK_FULL_OR_READ_ONLY or (
                current.errno in _NO_PERMISSION and isinstance(current.filename, str)
                and _inside(Path(current.filename), folder))):
            return current
        current = current.__cause__ or current.__context__
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path.absolute() == folder.absolute() or folder.absolute() in path.absolute().parents


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
