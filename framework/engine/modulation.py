"""Attention modulation inside the forward pass (``attnguide_modulate_attention``).

A plugin that edits attention (Structured Diffusion Guidance's per-phrase values, attention
regulation's edited probabilities) names the layers it works on with ``modulated_layers()``
(``MapRequest`` s of kind ``cross``); only those layers leave the fast kernel, in every forward
of the run - the ordinary step's (both CFG branches) and the guidance and noise forwards. The
processor hands the hook the layer's probabilities ``[rows, heads, queries, keys]`` and uses
what comes back; with value states, the layer's output is the mean over them of
``probs @ to_v(values_i)``. No gradient is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError, PluginError
from ..plugin.dispatch import invoke_chain
from ..types import AttentionContext, AttentionEdit, PromptAnalysis
from .interventions import implements
from .requests import checked_grids, requests_of, selected_layers

if TYPE_CHECKING:
    from .attention import AttentionStore
    from .state import RunState


class Modulation:
    """The run's attention modulation: which layers, and what the rows of a forward are.

    Args:
        run_pm: the run's plugin manager (its ``attnguide_modulate_attention`` implementations).
        layers: processor names modulated.
        analyses: one prompt analysis per image.
        state: ``{image index: {plugin name: state}}`` - the run's per-image plugin state.
    """

    def __init__(self, run_pm: Any, layers: Sequence[str], analyses: list[PromptAnalysis | None],
                 state: dict[int, dict[str, dict[str, Any]]]) -> None:
        self.run_pm = run_pm
        self.layers = frozenset(layers)
        self.analyses = analyses
        self.state = state
        self.rows: list[tuple[int, str]] = []
        self.step: int | None = None

    def covers(self, name: str) -> bool:
        return name in self.layers

    def set_forward(self, rows: list[tuple[int, str]], step: int | None) -> None:
        """Declare the next forward's rows (``(image index, "cond" | "uncond")`` per batch row)."""
        self.rows, self.step = rows, step

    def apply(self, name: str, grid: tuple[int, int], probs: torch.Tensor,
              context: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The plugins' chain on one layer's ``probs: [rows, heads, queries, keys]``: ``(probs,
        value states [rows, L, D] each, or None)``."""
        values: list[torch.Tensor] | None = None

        def own_context(plugin: str, kwargs: dict[str, Any]) -> dict[str, Any]:
            state = {b: self.state.setdefault(b, {}).setdefault(plugin, {}) for b, _ in self.rows}
            ctx = AttentionContext(name, grid, self.step, list(self.rows), self.analyses, state, context)
            return {**kwargs, "ctx": ctx}

        def check(plugin: str, result: Any) -> torch.Tensor:
            nonlocal values
            edit = result if isinstance(result, AttentionEdit) else AttentionEdit(probs=result)
            new = probs_now[0] if edit.probs is None else edit.probs
            if not isinstance(new, torch.Tensor) or new.shape != probs.shape:
                got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
                raise PluginError(f"plugin {plugin!r} returned attention probabilities {got} at {name}, "
                                  f"expected {tuple(probs.shape)}")
            if edit.values is not None:
                for v in edit.values:
                    if v.shape[0] != context.shape[0] or v.shape[-1] != context.shape[-1]:
                        raise PluginError(f"plugin {plugin!r} returned value states {tuple(v.shape)} at {name}, "
                                          f"expected [{context.shape[0]}, L, {context.shape[-1]}]")
                values = list(edit.values)
            probs_now[0] = new
            return new

        probs_now = [probs]
        out = invoke_chain(self.run_pm.hook.attnguide_modulate_attention, "probs", probs, arguments_for=own_context,
                           where=f"at layer {name}" + (f", step {self.step}" if self.step is not None else ""),
                           check=check)
        return out, values


def install_modulation(store: AttentionStore, run: RunState, run_pm: Any, family: str, denoiser: Any,
                       latent: tuple[int, int]) -> None:
    """The run's attention modulation, when a plugin implements it, on the layers its
    ``modulated_layers()`` names (checked against the model)."""
    if not implements(run_pm, "attnguide_modulate_attention"):
        return
    requests = requests_of(run.plugins, "modulated_layers")
    if not requests:
        modulating = next(p.name for p in run.plugins if callable(getattr(p, "attnguide_modulate_attention", None)))
        raise ConfigError(f"plugin {modulating!r} modulates attention but names no layers: return "
                          "MapRequest('cross', every=True) (or a resolution, or layer names) from modulated_layers()")
    grids = checked_grids(requests, family, denoiser, latent)
    layers = sorted({n for _, r in requests for n in selected_layers(r, grids)})
    store.modulation = Modulation(run_pm, layers, [r.analysis for r in run.records], run.plugin_state)
