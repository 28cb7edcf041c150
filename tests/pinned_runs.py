"""Runs whose final latents are pinned in ``tests/data/pinned/`` (see test_pinned_outputs.py).

Recorded before the architecture-v2 refactor (issue 15) with the public API only, so the same
runs can be replayed on any later layout. Regenerate only when an issue asks for a change of
results: ``python tests/pinned_runs.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

PINNED = Path(__file__).parent / "data" / "pinned"
TINY_PROMPTS = ["a pink sunflower and a yellow flamingo", "a red dog and a blue frog"]
TOY_PROMPT = "a red circle and a blue square"

# name -> (model, losses, callbacks); every method at its defaults, plus a two-loss run.
RUNS: dict[str, tuple[str, list[Any], list[Any]]] = {
    "tiny-none": ("tiny", [], []),
    "tiny-syngen": ("tiny", ["syngen"], []),
    "tiny-entropy_syngen": ("tiny", ["entropy_syngen"], []),
    "tiny-attend_excite": ("tiny", ["attend_excite"], []),
    "tiny-astar": ("tiny", ["astar"], []),
    # Recorded as [syngen, attend_excite], which v1 evaluated last-listed-first. Issue 15 makes
    # plugins run in the listed order; listed as v1 ran them, the run reproduces the pin bit for
    # bit (listed the other way, gradients accumulate in another order: 1e-3 apart).
    "tiny-syngen+attend_excite": ("tiny", ["attend_excite", {"name": "syngen", "weight": 0.5}], []),
    "tiny-syngen-heatmaps": ("tiny", [{"name": "syngen", "step_size": 5.0}], ["heatmaps"]),
    "toyworld-none": ("toyworld", [], []),
    "toyworld-syngen": ("toyworld", [{"name": "syngen", "step_size": 3.0}], []),
    "toyworld-entropy_syngen": ("toyworld", ["entropy_syngen"], []),
    "toyworld-attend_excite": ("toyworld", ["attend_excite"], []),
    "toyworld-astar": ("toyworld", ["astar"], []),
}


def final_latents(engines: dict[str, Any], name: str) -> torch.Tensor:
    """Final latents ``[B, 4, h, w]`` float32 of run ``name`` (threads pinned to 1)."""
    model, losses, callbacks = RUNS[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if model == "tiny":
            result = engines[model].generate(
                TINY_PROMPTS, [0, 1], steps=10, losses=losses, callbacks=callbacks,
                height=256, width=256, output_type="latent", progress=False,
            )
        else:
            result = engines[model].generate(
                TOY_PROMPT, [2], steps=20, losses=losses, callbacks=callbacks,
                output_type="latent", progress=False,
            )
    finally:
        torch.set_num_threads(threads)
    return result.latents


def make_engines(batch_guidance: bool = False) -> dict[str, Any]:
    """The pins were recorded one image at a time (v1 had no batched guidance); batched
    guidance is compared with them within float rounding (test_batched_guidance.py)."""
    from attnguide import Engine, load_pipeline

    return {
        "tiny": Engine(load_pipeline("tiny", scheduler="ddim"), parser="spacy", batch_guidance=batch_guidance),
        "toyworld": Engine(load_pipeline("toyworld"), parser="spacy", batch_guidance=batch_guidance),
    }


if __name__ == "__main__":
    from safetensors.torch import save_file

    PINNED.mkdir(parents=True, exist_ok=True)
    engines = make_engines()
    for run in RUNS:
        latents = final_latents(engines, run)
        save_file({"latents": latents.contiguous()}, str(PINNED / f"{run}.safetensors"))
        print(run, tuple(latents.shape), float(latents.abs().mean()))
