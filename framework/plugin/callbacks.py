"""Base class for callback plugins: observers of a run with Lightning-style hooks."""

from __future__ import annotations

from typing import Any, ClassVar

import pydantic

from .params import validate_plugin_params


class CallbackParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class Callback:
    """Subclass, set ``name`` and ``Params``, and implement any of the run hooks
    (``on_run_start``, ``on_step_start``, ``on_step_end``, ``on_run_end``) marked with
    ``attnguide.hookimpl``. An instance is made per run, so attributes are per-run state."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[CallbackParams]] = CallbackParams
    needs_analysis: ClassVar[bool] = False  # True: the run parses prompts for this callback

    def __init__(self, params: CallbackParams | dict[str, Any] | None = None) -> None:
        self.params = validate_plugin_params("callback plugin", self.name, self.Params, params)

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params.model_dump(mode="json")}
