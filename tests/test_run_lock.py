"""One ``attnguide run`` at a time per run folder: ``.attnguide.lock`` names its holder, a killed
run's lock is taken over, a live one refuses the run before anything is touched."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from PIL import Image

from attnguide.cli.main import main
from attnguide.errors import RunLockedError
from attnguide.runs import runner
from attnguide.runs.jobs import is_finished, plan_jobs
from attnguide.runs.recipe import check_output_dir, load_recipe
from attnguide.runs.runner import run_recipe
from recipe_helpers import registry, tiny_recipe, write_recipe

LOCK = ".attnguide.lock"


def tiny_run(tmp_path, **keys):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "out", **keys))
    loaded = load_recipe(str(path), registry=registry())
    check_output_dir(loaded, create=True)
    return path, loaded


def write_lock(run_dir, pid, host=None):
    lock = {"pid": pid, "host": host or socket.gethostname(), "since": "2024-05-01T12:00:00+00:00", "token": "t0"}
    (run_dir / LOCK).write_text(json.dumps(lock))
    return lock


def read_lock(run_dir):
    return json.loads((run_dir / LOCK).read_text())


@pytest.fixture()
def live_pid():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_folder_locked_by_a_live_process_is_refused_with_an_error_naming_the_holder(tmp_path, live_pid):
    _, loaded = tiny_run(tmp_path)
    lock = write_lock(loaded.run_dir, live_pid)
    with pytest.raises(RunLockedError) as raised:
        run_recipe(loaded, progress=False, report=lambda *_: None)
    message = str(raised.value)
    assert f"pid {live_pid}" in message and socket.gethostname() in message and lock["since"] in message
    assert raised.value.exit_code == 4
    assert read_lock(loaded.run_dir) == lock  # the holder's lock is untouched
    assert not list(loaded.run_dir.glob("*/*.png")) and not (loaded.run_dir / "results.jsonl").exists()


def test_a_refused_run_leaves_the_live_runs_temp_files_alone(tmp_path, live_pid):
    _, loaded = tiny_run(tmp_path)
    write_lock(loaded.run_dir, live_pid)
    (loaded.run_dir / "default").mkdir()
    writing = [loaded.run_dir / "default" / ".a_red_cube_s0.png.x1.tmp", loaded.run_dir / ".results.jsonl.x2.tmp",
               loaded.run_dir / "results.rank0.done.json"]
    for path in writing:
        path.write_bytes(b"being written")
    with pytest.raises(RunLockedError):
        run_recipe(loaded, progress=False, report=lambda *_: None)
    assert [path.read_bytes() for path in writing] == [b"being written"] * 3


def test_a_lock_on_another_host_is_never_taken_over(tmp_path):
    _, loaded = tiny_run(tmp_path)
    write_lock(loaded.run_dir, dead_pid(), host="some-other-node")
    with pytest.raises(RunLockedError, match="on some-other-node"):
        run_recipe(loaded, progress=False, report=lambda *_: None)


def test_an_unreadable_lock_file_is_refused_not_ignored(tmp_path):
    _, loaded = tiny_run(tmp_path)
    (loaded.run_dir / LOCK).write_text("{not json")
    with pytest.raises(RunLockedError, match="cannot be read"):
        run_recipe(loaded, progress=False, report=lambda *_: None)


def test_the_lock_is_held_during_the_run_and_removed_after_it(tmp_path):
    _, loaded = tiny_run(tmp_path)
    seen = []
    summary = run_recipe(loaded, progress=False, report=lambda *_: seen.append(read_lock(loaded.run_dir)))
    assert summary.written == 1
    assert seen and seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert time.strftime("%Y-%m-%d") in seen[0]["since"]
    assert not (loaded.run_dir / LOCK).exists()


def test_a_lock_left_by_a_killed_run_is_taken_over_and_its_temp_files_removed(tmp_path):
    _, loaded = tiny_run(tmp_path)
    write_lock(loaded.run_dir, dead_pid())
    (loaded.run_dir / "default").mkdir()
    killed_tmp = loaded.run_dir / "default" / ".a_red_cube_s0.png.x1.tmp"
    killed_tmp.write_bytes(b"partial")
    seen = []
    summary = run_recipe(loaded, progress=False, report=lambda *_: seen.append(read_lock(loaded.run_dir)))
    assert (summary.written, summary.failed) == (1, 0)
    assert seen[0]["pid"] == os.getpid()  # the killed run's lock was replaced by this run's
    assert not killed_tmp.exists() and not (loaded.run_dir / LOCK).exists()
    assert not list(loaded.run_dir.glob(f"{LOCK}*"))


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_the_lock_is_removed_when_a_run_ends_with_an_error_or_ctrl_c(tmp_path, monkeypatch, error):
    _, loaded = tiny_run(tmp_path)
    seen = []

    def fail(*args, **kwargs):
        seen.append((loaded.run_dir / LOCK).is_file())
        raise error

    monkeypatch.setattr(runner, "merge_results", fail)
    with pytest.raises(type(error)):
        run_recipe(loaded, progress=False, report=lambda *_: None)
    assert seen == [True]  # held until the end
    assert not (loaded.run_dir / LOCK).exists()


def test_the_cli_refuses_a_locked_folder_with_one_line_and_exit_code_4(tmp_path, capsys, live_pid):
    path, loaded = tiny_run(tmp_path)
    write_lock(loaded.run_dir, live_pid)
    assert main(["run", str(path), "--quiet"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnguide: error: ") and f"pid {live_pid}" in err[0]


ATTNGUIDE = os.path.join(os.path.dirname(sys.executable), "attnguide")


@pytest.mark.slow
def test_two_runs_started_together_into_one_folder_one_is_refused_the_other_completes(tmp_path):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "out", seeds={"count": 6}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([ATTNGUIDE, "run", str(path), "--quiet"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append((proc.returncode, out, err))
    assert sorted(code for code, _, _ in results) == [0, 4], [err[-2000:] for _, _, err in results]
    (_, _, refused_err), = [r for r in results if r[0] == 4]
    lines = refused_err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnguide: error: ")
    assert "in use by another attnguide run (pid " in lines[0]
    (_, done_out, _), = [r for r in results if r[0] == 0]
    assert "6 written, 0 skipped, 0 failed" in done_out

    loaded = load_recipe(str(path), registry=registry())
    for job in plan_jobs(loaded):
        assert is_finished(job, loaded.run_dir)
        with Image.open(job.metadata_path(loaded.run_dir).with_suffix(".png")) as image:
            image.verify()
    rows = [json.loads(line) for line in (loaded.run_dir / "results.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["status"]) for r in rows] == [(s, "ok") for s in range(6)]
    assert not list(loaded.run_dir.rglob("*.tmp")) and not (loaded.run_dir / LOCK).exists()
