"""Base class for loss plugins: parameters, step window, weight.

A loss plugin is one class with a ``name``, a pydantic ``Params`` model and a ``compute``
method; the base class turns it into an implementation of the ``attnguide_loss`` hook that
returns ``None`` outside the plugin's step window. ``active_at`` is the one place a step
window is decided: the hook and the engine (which skips the guidance forward when no loss is
active) both ask it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

import pydantic
import torch

from ..errors import ConfigError
from ..types import GuidanceContext, LossTerm
from .hookspecs import hookimpl
from .params import validate_plugin_params


class LossParams(pydantic.BaseModel):
    """Parameters every loss shares; plugins subclass this for their own."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=LossParams)


def window_contains(window: tuple[float, float], step: int, num_steps: int) -> bool:
    """Whether step ``step`` of ``num_steps`` lies in ``window = (start, end)`` (fractions):
    ``start * T <= step < end * T``."""
    start, end = window
    return start * num_steps <= step < end * num_steps


class LossPlugin(Generic[P]):
    """A guidance loss. Subclass it as ``LossPlugin[MyParams]``, set ``name``, ``Params`` and
    ``default_window``, and implement ``compute``; ``self.params`` is then typed ``MyParams``.

    Attributes:
        name: registered name, used by recipes and ``--method``.
        Params: pydantic model of the plugin's parameters (unknown keys are rejected).
        default_window: ``(start, end)`` fractions of the denoising steps in which the loss
            is active: step ``i`` of ``T`` is guided when ``start * T <= i < end * T``.
        params: the validated parameters.
        weight: multiplies the plugin's ``step_size * value`` in the combined update.
        window: the active window of this instance.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[LossParams]] = LossParams
    default_window: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def __init__(
        self,
        params: P | dict[str, Any] | None = None,
        weight: float = 1.0,
        window: tuple[float, float] | list[float] | None = None,
    ) -> None:
        self.params: P = self.validate_params(params)
        self.weight = float(weight)
        self.window = check_window(self.name, window if window is not None else self.default_window)

    @classmethod
    def validate_params(cls, params: LossParams | dict[str, Any] | None) -> P:
        """Return ``params`` as the plugin's ``Params``; a clear ``ConfigError`` otherwise."""
        return validate_plugin_params("loss plugin", cls.name, cls.Params, params)  # type: ignore[return-value]

    def active_at(self, step: int, num_steps: int) -> bool:
        """Whether this loss is guided at step ``step`` of ``num_steps`` (its window)."""
        return window_contains(self.window, step, num_steps)

    def in_window(self, ctx: GuidanceContext) -> bool:
        """``active_at`` for the step of ``ctx``."""
        return self.active_at(ctx.step, ctx.num_steps)

    @hookimpl
    def attnguide_loss(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        if not self.in_window(ctx):
            return None
        return self.compute(ctx, maps)

    def compute(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        """Loss for one image at one step; ``maps: [tokens, H, W]`` float32."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Configuration needed to rebuild this plugin (recorded in image metadata)."""
        return {
            "name": self.name,
            "weight": self.weight,
            "window": list(self.window),
            "params": self.params.model_dump(mode="json"),
        }


def check_window(name: str, window: Any) -> tuple[float, float]:
    """``window`` as ``(start, end)`` with ``0 <= start <= end <= 1``; a ``ConfigError`` naming
    the plugin otherwise."""
    try:
        start, end = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ConfigError(
            f"loss plugin {name!r}: window must be two fractions [start, end], got {window!r}"
        ) from None
    if not 0.0 <= start <= end <= 1.0:
        raise ConfigError(
            f"loss plugin {name!r}: window must satisfy 0 <= start <= end <= 1, got {window!r}"
        )
    return (start, end)
