"""Base class for callback plugins: observers of a run with Lightning-style hooks."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

import pydantic

from .params import validate_plugin_params


class CallbackParams(pydantic.BaseModel):
    """Parameters of a callback; plugins subclass this for their own."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


C = TypeVar("C", bound=CallbackParams)


class Callback(Generic[C]):
    """Subclass as ``Callback[MyParams]``, set ``name`` and ``Params``, and implement any of the
    run hooks as methods: ``on_run_start``, ``on_step_start``, ``on_step_end``, ``on_run_end``
    (and ``attnguide_update_latents`` to replace the latent update). A method named like a hook
    is that hook's implementation, with or without ``@attnguide.hookimpl``; a method named
    ``on_*`` that matches no hook is refused when the run starts. An instance is made per run,
    so attributes are per-run state. Callbacks run in the order the run lists them."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[CallbackParams]] = CallbackParams
    needs_analysis: ClassVar[bool] = False  # True: the run parses prompts for this callback
    requires: ClassVar[frozenset[str]] = frozenset()  # as LossPlugin.requires
    family_defaults: ClassVar[dict[str, dict[str, Any]]] = {}  # as LossPlugin.family_defaults

    def __init__(self, params: C | dict[str, Any] | None = None) -> None:
        self.params: C = validate_plugin_params("callback plugin", self.name, self.Params, params)  # type: ignore[assignment]

    def state_dict(self) -> dict[str, Any]:
        """Configuration needed to rebuild this callback (recorded in image metadata)."""
        return {"name": self.name, "params": self.params.model_dump(mode="json")}
