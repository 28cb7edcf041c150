"""The toy world renders reproducible, non-overlapping, captioned scenes, and the judge reads
them back: colours and shapes of freshly rendered objects, and binding outcomes of hand-made cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from attnguide.toyworld import (
    BACKGROUND,
    COLOURS,
    SHAPES,
    Scene,
    ToyObject,
    binding_outcome,
    caption,
    detect,
    object_mask,
    parse_caption,
    recovered,
    render,
    sample,
    sample_scene,
)
from attnguide.toyworld.judge import COLOUR_THRESHOLD


def test_same_seed_gives_the_same_image_caption_and_scene():
    a, b = sample(7, 3), sample(7, 3)
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert a[1:] == b[1:]
    assert sample(8, 3)[2] != a[2]


def test_render_is_a_64x64_rgb_image():
    image, _, _ = sample(0, 2)
    assert image.mode == "RGB" and image.size == (64, 64)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_scenes_have_n_objects_with_distinct_colours_and_shapes(n):
    for seed in range(50):
        scene = sample_scene(np.random.default_rng(seed), n)
        assert len(scene.objects) == n
        assert len({o.colour for o in scene.objects}) == n and len({o.shape for o in scene.objects}) == n


def test_objects_never_overlap_or_touch_the_border():
    for seed in range(200):
        scene = sample_scene(np.random.default_rng(seed), 3)
        masks = [object_mask(o) for o in scene.objects]
        for m1, m2 in itertools.combinations(masks, 2):
            assert not (m1 & m2).any()
        for m in masks:
            assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())


def test_captions_parse_back_to_the_scene_objects_in_order():
    for seed in range(300):
        _, text, scene = sample(seed, 1 + seed % 3)
        assert parse_caption(text) == list(scene.pairs), text


def test_caption_uses_the_fields_phrasing():
    one = Scene((ToyObject("red", "circle", "small", (20, 20)),))
    two = Scene((ToyObject("orange", "star", "medium", (20, 20)), ToyObject("blue", "square", "large", (45, 45))))
    assert caption(one, np.random.default_rng(0)) == "a small red circle"
    texts = {caption(two, np.random.default_rng(s)) for s in range(20)}
    assert "an orange star and a large blue square" in texts
    assert "an orange star next to a large blue square" in texts


def test_parse_caption_ignores_articles_sizes_and_joiners():
    assert parse_caption("A yellow star next to a small green heart.") == [("yellow", "star"), ("green", "heart")]
    assert parse_caption("a red circle, a blue square and a large white cross") == [
        ("red", "circle"), ("blue", "square"), ("white", "cross")]
    assert parse_caption("a photo of a cat") == []


def test_no_anti_aliased_edge_can_pass_for_another_palette_colour():
    # every blend of a colour with the background (an edge pixel) is far from all other colours
    bg = np.array(BACKGROUND, dtype=float)
    for name, rgb in COLOURS.items():
        blends = bg + np.linspace(0, 1, 101)[:, None] * (np.array(rgb, dtype=float) - bg)
        for other, orgb in COLOURS.items():
            if other != name:
                assert np.linalg.norm(blends - np.array(orgb), axis=1).min() > COLOUR_THRESHOLD, (name, other)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_judge_reads_every_shape_at_every_size_in_every_colour(shape, size):
    for colour in COLOURS:
        image = render(Scene((ToyObject(colour, shape, size, (30.4, 33.6)),)))
        assert [d.pair for d in detect(image)] == [(colour, shape)]


def test_judge_recovers_at_least_98_percent_of_objects_on_fresh_scenes():
    found = total = 0
    for seed in range(10_000, 10_300):
        image, _, scene = sample(seed, 1 + seed % 3)
        found += recovered(scene, detect(image))
        total += len(scene.objects)
    assert total == 600
    assert found / total >= 0.98, f"recovered {found}/{total}"


def test_judge_sees_nothing_in_a_blank_image():
    assert detect(render(Scene(()))) == []


def test_detections_carry_bbox_and_area_of_the_object():
    obj = ToyObject("blue", "square", "large", (32.0, 32.0))
    (d,) = detect(render(Scene((obj,))))
    x0, y0, x1, y1 = d.bbox
    assert abs((x0 + x1) / 2 - 32) <= 1 and abs((y0 + y1) / 2 - 32) <= 1
    assert d.area == pytest.approx((2 * 0.72 * 13) ** 2, rel=0.1)


RED_CIRCLE_BLUE_SQUARE = [("red", "circle"), ("blue", "square")]


@pytest.mark.parametrize("detected, outcome", [
    ([("red", "circle"), ("blue", "square")], (True, False, False, False)),
    ([("blue", "square"), ("red", "circle"), ("green", "star")], (True, False, False, False)),
    ([("red", "circle")], (False, True, False, False)),
    ([("blue", "circle"), ("red", "square")], (False, False, True, True)),
    ([("red", "circle"), ("red", "square")], (False, False, False, True)),
    ([("red", "circle"), ("green", "square")], (False, False, False, False)),
    ([("blue", "circle")], (False, True, False, True)),  # the circle took the square's colour
    ([], (False, True, False, False)),
])
def test_binding_outcome_of_hand_made_cases(detected, outcome):
    got = binding_outcome(RED_CIRCLE_BLUE_SQUARE, detected)
    assert (got["correct"], got["neglect"], got["swap"], got["leak"]) == outcome


def test_binding_outcome_accepts_scene_objects_and_detections():
    image, text, scene = sample(3, 2)
    assert binding_outcome(scene.objects, detect(image)) == {"correct": True, "neglect": False, "swap": False,
                                                             "leak": False}
    assert binding_outcome(parse_caption(text), detect(image))["correct"]
