"""``attnguide toyworld attention``: the cross-attention localisation statistics."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attnguide.cli.main import main
from attnguide.toyworld.diagnose import map_statistics


def test_map_statistics_match_hand_computed_values():
    # 2x2 grid, one token: p = [.75, .25, 0, 0]; own object on cell (0, 0), the other on (0, 1)
    maps = torch.tensor([[[3.0, 1.0], [0.0, 0.0]]])
    own = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    other = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    entropy, preference, share = map_statistics(maps, own, other)
    assert entropy.item() == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert preference.item() == pytest.approx(3.0) and share.item() == pytest.approx(0.75)
    # uniform map: entropy ln 4, no preference, whatever the (partial) coverages
    entropy, preference, share = map_statistics(torch.ones(1, 2, 2), torch.tensor([[[0.5, 0.0], [0.0, 0.0]]]),
                                                torch.tensor([[[0.0, 0.0], [1.0, 0.25]]]))
    assert entropy.item() == pytest.approx(math.log(4)) and preference.item() == pytest.approx(1.0)
    assert share.item() == pytest.approx(0.25 * 0.5)  # a quarter of the map, on a half-covered cell


def test_attention_command_reports_each_timestep_on_the_shipped_model(capsys):
    assert main(["toyworld", "attention", "--scenes", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["uniform_entropy"] == pytest.approx(math.log(256)) and out["scenes"] == 1
    assert set(out["timesteps"]) == {"800", "500", "200"}
    for row in out["timesteps"].values():
        assert 0 < row["entropy"] <= out["uniform_entropy"] + 1e-6 and row["preference"] > 0
        assert 0 < row["own_share"] <= 1


def test_attention_command_rejects_no_scenes(capsys):
    assert main(["toyworld", "attention", "--scenes", "0"]) == 2
    assert "--scenes must be at least 1" in capsys.readouterr().err
