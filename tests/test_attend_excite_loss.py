"""Attend-and-Excite: L = max over subjects of max(0, 1 - max of the smoothed softmaxed map)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from loss_helpers import binding, make_context, np_ae_process, np_smooth, random_maps, word

from attnguide.errors import ConfigError
from attnguide.plugins.attend_excite import AttendExciteLoss, refinement_thresholds


def cat_and_dog_context(**kwargs):
    # "cat and dog": cat = 1, dog = 3, end token 4.
    return make_context([binding(word("cat", 1)), binding(word("dog", 3))], 3, **kwargs)


def np_ae_loss(maps: np.ndarray, stop: int, subjects: list[tuple[int, ...]], smooth=True) -> float:
    processed = np_ae_process(maps, stop)
    losses = []
    for pieces in subjects:
        peak = max(
            (np_smooth(processed[p - 1]) if smooth else processed[p - 1]).max() for p in pieces
        )
        losses.append(max(0.0, 1.0 - peak))
    return max(losses)


def test_attend_excite_loss_is_the_weakest_subjects_shortfall_by_hand():
    maps = random_maps(5, size=4, seed=1) * 0.05  # x100 then gives softmax logits of order 1
    expected = np_ae_loss(maps.numpy(), stop=4, subjects=[(1,), (3,)])
    term = AttendExciteLoss().compute(cat_and_dog_context(), maps)
    assert term.value.item() == pytest.approx(expected, rel=1e-10)
    assert 0.0 < expected < 1.0


def test_attend_excite_without_smoothing_takes_the_raw_softmax_peak():
    maps = random_maps(5, size=4, seed=2) * 0.05
    expected = np_ae_loss(maps.numpy(), stop=4, subjects=[(1,), (3,)], smooth=False)
    term = AttendExciteLoss({"smooth": False}).compute(cat_and_dog_context(), maps)
    assert term.value.item() == pytest.approx(expected, rel=1e-10)


def test_attend_excite_token_slice_sd1_includes_end_and_padding_prompt_does_not():
    maps = random_maps(8, size=4, seed=3) * 0.05  # 3 prompt tokens, end at 4, padding 5..7
    sd1 = AttendExciteLoss().compute(cat_and_dog_context(), maps).value.item()
    prompt = AttendExciteLoss({"token_slice": "prompt"}).compute(cat_and_dog_context(), maps)
    assert sd1 == pytest.approx(np_ae_loss(maps.numpy(), 7, [(1,), (3,)]), rel=1e-10)
    assert prompt.value.item() == pytest.approx(np_ae_loss(maps.numpy(), 4, [(1,), (3,)]), rel=1e-10)
    assert sd1 != pytest.approx(prompt.value.item())


def test_attend_excite_multi_piece_subject_is_attended_if_any_piece_is():
    # "a ele|phant": elephant = (2, 3).
    maps = random_maps(5, size=4, seed=4) * 0.05
    ctx = make_context([binding(word("elephant", 2, 3))], 3)
    expected = np_ae_loss(maps.numpy(), 4, [(2, 3)])
    assert AttendExciteLoss().compute(ctx, maps).value.item() == pytest.approx(expected, rel=1e-10)


def test_attend_excite_loss_is_zero_when_every_subject_is_fully_attended():
    maps = torch.zeros(5, 4, 4, dtype=torch.float64)
    maps[1] = 1.0
    ctx = make_context([binding(word("cat", 1))], 3)
    term = AttendExciteLoss().compute(ctx, maps)
    assert term.value.item() == pytest.approx(0.0, abs=1e-12)
    assert term.value.item() >= 0.0


def test_attend_excite_returns_none_without_entities():
    assert AttendExciteLoss().compute(make_context([], 3), random_maps(5, size=2)) is None


def test_attend_excite_step_size_schedule_pins_the_reference():
    loss = AttendExciteLoss(window=(0.0, 1.0))
    maps = random_maps(5, size=4) * 0.05
    assert loss.compute(cat_and_dog_context(step=0), maps).step_size == 20.0
    last = loss.compute(cat_and_dog_context(step=49), maps).step_size
    assert last == pytest.approx(20 * math.sqrt(0.5), abs=1e-12)
    mid = loss.compute(cat_and_dog_context(step=24), maps).step_size
    assert mid == pytest.approx(20 * math.sqrt(np.linspace(1.0, 0.5, 50)[24]), abs=1e-12)


def test_attend_excite_refines_at_steps_0_10_20_with_cap_20():
    loss = AttendExciteLoss()
    maps = random_maps(5, size=4) * 0.05
    expected = {0: 1 - 0.05, 10: 1 - 0.5, 20: 1 - 0.8}
    for step in range(25):
        term = loss.attnguide_loss(cat_and_dog_context(step=step), maps)
        if step in expected:
            assert term.refine_below == pytest.approx(expected[step], abs=1e-12)
            assert term.max_refinement == 20
        else:
            assert term.refine_below is None
    assert loss.params.thresholds == {0: 0.05, 10: 0.5, 20: 0.8}


def test_attend_excite_refinement_steps_scale_with_the_number_of_steps():
    thresholds = {0: 0.05, 10: 0.5, 20: 0.8}
    assert refinement_thresholds(thresholds, 50) == thresholds
    assert refinement_thresholds(thresholds, 25) == {0: 0.05, 5: 0.5, 10: 0.8}
    assert refinement_thresholds(thresholds, 100) == {0: 0.05, 20: 0.5, 40: 0.8}
    assert refinement_thresholds(thresholds, 30) == {0: 0.05, 6: 0.5, 12: 0.8}
    # Keys that collide keep the strictest threshold.
    assert refinement_thresholds({10: 0.5, 11: 0.8}, 5) == {1: 0.8}
    term = AttendExciteLoss().compute(cat_and_dog_context(step=5, num_steps=25), random_maps(5))
    assert term.refine_below == pytest.approx(0.5)


def test_attend_excite_guides_the_first_25_of_50_steps():
    loss = AttendExciteLoss()
    maps = random_maps(5, size=4)
    guided = [i for i in range(50) if loss.attnguide_loss(cat_and_dog_context(step=i), maps)]
    assert loss.default_window == (0.0, 0.5)
    assert guided == list(range(25))


def test_attend_excite_gradient_reaches_the_subject_maps():
    maps = (random_maps(5, size=4, seed=5, dtype=torch.float32) * 0.05).requires_grad_(True)
    AttendExciteLoss().compute(cat_and_dog_context(), maps).value.backward()
    assert torch.isfinite(maps.grad).all()
    assert maps.grad[1:4].abs().sum() > 0


def test_attend_excite_parameter_errors_name_the_plugin_and_the_parameter():
    with pytest.raises(ConfigError, match=r"'attend_excite'.*'thresholds'"):
        AttendExciteLoss({"thresholds": {0: 1.5}})
    with pytest.raises(ConfigError, match=r"'attend_excite'.*'token_slice'"):
        AttendExciteLoss({"token_slice": "sd3"})
    with pytest.raises(ConfigError, match=r"'attend_excite'.*'max_refinement_steps'"):
        AttendExciteLoss({"max_refinement_steps": -1})
