"""Base class for loss plugins: parameters, step window, weight.

A loss plugin is one class with a ``name``, a pydantic ``Params`` model and a ``compute``
method; the base class turns it into an implementation of the ``attnguide_loss`` hook that
returns ``None`` outside the plugin's window. ``active_at`` is the one place a window is
decided: the hook and the engine (which skips the guidance forward when no loss is active)
both ask it.

A window is given in one of two clocks:

* ``window: [start, end]`` - fractions of the denoising steps (the references' "the first 25
  of 50 steps" is ``[0, 0.5]``);
* ``time_window: [low, high]`` - the scheduler's own time ``t = timestep /
  num_train_timesteps`` (1 = pure noise): the flow time sigma for flow-matching schedulers,
  ``t / 1000`` for SD's. The same noise levels are then guided whatever the step count or
  the timestep shift (SD3's shift of 3, Flux's resolution-dependent shift, schnell's 4 steps).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Generic, TypeVar

import pydantic

from ..errors import ConfigError
from ..lazy import torch
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


def time_window_contains(time_window: tuple[float, float], time: float) -> bool:
    """Whether the scheduler time ``time`` (1 = pure noise) lies in ``[low, high]`` (closed)."""
    low, high = time_window
    return low <= time <= high


class LossPlugin(Generic[P]):
    """A guidance loss. Subclass it as ``LossPlugin[MyParams]``, set ``name``, ``Params`` and
    ``default_window``, and implement ``compute``; ``self.params`` is then typed ``MyParams``.

    Attributes:
        name: registered name, used by recipes and ``--method``.
        Params: pydantic model of the plugin's parameters (unknown keys are rejected).
        default_window: ``(start, end)`` fractions of the denoising steps in which the loss
            is active: step ``i`` of ``T`` is guided when ``start * T <= i < end * T``.
        requires: what the model must have (``attnguide.models.families.CAPABILITIES``:
            ``cfg``, ``start_token``, ``unet``, ...); a run on a family without it is refused
            with an error naming the plugin and the family.
        family_defaults: ``{family: {param: value}}`` - parameter defaults that differ on a
            model family (``sd``, ``sdxl``, ``sd3``, ``flux``); explicit values win.
        params: the validated parameters.
        weight: multiplies the plugin's ``step_size * value`` in the combined update.
        window: the active step window of this instance.
        time_window: ``(low, high)`` in the scheduler's time when given; it then replaces
            ``window``.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[LossParams]] = LossParams
    default_window: ClassVar[tuple[float, float]] = (0.0, 1.0)
    requires: ClassVar[frozenset[str]] = frozenset()
    family_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(
        self,
        params: P | dict[str, Any] | None = None,
        weight: float = 1.0,
        window: tuple[float, float] | list[float] | None = None,
        time_window: tuple[float, float] | list[float] | None = None,
    ) -> None:
        self.params: P = self.validate_params(params)
        self.weight = check_weight(self.name, weight)
        if window is not None and time_window is not None:
            raise ConfigError(f"loss plugin {self.name!r}: give window (steps) or time_window (scheduler time), not both")
        self.window = check_window(self.name, window if window is not None else self.default_window)
        self.time_window = None if time_window is None else check_window(self.name, time_window, "time_window")

    @classmethod
    def validate_params(cls, params: LossParams | dict[str, Any] | None) -> P:
        """Return ``params`` as the plugin's ``Params``; a clear ``ConfigError`` otherwise."""
        return validate_plugin_params("loss plugin", cls.name, cls.Params, params)  # type: ignore[return-value]

    def active_at(self, step: int, num_steps: int, time: float | None = None) -> bool:
        """Whether this loss is guided at step ``step`` of ``num_steps``, whose scheduler time
        is ``time`` (needed when the loss has a ``time_window``)."""
        if self.time_window is None:
            return window_contains(self.window, step, num_steps)
        if time is None:
            raise ConfigError(f"loss plugin {self.name!r} has a time_window but step {step} has no scheduler time")
        return time_window_contains(self.time_window, time)

    def in_window(self, ctx: GuidanceContext) -> bool:
        """``active_at`` for the step of ``ctx``."""
        return self.active_at(ctx.step, ctx.num_steps, ctx.time)

    @hookimpl
    def attnguide_loss(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        if not self.in_window(ctx):
            return None
        return self.compute(ctx, maps)

    def compute(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        """Loss for one image at one step; ``maps: [tokens, H, W]`` float32."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Configuration needed to rebuild this plugin (recorded in image metadata); a
        ``time_window`` only when one is set."""
        out: dict[str, Any] = {"name": self.name, "weight": self.weight, "window": list(self.window)}
        if self.time_window is not None:
            out["time_window"] = list(self.time_window)
        out["params"] = self.params.model_dump(mode="json")
        return out


def check_window(name: str, window: Any, key: str = "window") -> tuple[float, float]:
    """``window`` as ``(start, end)`` with ``0 <= start <= end <= 1``; a ``ConfigError`` naming
    the plugin and ``key`` (``window`` or ``time_window``) otherwise."""
    try:
        start, end = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ConfigError(
            f"loss plugin {name!r}: {key} must be two fractions [start, end], got {window!r}"
        ) from None
    if not 0.0 <= start <= end <= 1.0:
        raise ConfigError(
            f"loss plugin {name!r}: {key} must satisfy 0 <= start <= end <= 1, got {window!r}"
        )
    return (start, end)


def check_weight(name: str, weight: Any) -> float:
    """``weight`` as a float, finite and 0 or more; a ``ConfigError`` naming the plugin
    otherwise. A negative weight would turn the loss's update around (push the attention the
    other way), which no method intends."""
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise ConfigError(f"loss plugin {name!r}: weight must be a number, got {weight!r}") from None
    if not (math.isfinite(value) and value >= 0.0):
        raise ConfigError(f"loss plugin {name!r}: weight must be a finite number 0 or more, got {weight!r}")
    return value
