"""What commands print while they work: a bar of images and, under it, a bar of the denoising
steps of the image being made (so a slow machine is never stuck at 0/N); nothing with
``--quiet``; the loading bars and info logs of diffusers and transformers only with ``--verbose``."""

from __future__ import annotations

import functools
import logging
import re

import pytest
import tqdm.auto
from diffusers.utils import logging as diffusers_logging
from huggingface_hub import utils as hub_utils
from recipe_helpers import tiny_recipe, write_recipe
from transformers.utils import logging as transformers_logging

from attnguide.cli.main import main

STEPS = 3  # DDIM: exactly this many timesteps, so the step bar ends at 3/3
LIBRARIES = (diffusers_logging, transformers_logging)


@pytest.fixture(autouse=True)
def library_output_restored():
    """The CLI switches the libraries' logging globally; put the test session's back."""
    saved = [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in LIBRARIES]
    hub_bars = not hub_utils.are_progress_bars_disabled()
    yield
    for lib, (level, bars) in zip(LIBRARIES, saved):
        lib.set_verbosity(level)
        lib.enable_progress_bar() if bars else lib.disable_progress_bar()
    hub_utils.enable_progress_bars() if hub_bars else hub_utils.disable_progress_bars()


@pytest.fixture()
def every_step_drawn(monkeypatch):
    """The engine's step bar drawn at every update: tqdm skips redraws within 0.1 s, and a tiny
    image's steps take less, so which counts show would depend on the machine's speed."""
    from attnguide.engine import engine

    monkeypatch.setattr(engine, "tqdm", functools.partial(tqdm.auto.tqdm, mininterval=0, miniters=1))


def step_counts(err: str, desc: str = "denoising") -> list[tuple[int, int]]:
    """Every ``k/N`` a bar named ``desc`` showed, in order."""
    return [(int(k), int(n)) for k, n in re.findall(rf"(?<!\w){desc}:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)", err)]


def tiny_run(tmp_path, seeds=(0, 1)):
    sampling = {"steps": STEPS, "guidance_scale": 7.5, "height": 64, "width": 64}
    model = {"id": "tiny", "scheduler": "ddim"}
    recipe = tiny_recipe(tmp_path / "out", seeds=list(seeds), model=model, sampling=sampling)
    return write_recipe(tmp_path, recipe)


def library_state():
    return [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in LIBRARIES]


def test_run_shows_the_denoising_steps_of_each_image_under_the_images_bar(tmp_path, capfd, every_step_drawn):
    assert main(["run", str(tiny_run(tmp_path))]) == 0
    err = capfd.readouterr().err
    steps = step_counts(err)
    assert steps == [(k, STEPS) for k in range(STEPS + 1)] * 2, err[-2000:]  # one step bar per image
    assert max(k for k, _ in step_counts(err, "t")) == 2  # the images bar still counts images
    # the step bar sits one line under the images bar and is wiped when its image is done
    assert "\x1b[A" in err


def test_run_quiet_prints_nothing_on_stderr(tmp_path, capfd):
    assert main(["run", str(tiny_run(tmp_path)), "--quiet"]) == 0
    out, err = capfd.readouterr()
    assert err == "" and "2 written" in out


def test_run_hides_library_loading_bars_and_info_logs_unless_verbose(tmp_path, capfd):
    path = tiny_run(tmp_path, seeds=[0])
    assert main(["run", str(path), "--quiet"]) == 0
    assert library_state() == [(logging.ERROR, False)] * 2
    assert hub_utils.are_progress_bars_disabled()
    assert main(["run", str(path), "sampling.steps=2", "--verbose"]) == 0
    assert library_state() == [(logging.INFO, True)] * 2
    assert not hub_utils.are_progress_bars_disabled()


def test_quiet_and_verbose_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tiny_run(tmp_path)), "--quiet", "--verbose"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_generate_shows_steps_and_is_silent_with_quiet(tmp_path, capfd, every_step_drawn):
    base = ["generate", "--model", "tiny", "--prompt", "a red cube", "--steps", str(STEPS), "--scheduler", "ddim",
            "--height", "64", "--width", "64", "--out", str(tmp_path)]
    assert main(base) == 0
    assert (STEPS, STEPS) in step_counts(capfd.readouterr().err)
    assert main([*base, "--quiet"]) == 0
    assert capfd.readouterr().err == ""
    assert library_state() == [(logging.ERROR, False)] * 2


def toyworld_evaluate(tmp_path, *flags):
    return main(["toyworld", "evaluate", "--samples", "1", "--single-samples", "0", "--methods", "none",
                 "--steps", "2", "--scheduler", "ddim", "--batch-size", "1", "--json", *flags])


def test_toyworld_evaluate_shows_steps_and_hides_the_loading_bars(tmp_path, capfd, every_step_drawn):
    assert toyworld_evaluate(tmp_path) == 0
    err = capfd.readouterr().err
    assert (2, 2) in step_counts(err) and "[none] two-object 1/1" in err
    assert "Loading" not in err, err[-2000:]  # diffusers' "Loading pipeline components...", transformers'


def test_toyworld_evaluate_verbose_shows_the_loading_bars(tmp_path, capfd, every_step_drawn):
    assert toyworld_evaluate(tmp_path, "--verbose") == 0
    err = capfd.readouterr().err
    assert "Loading pipeline components" in err and "Loading weights" in err, err[-2000:]
    assert (2, 2) in step_counts(err)


def test_toyworld_evaluate_quiet_prints_nothing_on_stderr(tmp_path, capfd):
    assert toyworld_evaluate(tmp_path, "--quiet") == 0
    out, err = capfd.readouterr()
    assert err == "" and '"none"' in out


def test_toyworld_attention_hides_the_loading_bars_unless_verbose(capfd):
    argv = ["toyworld", "attention", "--scenes", "1", "--json"]
    assert main(argv) == 0
    assert "Loading" not in capfd.readouterr().err
    assert main([*argv, "--verbose"]) == 0
    assert "Loading pipeline components" in capfd.readouterr().err
    assert main([*argv, "--quiet"]) == 0  # nothing of its own to hide: accepted, as everywhere
    assert library_state() == [(logging.ERROR, False)] * 2
