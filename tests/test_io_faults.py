"""Disk faults during ``attnguide run``: a full disk or a read-only folder stops the sweep at the
first image with one line naming the file and exit code 3; finished outputs stay valid, and
rerunning the same command completes the run."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from attnguide.cli.main import main
from attnguide.errors import RunIOError
from attnguide.results import files, images
from attnguide.runs.jobs import is_finished, plan_jobs, read_result_rows
from attnguide.runs.recipe import check_output_dir, load_recipe
from attnguide.runs.runner import run_recipe
from recipe_helpers import registry, tiny_recipe, write_recipe

FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def tiny_run(tmp_path, seeds):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "out", seeds=seeds))
    loaded = load_recipe(str(path), registry=registry())
    check_output_dir(loaded, create=True)
    return path, loaded


def run(loaded):
    return run_recipe(loaded, progress=False, report=lambda *_: None)


def png_writes_failing_with(monkeypatch, *errors):
    """``save_image`` writes PNGs through the real ``atomic_write``, whose writer raises
    ``errors`` one per call (``None``: write normally). Returns the list of paths tried."""
    tried, real = [], images.write_png

    def write_png(path, image):
        tried.append(path)
        error = errors[len(tried) - 1] if len(tried) <= len(errors) else None
        if error is None:
            return real(path, image)

        def fail(handle):
            handle.write(b"\x89PNG partial")
            raise OSError(error.errno, error.strerror)
        return files.atomic_write(path, fail)

    monkeypatch.setattr(images, "write_png", write_png)
    return tried


def assert_resume_completes(loaded, done_before):
    summary = run(loaded)
    assert (summary.written, summary.skipped, summary.failed) == (len(plan_jobs(loaded)) - done_before, done_before, 0)
    for job in plan_jobs(loaded):
        assert is_finished(job, loaded.run_dir)
    rows = read_result_rows(loaded.run_dir / "results.jsonl")
    assert [r["status"] for r in rows] == ["ok"] * len(plan_jobs(loaded))
    assert not list(loaded.run_dir.rglob("*.tmp")) and not (loaded.run_dir / ".attnguide.lock").exists()


def test_a_full_disk_stops_the_sweep_at_the_first_image_and_a_rerun_completes(tmp_path, monkeypatch):
    _, loaded = tiny_run(tmp_path, [0, 1, 2])
    tried = png_writes_failing_with(monkeypatch, FULL, FULL, FULL)
    with pytest.raises(RunIOError) as raised:
        run(loaded)
    image = loaded.run_dir / "default" / "a_red_cube_s0.png"
    assert tried == [image]  # not one attempt per remaining image
    assert str(raised.value).startswith(f"{image}: No space left on device; the run stopped")
    assert raised.value.exit_code == 3 and "\n" not in str(raised.value)
    assert not list(loaded.run_dir.rglob("*.tmp")) and not (loaded.run_dir / ".attnguide.lock").exists()
    monkeypatch.undo()
    assert_resume_completes(loaded, done_before=0)


def test_an_ordinary_write_error_fails_its_image_and_the_sweep_goes_on_until_the_disk_is_full(tmp_path, monkeypatch):
    _, loaded = tiny_run(tmp_path, [0, 1, 2, 3])
    io_error = OSError(errno.EIO, os.strerror(errno.EIO))
    tried = png_writes_failing_with(monkeypatch, io_error, None, FULL)
    with pytest.raises(RunIOError, match="a_red_cube_s2.png: No space left on device"):
        run(loaded)
    assert [p.name for p in tried] == ["a_red_cube_s0.png", "a_red_cube_s1.png", "a_red_cube_s2.png"]
    rows = read_result_rows(loaded.run_dir / "results.jsonl")
    assert [(r["seed"], r["status"]) for r in rows] == [(0, "failed"), (1, "ok")]
    assert "Input/output error" in rows[0]["error"]
    monkeypatch.undo()
    assert_resume_completes(loaded, done_before=1)


def test_a_read_only_file_system_stops_the_sweep_with_one_error(tmp_path, monkeypatch):
    _, loaded = tiny_run(tmp_path, [0, 1])
    tried = png_writes_failing_with(monkeypatch, OSError(errno.EROFS, os.strerror(errno.EROFS)))
    with pytest.raises(RunIOError, match=r"a_red_cube_s0.png: Read-only file system; .*make the file system writable"):
        run(loaded)
    assert len(tried) == 1
    monkeypatch.undo()
    assert_resume_completes(loaded, done_before=0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (see the EROFS test)")
def test_a_read_only_run_folder_is_one_error_naming_it(tmp_path):
    _, loaded = tiny_run(tmp_path, [0])
    loaded.run_dir.chmod(0o555)
    try:
        with pytest.raises(RunIOError, match=f"{loaded.run_dir}.*: Permission denied; the run stopped"):
            run(loaded)
    finally:
        loaded.run_dir.chmod(0o755)
    assert_resume_completes(loaded, done_before=0)


@pytest.mark.parametrize("module, name, file, finished", [
    ("attnguide.results.shared", "atomic_write", "recipe.resolved.yaml", 0),  # before the jobs
    ("attnguide.results.images", "write_json", "a_red_cube_s0.json", 0),     # an image's metadata
    ("attnguide.runs.runner", "append_jsonl", "results.jsonl", 1),           # the journal
    ("attnguide.runs.jobs", "atomic_write", "results.jsonl", 2),             # the merge
    ("attnguide.runs.runner", "atomic_write", "summary.json", 2),            # the summary
])
def test_a_full_disk_anywhere_in_a_run_is_one_error_naming_the_file(tmp_path, monkeypatch, module, name, file,
                                                                    finished):
    _, loaded = tiny_run(tmp_path, [0, 1])

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(f"{module}.{name}", full)
    with pytest.raises(RunIOError) as raised:
        run(loaded)
    assert f"{file}: No space left on device; the run stopped" in str(raised.value)
    monkeypatch.undo()
    assert sum(is_finished(job, loaded.run_dir) for job in plan_jobs(loaded)) == finished
    assert not (loaded.run_dir / ".attnguide.lock").exists()
    assert_resume_completes(loaded, done_before=finished)


def test_the_cli_reports_a_full_disk_as_one_line_and_exit_code_3(tmp_path, monkeypatch, capsys):
    path, loaded = tiny_run(tmp_path, [0, 1])
    png_writes_failing_with(monkeypatch, FULL, FULL)
    assert main(["run", str(path), "--quiet"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("attnguide: error: ")
    assert f"{loaded.run_dir / 'default' / 'a_red_cube_s0.png'}: No space left on device" in err[0]


def test_an_os_error_from_atomic_write_names_the_file_meant_not_its_temp_file(tmp_path):
    target = tmp_path / "a.png"

    def fail(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as raised:
        files.atomic_write(target, fail)
    assert raised.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_a_journal_line_cut_short_does_not_swallow_the_next_row(tmp_path):
    journal = tmp_path / "results.jsonl"
    journal.write_text('{"cell": "default", "prompt": "a", "seed": 0, "sta')  # the disk filled mid-line
    files.append_jsonl(journal, {"cell": "default", "prompt": "a", "seed": 1, "status": "ok"})
    assert [(r["seed"], r["status"]) for r in read_result_rows(journal)] == [(1, "ok")]
    assert json.loads(journal.read_text().splitlines()[-1])["seed"] == 1


FAILING_RANK_SCRIPT = '''
import errno, os, sys
from attnguide.results import files, images
real = images.write_png

def write_png(path, image):
    if os.environ.get("LOCAL_RANK", "0") != "1":
        return real(path, image)
    def full(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return files.atomic_write(path, full)

images.write_png = write_png
from attnguide.cli.main import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.slow
def test_a_full_disk_in_another_process_ends_a_two_process_run_with_one_line_and_exit_code_3(tmp_path):
    # the script is rerun by Fabric's launcher for rank 1, which finds its disk full
    script = tmp_path / "full_on_rank1.py"
    script.write_text(FAILING_RANK_SCRIPT)
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "out", seeds=[0, 1, 2, 3],
                                              runtime={"accelerator": "cpu", "devices": 2, "strategy": "ddp"}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), "run", str(path), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnguide: error: ") and "a_red_cube_s1.png: No space left" in err[0]
    run_dir = tmp_path / "out" / "t"
    assert sorted(p.name for p in run_dir.glob("default/*.png")) == ["a_red_cube_s0.png", "a_red_cube_s2.png"]
    assert not (run_dir / ".attnguide.lock").exists() and not list(run_dir.glob("*.done.json"))
    resumed = subprocess.run([os.path.join(os.path.dirname(sys.executable), "attnguide"), "run", str(path), "--quiet"],
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and "2 written, 2 skipped, 0 failed" in resumed.stdout, resumed.stderr[-3000:]
