"""Toy-world model names: ``toyworld`` (the default) and ``toyworld-v1`` load the shipped v1
weights (docs/toyworld.md, "Versions")."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from attnguide.errors import ModelLoadError
from attnguide.metrics.toy_judge import is_toyworld_run
from attnguide.models.identify import model_family
from attnguide.models.loading import load_pipeline
from attnguide.models.toy_names import TOY_MODELS, is_toy_model
from attnguide.toyworld.model import WEIGHTS_DIR, toy_weights_dir


def test_names_map_to_the_shipped_folder_and_an_unknown_name_is_refused():
    assert toy_weights_dir("toyworld") == toy_weights_dir("toyworld-v1") == WEIGHTS_DIR
    assert all(is_toy_model(n) and model_family(n) == "sd" for n in TOY_MODELS)
    assert not is_toy_model("tiny") and not is_toy_model("toyworld-v3")
    with pytest.raises(ModelLoadError, match="toyworld-v3.*toyworld, toyworld-v1"):
        toy_weights_dir("toyworld-v3")


def test_v1_loads_by_name_as_the_default_toyworld():
    default, v1 = load_pipeline("toyworld"), load_pipeline("toyworld-v1")
    assert v1.text_encoder.config.num_hidden_layers == 1
    assert all(torch.equal(a, b) for a, b in zip(default.unet.parameters(), v1.unet.parameters()))


def test_runs_of_either_name_are_scored_by_the_toy_judge_and_mixed_runs_are_not():
    def run(*models):
        return SimpleNamespace(images=[SimpleNamespace(meta={"model": m}) for m in models])

    assert is_toyworld_run(run("toyworld", "toyworld-v1"))
    assert not is_toyworld_run(run("toyworld", "tiny")) and not is_toyworld_run(run())
