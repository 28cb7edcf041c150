"""The prompts of a recipe: inline, from a .txt/.csv/.jsonl file, or a named built-in set."""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from ..errors import AttnguideError, RecipeError
from .schema import PromptSource

PROMPT_SETS_MODULE = "attnguide.datasets"


def load_prompts(src: PromptSource, base_dir: Path, source: str) -> list[str]:
    """The prompt texts, in order, each once; relative files are resolved against ``base_dir``
    (the recipe file's directory). ``limit`` keeps the first N distinct prompts: repeats are
    dropped first, so ``{set: cc-500, limit: 50}`` gives 50 prompts although the set repeats some."""

    try:
        if src.inline is not None:
            texts = _check_texts(src.inline, "prompts")
        elif src.file is not None:
            texts = _read_file(src.file, base_dir)
        else:
            texts = _prompt_set(str(src.set), src.seed)
    except _Problem as problem:
        raise RecipeError(source, [(problem.key, problem.message)]) from None
    unique = list(dict.fromkeys(texts))
    return unique if src.limit is None else unique[: src.limit]


class _Problem(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


def _check_texts(texts: list[Any], key: str) -> list[str]:
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise _Problem(f"{key}.{i}", f"expected a non-empty prompt text, got {text!r}")
        out.append(text.strip())
    return out


def _read_file(name: str, base_dir: Path) -> list[str]:
    path = Path(name).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise _Problem("prompts.file", f"no such file {str(path)!r} (relative paths are resolved against the recipe's directory)")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Problem("prompts.file", f"cannot read {str(path)!r}: {exc}") from None
    if suffix == ".txt":
        texts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    elif suffix == ".csv":
        texts = _csv_prompts(text, path)
    elif suffix == ".jsonl":
        texts = _jsonl_prompts(text, path)
    else:
        raise _Problem("prompts.file", f"{str(path)!r}: expected a .txt (one prompt per line), .csv (column 'prompt') or .jsonl ({{\"prompt\": ...}}) file")
    if not texts:
        raise _Problem("prompts.file", f"{str(path)!r} holds no prompts")
    return _check_texts(texts, "prompts.file")


def _csv_prompts(text: str, path: Path) -> list[str]:
    reader = csv.DictReader(text.splitlines())
    if "prompt" not in (reader.fieldnames or []):
        raise _Problem("prompts.file", f"{str(path)!r} has no 'prompt' column (columns: {', '.join(reader.fieldnames or []) or 'none'})")
    return [row["prompt"] for row in reader if (row.get("prompt") or "").strip()]


def _jsonl_prompts(text: str, path: Path) -> list[str]:
    texts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _Problem("prompts.file", f"{str(path)!r} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise _Problem("prompts.file", f"{str(path)!r} line {number}: expected an object with a \"prompt\" string")
        texts.append(row["prompt"])
    return texts


def _prompt_set(name: str, seed: int | None) -> list[str]:
    """Every prompt of the set, in the order ``seed`` fixes (the caller applies ``limit``)."""
    if importlib.util.find_spec(PROMPT_SETS_MODULE) is None:
        raise _Problem("prompts.set", f"unknown prompt set {name!r}: no built-in prompt sets are installed "
                                      f"({PROMPT_SETS_MODULE} is missing); use a list or {{file: PATH}}")
    module = importlib.import_module(PROMPT_SETS_MODULE)
    kwargs = {"seed": seed} if seed is not None else {}
    try:
        items = module.load_prompt_set(name, **kwargs)
    except (AttnguideError, KeyError, ValueError, FileNotFoundError) as exc:
        text = str(exc).strip("'\"")
        raise _Problem("prompts.set", text if text.startswith("unknown prompt set") else f"prompt set {name!r}: {text}") from None
    texts = [getattr(item, "prompt", item.get("prompt") if isinstance(item, dict) else item) for item in items]
    return _check_texts(texts, "prompts.set")
