"""``attnguide run`` against what befalls real runs, scripted end to end with real processes and
real file systems (slow: ``make test-all``): a second run started into a folder in use, an output
folder that is or becomes read-only, a disk that fills up, and a sweep killed (SIGKILL) at random
moments and resumed. The fast versions, with faults injected in-process, are in test_run_lock.py
and test_io_faults.py.

Read-only and full file systems are made in a private mount namespace (``unshare -rm``: a
read-only bind mount, a 64 KiB tmpfs), which neither needs nor leaks into the machine's mounts;
where the platform has no such namespaces the read-only test falls back to ``chmod`` (not for root,
whom permissions do not stop) and the full-disk test is skipped, each saying why.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from recipe_helpers import registry, tiny_recipe, write_recipe

from attnguide.runs.jobs import is_finished, plan_jobs, read_metadata, read_result_rows
from attnguide.runs.recipe import check_output_dir, load_recipe
from attnguide.runs.runner import run_recipe

pytestmark = pytest.mark.slow

ATTNGUIDE = str(Path(sys.executable).with_name("attnguide"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
LOCK = ".attnguide.lock"
TIMEOUT_S = 300
_SPAWNED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def no_process_left():
    """A failed test kills the runs it started (each by its own handle)."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- recipes and processes -----------------------------------------------------------------
def sweep_recipe(tmp_path: Path, out: Path, seeds: int = 3, name: str = "recipe.yaml") -> Path:
    """2 cells x 2 prompts x ``seeds`` seeds of the tiny model, 64 px, two steps."""
    data = tiny_recipe(out, prompts=["a red cube", "a blue ball"], seeds={"count": seeds},
                       sampling={"steps": 2, "guidance_scale": 7.5, "height": 64, "width": 64},
                       sweep={"sampling.guidance_scale": [5, 7.5]})
    data.pop("attention")  # the tiny model's 16x16 layers need 128 px; no guidance runs here
    return write_recipe(tmp_path, data, name)


def loaded(path: Path):
    return load_recipe(str(path), registry=registry())


def spawn(argv: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _SPAWNED.append(proc)
    return proc


def start(path: Path) -> subprocess.Popen[str]:
    return spawn([ATTNGUIDE, "run", str(path), "--quiet"])


# A CLI process that has already imported the heavy libraries and waits for ``go`` to exist before
# it runs ``main(argv)``: it starts while another run is still running, so the next run of a test
# needs not wait for a cold start (about as long as a tiny run itself).
PRELOADED = """
import pathlib, sys, time
import attnguide.cli.main, attnguide.engine.engine, attnguide.runs.runner  # torch, diffusers, lightning
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.01)
sys.exit(attnguide.cli.main.main(sys.argv[2:]))
"""


def start_when(go: Path, path: Path) -> subprocess.Popen[str]:
    return spawn([sys.executable, "-c", PRELOADED, str(go), "run", str(path), "--quiet"])


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=TIMEOUT_S)
    return proc.returncode, out, err


