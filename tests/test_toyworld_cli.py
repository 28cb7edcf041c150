"""``attnguide toyworld sample`` writes a grid, captions and scenes the judge agrees with."""

from __future__ import annotations

import json

from PIL import Image

from attnguide.cli.main import main


def test_toyworld_sample_writes_grid_captions_and_scenes(tmp_path, capsys):
    assert main(["toyworld", "sample", "--n", "5", "--seed", "3", "--out", str(tmp_path)]) == 0
    assert Image.open(tmp_path / "grid.png").size == (3 * 66 + 2, 2 * 66 + 2)
    captions = (tmp_path / "captions.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in captions] == ["3", "4", "5", "6", "7"]
    records = [json.loads(line) for line in (tmp_path / "scenes.jsonl").read_text().splitlines()]
    assert all(sorted(map(tuple, r["judge"])) == sorted((o[0], o[1]) for o in r["objects"]) for r in records)


def test_toyworld_sample_rejects_a_non_positive_count(tmp_path, capsys):
    assert main(["toyworld", "sample", "--n", "0", "--out", str(tmp_path)]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err
