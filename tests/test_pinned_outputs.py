"""Final latents of every method on ``tiny`` and ``toyworld`` are bit-identical to the ones
recorded before the architecture-v2 refactor (tests/pinned_runs.py)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from pinned_runs import PINNED, RUNS, final_latents, make_engines


@pytest.fixture(scope="module")
def engines():
    return make_engines()


@pytest.mark.parametrize("run", sorted(RUNS))
def test_final_latents_are_bit_identical_to_the_pinned_ones(engines, run):
    expected = load_file(str(PINNED / f"{run}.safetensors"))["latents"]
    latents = final_latents(engines, run)
    assert latents.shape == expected.shape
    assert torch.equal(latents, expected), f"{run}: max diff {(latents - expected).abs().max().item():.3g}"


def test_guided_runs_differ_from_unguided():
    # The pins would prove nothing if guidance left the latents untouched.
    for model in ("tiny", "toyworld"):
        plain = load_file(str(PINNED / f"{model}-none.safetensors"))["latents"]
        for run in RUNS:
            if run.startswith(model) and run != f"{model}-none":
                guided = load_file(str(PINNED / f"{run}.safetensors"))["latents"]
                assert not torch.equal(guided, plain), run
