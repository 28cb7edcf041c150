"""``attnguide run`` on the tiny model: layout, metadata, resumption, failures, dry runs."""

from __future__ import annotations

import json

from PIL import Image

from attnguide.cli.main import main
from attnguide.runs.jobs import plan_jobs
from attnguide.runs.recipe import load_recipe
from recipe_helpers import registry, tiny_recipe, write_recipe


def sweep_recipe(tmp_path, **keys):
    data = tiny_recipe(tmp_path / "out", seeds=[0, 1], sweep={"sampling.guidance_scale": [1.0, 3.0]}, **keys)
    return write_recipe(tmp_path, data)


def rows_of(run_dir):
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_run_writes_images_metadata_grids_and_index_and_a_rerun_skips_them(tmp_path, capsys):
    path = sweep_recipe(tmp_path)
    assert main(["run", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "4 written, 0 skipped, 0 failed" in out
    run_dir = tmp_path / "out" / "t"
    cells = ["guidance_scale-1.0", "guidance_scale-3.0"]
    for cell in cells:
        assert (run_dir / cell / "recipe.resolved.yaml").is_file()
        for seed in (0, 1):
            meta = json.loads((run_dir / cell / f"a_red_cube_s{seed}.json").read_text())
            assert meta["seed"] == seed and meta["prompt"] == "a red cube" and meta["cell"] == cell
            assert len(meta["content_hash"]) == 64 and meta["config"]["sampling"]["steps"] == 2
            assert {"versions", "timings", "analysis", "losses", "wall_time_s"} <= set(meta)
            assert Image.open(run_dir / cell / f"a_red_cube_s{seed}.png").size == (128, 128)
    assert (run_dir / "recipe.resolved.yaml").is_file()
    grid = Image.open(run_dir / "grids" / "a_red_cube.png")
    assert grid.width > 2 * 128 and grid.height > 2 * 128
    rows = rows_of(run_dir)
    assert [(r["cell"], r["seed"], r["status"]) for r in rows] == [(c, s, "ok") for c in cells for s in (0, 1)]

    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("guidance_scale-*/a_red_cube*")}
    assert main(["run", str(path), "--quiet"]) == 0
    assert "0 written, 4 skipped, 0 failed" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("guidance_scale-*/a_red_cube*")} == before
    assert len(rows_of(run_dir)) == 4


def test_only_images_whose_settings_changed_are_made_again(tmp_path, capsys):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "out"))
    assert main(["run", str(path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", str(path), "--quiet", "seeds=[0, 1]"]) == 0
    assert "1 written, 1 skipped" in capsys.readouterr().out
    assert main(["run", str(path), "sampling.steps=3", "--dry-run", "seeds=[0, 1]"]) == 0  # flags, overrides mixed
    out = capsys.readouterr().out
    assert "0 done" in out and out.count("# todo  ") == 2


def test_failed_jobs_are_recorded_the_sweep_goes_on_and_the_exit_code_is_1(tmp_path, capsys):
    data = tiny_recipe(tmp_path / "out", sweep={"model.id": ["tiny", "./no/such/model"]})
    path = write_recipe(tmp_path, data)
    assert main(["run", str(path), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "1 written, 0 skipped, 1 failed" in captured.out
    assert "does not exist" in captured.err
    rows = rows_of(tmp_path / "out" / "t")
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert "does not exist" in rows[1]["error"]
    assert (tmp_path / "out" / "t" / "grids" / "a_red_cube.png").is_file()  # a grey tile for the failure


def test_incomplete_outputs_are_never_taken_as_finished(tmp_path, capsys):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "out", seeds=[0, 1]))
    assert main(["run", str(path), "--quiet"]) == 0
    cell = tmp_path / "out" / "t" / "default"
    (cell / "a_red_cube_s0.json").write_text('{"content_hash": "')  # torn metadata (we rename, others may not)
    (cell / "a_red_cube_s1.png").unlink()  # metadata whose image is gone
    (cell / ".a_red_cube_s9.png.abc.tmp").write_bytes(b"partial")  # a killed run's temp file
    capsys.readouterr()
    assert main(["run", str(path), "--quiet"]) == 0
    assert "2 written, 0 skipped" in capsys.readouterr().out
    assert not list(cell.glob(".*.tmp"))
    loaded = load_recipe(str(path), registry=registry())
    for job in plan_jobs(loaded):
        assert json.loads(job.metadata_path(loaded.run_dir).read_text())["content_hash"] == job.content_hash
        assert (job.metadata_path(loaded.run_dir).with_suffix(".png")).is_file()


def test_dry_run_prints_the_resolved_recipe_and_jobs_and_writes_nothing(tmp_path, capsys):
    path = sweep_recipe(tmp_path)
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sampling.guidance_scale:" in out and "# jobs: 4 (2 cells x 1 prompts x 2 seeds)" in out
    assert out.count("# todo  ") == 4
    assert not (tmp_path / "out").exists()
