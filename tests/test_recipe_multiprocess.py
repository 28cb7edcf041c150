"""``runtime.devices: 2`` on the CPU: Fabric launches two processes that split the jobs, and the
images are bit-identical to a single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from safetensors.torch import load_file

from recipe_helpers import skip_unless_registered, tiny_recipe, write_recipe

# The console script, as a user types it: Fabric's launcher starts the other rank by rerunning it.
ATTNGUIDE = [os.path.join(os.path.dirname(sys.executable), "attnguide")]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # One thread per process in both runs: CPU kernels may sum in another order with another
    # thread count, and the comparison is about sharding, not threading.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*ATTNGUIDE, *args], env=env, capture_output=True, text=True, timeout=600)


def test_two_cpu_processes_split_the_jobs_and_match_a_single_process_run(tmp_path):
    skip_unless_registered({("loss", "syngen"), ("parser", "spacy")})
    sweep = {"method": {"none": {"losses": []}, "syngen": {"losses": [{"name": "syngen"}]}}}
    data = tiny_recipe(tmp_path / "multi", seeds=[0, 1, 2], save_latents=True, sweep=sweep,
                       runtime={"accelerator": "cpu", "devices": 2, "strategy": "ddp"})
    path = write_recipe(tmp_path, data)

    multi = run_cli("run", str(path), "--quiet")
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "6 written, 0 skipped, 0 failed" in multi.stdout and "2 process(es)" in multi.stdout
    single = run_cli("run", str(path), "--quiet", "runtime.devices=1", f"output_dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-3000:]

    multi_dir, single_dir = tmp_path / "multi" / "t", tmp_path / "single" / "t"
    rows = [json.loads(line) for line in (multi_dir / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["rank"] for r in rows} == {0, 1}
    assert not list(multi_dir.glob("results.rank*"))
    images = sorted(p.relative_to(multi_dir) for p in multi_dir.glob("method-*/*.png"))
    assert len(images) == 6
    for rel in images:
        assert (multi_dir / rel).read_bytes() == (single_dir / rel).read_bytes(), rel
        latents = rel.with_name(rel.stem + ".latents.safetensors")
        assert load_file(multi_dir / latents)["latents"].equal(load_file(single_dir / latents)["latents"]), rel
        meta_multi = json.loads((multi_dir / rel.with_suffix(".json")).read_text())
        meta_single = json.loads((single_dir / rel.with_suffix(".json")).read_text())
        assert meta_multi["content_hash"] == meta_single["content_hash"]
        assert [t["value"] for t in meta_multi["losses"]] == [t["value"] for t in meta_single["losses"]]
    assert (multi_dir / "grids" / "a_red_cube.png").is_file()
