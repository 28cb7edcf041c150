"""A run killed with SIGKILL mid-way resumes: no partial file is taken as done, outputs complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from attnguide.cli.main import main
from attnguide.runs.jobs import plan_jobs
from attnguide.runs.recipe import load_recipe
from recipe_helpers import registry, tiny_recipe, write_recipe

ATTNGUIDE = [sys.executable, "-m", "attnguide.cli.main"]


def test_a_run_killed_after_its_first_image_resumes_to_complete_outputs(tmp_path, capsys):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "out", seeds={"count": 6}))
    cell = tmp_path / "out" / "t" / "default"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*ATTNGUIDE, "run", str(path), "--quiet"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not list(cell.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished_before = {p.name for p in cell.glob("*.json")}
    assert 1 <= len(finished_before) < 6

    loaded = load_recipe(str(path), registry=registry())
    for meta_path in cell.glob("*.json"):  # whatever the kill left under a final name is complete
        meta = json.loads(meta_path.read_text())
        assert (cell / meta["files"]["image"]).is_file()

    assert main(["run", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{6 - len(finished_before)} written, {len(finished_before)} skipped, 0 failed" in out
    assert not list(cell.glob(".*.tmp"))
    for job in plan_jobs(loaded):
        meta = json.loads(job.metadata_path(loaded.run_dir).read_text())
        assert meta["content_hash"] == job.content_hash
        assert Path(job.metadata_path(loaded.run_dir).with_suffix(".png")).is_file()
    rows = [json.loads(line) for line in (loaded.run_dir / "results.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["status"]) for r in rows] == [(s, "ok") for s in range(6)]
