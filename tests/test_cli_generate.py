"""``attnguide generate``: files written, metadata content, one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from attnguide.cli.main import main


def test_generate_writes_image_metadata_and_latents(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--model", "tiny", "--prompt", "a pink sunflower", "--seed", "3", "--steps", "2",
                 "--scheduler", "ddim", "--out", str(out), "--save-latents", "--quiet"])
    assert code == 0
    name = "a_pink_sunflower_s3"
    assert (out / f"{name}.png").stat().st_size > 0
    meta = json.loads((out / f"{name}.json").read_text())
    assert meta["prompt"] == "a pink sunflower" and meta["seed"] == 3 and meta["model"] == "tiny"
    assert meta["sampling"]["steps"] == 2 and meta["method"] == "none"
    assert {"attnguide", "diffusers", "torch"} <= set(meta["versions"])
    assert meta["wall_time_s"] > 0
    latents = load_file(out / f"{name}.latents.safetensors")["latents"]
    assert latents.shape == (1, 4, 32, 32)
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "--steps"),
    (["--height", "100"], "--height 100"),
    (["--guidance-scale", "-1"], "--guidance-scale"),
    (["--model", "/no/such/model"], "does not exist"),
    (["--method", "syngem"], "unknown loss plugin 'syngem'"),
    (["--method", "syngen", "--param", "stepsize=3"], "'stepsize'"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, args, message):
    code = main(["generate", "--prompt", "a cat", "--out", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_empty_prompt_and_unwritable_output_are_rejected(tmp_path, capsys):
    assert main(["generate", "--prompt", "  ", "--out", str(tmp_path)]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["generate", "--prompt", "a cat", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "--prompt is empty" in err and "cannot be written" in err


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "attnguide 0.1.0" in capsys.readouterr().out
