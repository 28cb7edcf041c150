"""``attnguide attention``: the sheet re-rendered from saved maps is the callback's sheet."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from attnguide.cli.attention_cmd import load_saved_maps, render, select
from attnguide.cli.main import main
from attnguide.plugins.heatmaps import CELL, LABEL_H
from metric_helpers import one_thread

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = "a red car and a blue dog"


@pytest.fixture(scope="module")
def saved(tiny_pipe, tmp_path_factory, one_thread):
    from attnguide.engine.engine import Engine
    from attnguide.results.images import save_image

    engine = Engine(tiny_pipe)
    result = engine.generate(PROMPT, [0], steps=4, height=128, width=128, callbacks=["heatmaps"],
                             losses=["syngen"], progress=False)
    out = tmp_path_factory.mktemp("attention")
    paths = save_image(result, 0, out, "img")
    return paths


def test_the_image_metadata_lists_the_maps_and_the_sheet(saved):
    meta = json.loads(saved["metadata"].read_text())
    assert meta["files"]["maps.safetensors"] == "img.maps.safetensors"
    assert meta["files"]["heatmaps.png"] == "img.heatmaps.png"
    maps = load_saved_maps(saved["metadata"])
    assert maps.words == ["red", "car", "blue", "dog"]
    assert list(maps.by_step) == sorted(maps.by_step) and len(maps.by_step) >= 2
    assert all(m.shape[0] == 4 and m.ndim == 3 for m in maps.by_step.values())


def test_rerendering_gives_the_callbacks_sheet_pixel_for_pixel(saved, capsys):
    assert main(["attention", str(saved["metadata"])]) == 0
    target = saved["metadata"].with_name("img.attention.png")
    assert str(target) in capsys.readouterr().out
    again = np.asarray(Image.open(target))
    original = np.asarray(Image.open(saved["heatmaps.png"]))
    assert again.shape == original.shape and np.array_equal(again, original)


def test_steps_and_words_can_be_chosen_and_opacity_changed(saved, tmp_path):
    steps = list(load_saved_maps(saved["metadata"]).by_step)[:2]
    out = tmp_path / "sheet.png"
    args = ["attention", str(saved["image"]), "--out", str(out), "--alpha", "0.2",
            "--steps", ",".join(map(str, steps)), "--words", "car,dog"]
    assert main(args) == 0
    sheet = Image.open(out)
    assert sheet.size == (CELL * (len(steps) + 1), LABEL_H + 2 * (CELL + LABEL_H))
    selected = select(load_saved_maps(saved["metadata"]), steps, ["car", "dog"])
    assert np.array_equal(np.asarray(render(selected, 0.2)), np.asarray(sheet))
    assert not np.array_equal(np.asarray(render(selected, 0.6)), np.asarray(sheet))


def test_unsaved_steps_and_images_without_maps_are_errors_that_say_what_to_do(saved, tmp_path, capsys):
    assert main(["attention", str(saved["metadata"]), "--steps", "99"]) == 2
    assert "saved steps" in capsys.readouterr().err
    bare = tmp_path / "plain.json"
    bare.write_text(json.dumps({"prompt": PROMPT, "seed": 0, "files": {"image": "plain.png"}}))
    assert main(["attention", str(bare)]) == 2
    assert "heatmaps callback" in capsys.readouterr().err
