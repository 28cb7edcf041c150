"""The toy world's judge as a metric family of ``attnguide evaluate`` (``--metrics toy``).

Each image is read back by ``attnguide.toyworld.judge.detect`` and compared with the
``(colour, shape)`` objects its prompt asks for (``parse_caption``), as
``attnguide toyworld evaluate`` does: ``binding_accuracy`` is 1 when every asked-for object is
there in its own colour, ``neglect_rate`` 1 when an asked-for shape is missing in every colour,
``swap_rate`` 1 when two objects appear with each other's colours, ``leak_rate`` 1 when an
asked-for shape is drawn in another asked-for object's colour instead of its own (swaps
included). Means over a cell's images
are rates; the aggregation gives them bootstrap intervals like every other metric.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..models.toy_names import is_toy_model
from ..results.reader import ImageEntry, RunContents

TOY_SCALARS: dict[str, str] = {
    "binding_accuracy": "share of images where the toy judge finds every asked-for object in its own colour",
    "neglect_rate": "share of images where an asked-for shape is missing in every colour (lower is better)",
    "swap_rate": "share of images where two asked-for objects swapped colours (lower is better)",
    "leak_rate": "share of images where a shape took another asked-for object's colour (lower is better)",
}
LOWER_IS_BETTER = frozenset({"neglect_rate", "swap_rate", "leak_rate"})


def image_model(entry: ImageEntry) -> str | None:
    """The model an image was generated with, from its metadata (``model``, else
    ``config.model.id``); None when the metadata does not say."""
    model = entry.meta.get("model")
    if isinstance(model, str):
        return model
    config_model = (entry.meta.get("config") or {}).get("model")
    found = config_model.get("id") if isinstance(config_model, dict) else config_model
    return found if isinstance(found, str) else None


def is_toyworld_run(contents: RunContents) -> bool:
    """Whether every image of the run whose metadata names its model was made by a toy-world model
    (``toyworld``, ``toyworld-v1``), and at least one does."""
    models = {m for m in (image_model(e) for e in contents.images) if m is not None}
    return bool(models) and all(is_toy_model(m) for m in models)


def toy_objects(prompt: str) -> list[tuple[str, str]]:
    """The ``(colour, shape)`` pairs ``prompt`` asks for; ``ConfigError`` naming the prompt when
    there are none (the judge would have nothing to look for)."""
    from ..toyworld.judge import parse_caption

    wanted = parse_caption(prompt)
    if not wanted:
        raise ConfigError(f"prompt {prompt!r} names no toy-world object ('<colour> <shape>', e.g. 'a red circle'); "
                          "the toy judge (--metrics toy) scores only toy-world prompts")
    return wanted


def judge_image(image: Any, prompt: str) -> dict[str, Any]:
    """The toy judge's verdict on one image (RGB PIL or ``[H, W, 3]`` uint8) for ``prompt``:
    the four scalars (0.0 or 1.0), ``toy_objects`` (asked for) and ``toy_detected`` (seen).

    Raises ``ConfigError`` naming the prompt when it asks for no toy-world object."""
    from ..toyworld.judge import binding_outcome, detect

    wanted = toy_objects(prompt)
    found = detect(image)
    outcome = binding_outcome(wanted, found)
    return {"binding_accuracy": float(outcome["correct"]), "neglect_rate": float(outcome["neglect"]),
            "swap_rate": float(outcome["swap"]), "leak_rate": float(outcome["leak"]),
            "toy_objects": [list(p) for p in wanted],
            "toy_detected": [list(d.pair) for d in found]}