def wait_for(condition, what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def lock_pid(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / LOCK).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None  # none yet, or caught between its creation and its first write


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnguide: error: "), err[-3000:]
    return lines[0]


# -- what a run leaves ---------------------------------------------------------------------
def assert_finished_images_valid(path: Path) -> int:
    """Every image the run counts as finished is a whole PNG with its metadata; no temporary
    file is left. Returns how many are finished."""
    run = loaded(path)
    finished = [job for job in plan_jobs(run) if is_finished(job, run.run_dir)]
    for job in finished:
        meta = read_metadata(job.metadata_path(run.run_dir))
        assert meta is not None and meta["content_hash"] == job.content_hash
        with Image.open(job.metadata_path(run.run_dir).with_suffix(".png")) as image:
            image.load()  # decodes every byte: a truncated PNG raises
    assert not list(run.run_dir.rglob("*.tmp"))
    return len(finished)


def assert_complete(path: Path) -> dict[str, bytes]:
    """The run is done: every job finished and indexed exactly once, nothing else in the cell
    folders, no lock, temp file or per-process leftover. Returns each image's bytes by name."""
    run = loaded(path)
    jobs = plan_jobs(run)
    assert assert_finished_images_valid(path) == len(jobs)
    rows = read_result_rows(run.run_dir / "results.jsonl")
    assert sorted((r["cell"], r["prompt"], int(r["seed"])) for r in rows) == sorted(job.key for job in jobs)
    assert {r["status"] for r in rows} == {"ok"}
    pngs = [p for cell in run.cells for p in (run.run_dir / cell.name).glob("*.png")]
    images = {str(p.relative_to(run.run_dir)): p.read_bytes() for p in pngs}
    assert sorted(images) == sorted(f"{job.cell.name}/{job.name}.png" for job in jobs)
    leftovers = [p.name for p in run.run_dir.iterdir() if p.name == LOCK or p.name.startswith("results.rank")]
    assert leftovers == []
    assert json.loads((run.run_dir / "summary.json").read_text())["total"] == len(jobs)
    return images


def resume(path: Path, done_before: int) -> dict[str, bytes]:
    """Run the recipe again (in this process) on a good disk: it makes the rest, and the run is
    complete."""
    run = loaded(path)
    check_output_dir(run, create=True)
    summary = run_recipe(run, progress=False, report=lambda *_: None)
    total = len(plan_jobs(run))
    assert summary is not None and (summary.written, summary.skipped, summary.failed) == (total - done_before,
                                                                                          done_before, 0)
    return assert_complete(path)


# -- private mounts ------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def mount_namespaces() -> str | None:
    """Why private mounts cannot be made here, or None when ``unshare -rm`` can mount a tmpfs
    and make a read-only bind mount."""
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    probe = ("d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs \"$d\" && mount --bind \"$d\" \"$d\" "
             "&& mount -o remount,ro,bind \"$d\"")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", probe], check=False, capture_output=True, text=True)
    return None if done.returncode == 0 else f"unshare -rm cannot mount: {done.stderr.strip()[:200]}"


def in_namespace(script: str) -> list[str]:
    return ["unshare", "-rm", "sh", "-c", script]


# -- 1. two runs, one folder ---------------------------------------------------------------
def test_a_run_into_a_folder_in_use_exits_4_naming_the_holder_and_the_first_run_completes(tmp_path):
    path = sweep_recipe(tmp_path, tmp_path / "out", seeds=1)
    run_dir = loaded(path).run_dir
    first, second = start(path), start_when(tmp_path / "go", path)
    wait_for(lambda: lock_pid(run_dir) == first.pid or first.poll() is not None, "the first run's lock")
    assert first.poll() is None, first.communicate()[1][-3000:]
    os.kill(first.pid, signal.SIGSTOP)  # it holds the folder, mid-run, for as long as the second one needs
    try:
        (tmp_path / "go").touch()
        code, out, err = finish(second)
        held = (run_dir / LOCK).read_text()
    finally:
        os.kill(first.pid, signal.SIGCONT)
    line = one_error_line(err)
    assert code == 4 and out == ""
    assert f"{run_dir} is in use by another attnguide run (pid {first.pid} on {socket.gethostname()}" in line
    assert json.loads(held)["pid"] == first.pid  # the refused run left the holder's lock alone
    code, out, err = finish(first)
    assert code == 0 and "4 written, 0 skipped, 0 failed" in out, err[-3000:]
    assert_complete(path)


# -- 2. a read-only output folder ----------------------------------------------------------
def read_only_run(path: Path, out: Path, after_images: int) -> tuple[int, str, str]:
    """Run ``path`` with its output folder ``out`` made read-only once ``after_images`` images
    are written (0: before the run starts): a read-only bind mount in a private namespace, else
    ``chmod a-w`` of every folder."""
    out.mkdir(parents=True, exist_ok=True)
    run_dir = loaded(path).run_dir
    if mount_namespaces() is None:
        read_only = f"until mount -o remount,ro,bind {shlex.quote(str(out))} 2>/dev/null; do sleep 0.01; done"
        command = shlex.join([ATTNGUIDE, "run", str(path), "--quiet"])
        count = f"ls {shlex.quote(str(run_dir))}/*/*.png 2>/dev/null | wc -l"
        script = (f"mount --bind {shlex.quote(str(out))} {shlex.quote(str(out))} || exit 99\n"
                  + (f"{read_only}\nexec {command}\n" if not after_images else
                     f"{command} & pid=$!\n"
                     f"while [ $({count}) -lt {after_images} ] && kill -0 $pid 2>/dev/null; do sleep 0.02; done\n"
                     f"{read_only}\nwait $pid\n"))
        return finish(spawn(in_namespace(script)))
    if os.geteuid() == 0:
        pytest.skip(f"root ignores chmod, and no private read-only mount: {mount_namespaces()}")

    def folders() -> list[Path]:
        return [out, *(p for p in out.rglob("*") if p.is_dir())]

    if not after_images:
        out.chmod(0o555)
        return finish(start(path))
    proc = start(path)
    wait_for(lambda: len(list(run_dir.glob("*/*.png"))) >= after_images or proc.poll() is not None, "images")
    for folder in folders():
        folder.chmod(0o555)
    try:
        return finish(proc)
    finally:
        for folder in folders():
            folder.chmod(0o755)


def test_a_read_only_output_folder_is_one_error_and_nothing_is_written(tmp_path):
    out = tmp_path / "out"
    path = sweep_recipe(tmp_path, out, seeds=1)
    code, stdout, err = read_only_run(path, out, after_images=0)
    out.chmod(0o755)
    line = one_error_line(err)
    assert code == 2 and stdout == ""
    assert f"output_dir: output directory '{loaded(path).run_dir}' cannot be written" in line
    assert list(out.iterdir()) == []


def test_an_output_folder_gone_read_only_mid_run_stops_it_with_exit_3_and_a_rerun_completes(tmp_path):
    out = tmp_path / "out"
    path = sweep_recipe(tmp_path, out, seeds=2)
    code, _, err = read_only_run(path, out, after_images=2)
    line = one_error_line(err)
    run_dir = loaded(path).run_dir
    assert code == 3, err[-3000:]
    assert line.startswith(f"attnguide: error: {run_dir}/") and "the run stopped" in line
    assert ": Read-only file system;" in line or ": Permission denied;" in line
    done = assert_finished_images_valid(path)  # the second image's metadata may have come too late
    assert 1 <= done < len(plan_jobs(loaded(path)))
    resume(path, done)  # the lock the read-only folder kept is a dead run's: taken over


# -- 3. a full disk ------------------------------------------------------------------------
def test_a_disk_filling_up_mid_run_stops_it_with_exit_3_naming_the_file_and_a_rerun_completes(tmp_path):
    if mount_namespaces() is not None:
        pytest.skip(f"no private tmpfs to fill: {mount_namespaces()}")
    out, saved = tmp_path / "out", tmp_path / "saved"
    out.mkdir()
    saved.mkdir()
    path = sweep_recipe(tmp_path, out, seeds=3)
    command = shlex.join([ATTNGUIDE, "run", str(path), "--quiet"])
    # 64 KiB: the lock, the recipes and two or three 64 px images (a PNG and its JSON: 4 pages)
    script = (f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(out))} || exit 99\n{command}\ncode=$?\n"
              f"cp -a {shlex.quote(str(out))}/. {shlex.quote(str(saved))}/ && exit $code")
    code, _, err = finish(spawn(in_namespace(script)))
    line = one_error_line(err)
    run_dir = loaded(path).run_dir
    assert code == 3, err[-3000:]
    assert line.startswith(f"attnguide: error: {run_dir}/") and ": No space left on device; the run stopped" in line
    shutil.copytree(saved, out, dirs_exist_ok=True)  # what the full disk held, now on a good one
    done = assert_finished_images_valid(path)
    assert 1 <= done < len(plan_jobs(loaded(path)))
    resume(path, done)


