"""Result files get the mode an ordinary ``open`` gives (``0o666`` less the umask), not the 0600
of the temporary file they are written through."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from PIL import Image

from attnguide.results.files import append_jsonl, write_json, write_png, write_tensors


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def write_every_kind(folder: Path) -> list[Path]:
    append_jsonl(folder / "results.jsonl", {"prompt": "a cat"})
    return [
        write_png(folder / "a.png", Image.new("RGB", (8, 8))),
        write_json(folder / "a.json", {"seed": 0}),
        write_tensors(folder / "a.latents.safetensors", {"latents": torch.zeros(1, 4, 2, 2)}),
        folder / "results.jsonl",
    ]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_are_as_readable_as_the_umask_allows(tmp_path, mask, expected):
    with umask(mask):
        paths = write_every_kind(tmp_path)
    assert {p.name: oct(mode(p)) for p in paths} == {p.name: oct(expected) for p in paths}
    assert not list(tmp_path.glob(".*.tmp"))


def test_writing_leaves_the_process_umask_as_it_was(tmp_path):
    with umask(0o027):
        write_json(tmp_path / "a.json", {})
        assert os.umask(0o027) == 0o027
