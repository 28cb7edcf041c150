"""``runtime.threads``: torch's intra-op thread count is set in every process of a run (after
Lightning's launcher chose cores / processes), written into each image's metadata and hashed
with the job, so a run resumed at another count redoes its images instead of mixing bytes made
at two counts under one hash, and one count gives the same bytes whatever the caller or the
number of processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from recipe_helpers import registry, skip_unless_registered, tiny_recipe, write_recipe

from attnguide.engine.runtime import RuntimeConfig
from attnguide.errors import RecipeError
from attnguide.runs.jobs import plan_jobs
from attnguide.runs.recipe import check_output_dir, load_recipe
from attnguide.runs.runner import run_recipe

# Guided (SynGen), two seeds: the guidance backward runs CPU kernels whose sums a thread count reorders.
GUIDED = {"losses": [{"name": "syngen"}], "prompts": ["a red cube and a blue ball"], "seeds": [0, 1]}
ATTNGUIDE = [os.path.join(os.path.dirname(sys.executable), "attnguide")]


def load(path: Path, *overrides: str):
    return load_recipe(str(path), list(overrides), registry=registry())


def run_at(path: Path, *overrides: str, caller_threads: int) -> tuple[Any, dict[str, int]]:
    """Run the recipe in this process while the caller has ``caller_threads`` torch threads;
    returns the loaded recipe, the counts, and checks the caller's count is set back."""
    loaded = load(path, *overrides)
    check_output_dir(loaded, create=True)
    torch.set_num_threads(caller_threads)
    summary = run_recipe(loaded, progress=False, report=lambda *_: None)
    assert summary is not None and summary.failed == 0, summary and summary.failures
    assert torch.get_num_threads() == caller_threads  # a notebook keeps its own count
    return loaded, {"written": summary.written, "skipped": summary.skipped}


def images(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "default").glob("*.png"))}


def metadata(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "default").glob("*.json"))]


class Run(NamedTuple):
    run_dir: Path
    counts: dict[str, int]
    hashes: list[str]  # the content hashes planned
    metadata: list[dict]  # the images' metadata right after the run
    images: dict[str, bytes]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """One folder run at 2 threads, resumed at 1, then at 1 again; and a fresh folder run at 1
    by a caller with another count."""
    skip_unless_registered({("loss", "syngen"), ("parser", "spacy")})
    before = torch.get_num_threads()
    root = tmp_path_factory.mktemp("threads")
    path = write_recipe(root, tiny_recipe(root / "resumed", **GUIDED))
    out: dict[str, Run] = {}
    try:
        for name, overrides, caller in [
            ("at2", ["runtime.threads=2"], 1),
            ("resumed_at1", ["runtime.threads=1"], 2),
            ("again_at1", ["runtime.threads=1"], 2),
            ("fresh_at1", ["runtime.threads=1", f"output_dir={root / 'fresh'}"], 1),
        ]:
            loaded, counts = run_at(path, *overrides, caller_threads=caller)
            hashes = [job.content_hash for job in plan_jobs(loaded)]
            out[name] = Run(loaded.run_dir, counts, hashes, metadata(loaded.run_dir), images(loaded.run_dir))
    finally:
        torch.set_num_threads(before)
    return out


def test_the_default_is_one_thread_whatever_the_process_count(tmp_path):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    assert RuntimeConfig().threads == 1
    assert load(path, "runtime.devices=2").recipe.runtime.threads == 1


@pytest.mark.parametrize("value", [0, -3, 1.5, "two", True, None])
def test_a_bad_thread_count_is_an_error_naming_the_key(tmp_path, value):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path, runtime={"accelerator": "cpu", "threads": value}))
    with pytest.raises(RecipeError) as err:
        load(path)
    assert "runtime.threads: " in str(err.value) and "whole number, 1 or more" in str(err.value)
    assert str(path) in str(err.value)


def test_a_bad_thread_count_given_as_an_override_names_the_key(tmp_path):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    with pytest.raises(RecipeError, match=r"runtime\.threads: .*whole number, 1 or more \(got 0\)"):
        load(path, "runtime.threads=0")


def test_the_thread_count_is_part_of_the_content_hash_and_the_process_count_is_not(tmp_path):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path, seeds=[0, 1]))
    one, two = plan_jobs(load(path, "runtime.threads=1")), plan_jobs(load(path, "runtime.threads=2"))
    assert all(a.content_hash != b.content_hash for a, b in zip(one, two))
    assert [j.content_hash for j in plan_jobs(load(path, "runtime.devices=2"))] == [j.content_hash for j in one]
    assert load(path, "runtime.threads=2").cells[0].hashed_config()["threads"] == 2


def test_every_image_records_the_thread_count_it_was_made_at(runs):
    for name, threads in [("at2", 2), ("resumed_at1", 1)]:
        assert len(runs[name].metadata) == 2
        for meta in runs[name].metadata:
            assert meta["threads"] == threads and meta["config"]["threads"] == threads
            assert meta["content_hash"] in runs[name].hashes


def test_resuming_at_another_thread_count_redoes_every_image_and_at_the_same_count_none(runs):
    assert runs["at2"].counts == {"written": 2, "skipped": 0}
    assert runs["resumed_at1"].counts == {"written": 2, "skipped": 0}
    assert runs["again_at1"].counts == {"written": 0, "skipped": 2}
    assert not set(runs["at2"].hashes) & set(runs["resumed_at1"].hashes)


def test_one_thread_count_gives_the_same_bytes_whatever_the_caller_had(runs):
    resumed, fresh = runs["again_at1"], runs["fresh_at1"]
    assert len(fresh.images) == 2 and resumed.images == fresh.images
    assert [m["content_hash"] for m in resumed.metadata] == [m["content_hash"] for m in fresh.metadata]


def test_two_processes_compute_at_the_recipe_count_not_lightnings(tmp_path):
    """Lightning sets cores / processes threads in each process when ``OMP_NUM_THREADS`` is unset;
    the recipe's count wins, and the images equal a one-process run's at that count."""
    from lightning.fabric.utilities.distributed import _suggested_max_num_threads

    threads = _suggested_max_num_threads(2) + 1  # a count Lightning would not choose
    runtime = {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "threads": threads}
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "multi", seeds=[0, 1], runtime=runtime))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    multi = subprocess.run([*ATTNGUIDE, "run", str(path), "--quiet"], env=env, capture_output=True, text=True,
                           timeout=600, check=False)
    assert multi.returncode == 0, multi.stderr[-3000:]
    multi_dir = tmp_path / "multi" / "t"
    metas = metadata(multi_dir)
    assert sorted(m["rank"] for m in metas) == [0, 1]
    assert all(m["threads"] == threads for m in metas)

    before = torch.get_num_threads()
    try:
        loaded, _ = run_at(path, "runtime.devices=1", f"output_dir={tmp_path / 'single'}", caller_threads=1)
    finally:
        torch.set_num_threads(before)
    assert images(loaded.run_dir) == images(multi_dir)


def test_the_recipes_doc_gives_the_default_count_and_the_policy():
    text = (Path(__file__).parents[1] / "docs" / "recipes.md").read_text(encoding="utf-8")
    assert f"| `runtime.threads` | `{RuntimeConfig().threads}` |" in text
    assert "## Determinism" in text and "Resuming at another count redoes the images" in text