# -- 4. killed at random moments -----------------------------------------------------------
KILLS = 5


def test_a_sweep_killed_at_random_moments_resumes_to_every_image_once_identical_to_a_fresh_run(tmp_path):
    path = sweep_recipe(tmp_path, tmp_path / "out", seeds=3)  # 12 jobs
    run_dir = loaded(path).run_dir
    rng = random.Random(19)
    runs = [start_when(tmp_path / f"go{k}", path) for k in range(KILLS)]  # they import side by side

    def pngs() -> int:  # a PNG lands before its metadata: a kill may fall between the two
        return len(list(run_dir.glob("*/*.png")))

    def working(proc: subprocess.Popen[str], target: int) -> bool:
        return (lock_pid(run_dir) == proc.pid and pngs() >= target) or proc.poll() is not None

    killed, done = 0, []
    for k, proc in enumerate(runs):
        (tmp_path / f"go{k}").touch()
        # a random moment of the run's work: making the model, writing an image or its metadata,
        # the journal, the index: after 0 to 2 more PNGs, and up to half a second more
        wait_for(functools.partial(working, proc, pngs() + rng.randint(0, 2)), "the run's images")
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            proc.kill()
            killed += 1
        code, _, err = finish(proc)
        assert code in (0, -signal.SIGKILL), err[-3000:]
        done.append(assert_finished_images_valid(path))
    print(f"killed {killed} of {KILLS} runs; images finished after each: {done}")
    assert killed >= 1
    done = sum(is_finished(job, run_dir) for job in plan_jobs(loaded(path)))
    resumed = resume(path, done)

    fresh_path = sweep_recipe(tmp_path, tmp_path / "fresh", seeds=3, name="fresh.yaml")
    fresh = loaded(fresh_path)
    check_output_dir(fresh, create=True)
    summary = run_recipe(fresh, progress=False, report=lambda *_: None)
    assert summary is not None and summary.written == len(plan_jobs(fresh))
    assert resumed == assert_complete(fresh_path)  # byte for byte
