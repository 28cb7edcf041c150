"""The documented example plugin: hand-computed values and an end-to-end run via entry point."""

from __future__ import annotations

import pytest
import torch

from attnguide.engine.engine import Engine
from attnguide.plugin.manager import make_plugin_manager
from engine_helpers import analysis_for
from test_plugin_manager import installed_example  # noqa: F401 - fixture


def test_focus_loss_is_one_minus_top_k_mass_on_hand_computed_maps(installed_example, tiny_pipe):
    from attnguide_focus import FocusLoss

    maps = torch.zeros(77, 2, 2)
    analysis = analysis_for(tiny_pipe.tokenizer, "a cat", [("cat", [])])
    maps[2] = torch.tensor([[0.4, 0.1], [0.3, 0.2]])
    from attnguide.types import GuidanceContext

    ctx = GuidanceContext(0, 10, 999, 0, analysis, {})
    term = FocusLoss({"top_k": 2}).compute(ctx, maps)
    assert term.value.item() == pytest.approx(1 - (0.4 + 0.3))


def test_focus_parameters_are_validated_naming_plugin_and_parameter(installed_example):
    from attnguide.errors import ConfigError
    from attnguide_focus import FocusLoss

    with pytest.raises(ConfigError, match="'focus'.*'top_kk'"):
        FocusLoss({"top_kk": 3})
    with pytest.raises(ConfigError, match="'focus'.*'top_k'"):
        FocusLoss({"top_k": 0})


def test_focus_runs_end_to_end_through_the_engine_by_registered_name(installed_example, tiny_pipe):
    engine = Engine(tiny_pipe, plugin_manager=make_plugin_manager())
    analysis = analysis_for(tiny_pipe.tokenizer, "a cat and a frog", [("cat", []), ("frog", [])])
    result = engine.generate("a cat and a frog", [0], steps=4, losses=["focus"], analyses=[analysis],
                             output_type="latent", progress=False)
    plugins = {r["plugin"] for r in result.records[0].losses}
    assert plugins == {"focus"}
    assert all(r["step"] < 2.5 for r in result.records[0].losses)
