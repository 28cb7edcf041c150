"""Capture of cross-attention maps: an ``AttentionStore`` and the processors that fill it.

Only the selected cross-attention layers get a capturing processor, and it computes an explicit
softmax only while the store is capturing; otherwise (and on every other layer) the pipeline's
own processor - PyTorch SDPA by default - runs untouched. ``capture_attention`` installs the
full processor dict and restores the originals afterwards, also when the body raises.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..errors import ConfigError


class StopForward(Exception):
    """Raised by the last captured layer of a truncated forward: the rest is not needed."""


class AttentionStore:
    """Accumulates cross-attention probabilities of one forward pass.

    Args:
        resolution: keep layers whose query grid is ``resolution x resolution`` (16 for SD 1.x
            at 512 px). ``None`` keeps every captured layer (then ``layers`` should be given).
        layers: optional processor names (e.g. ``"up_blocks.1.attentions.0.transformer_blocks
            .0.attn2.processor"``) to restrict capture to.

    After a capturing forward, ``maps()`` returns ``[batch, tokens, H, W]``: the probabilities
    averaged over every recorded head of every recorded layer (what the SynGen and A&E
    references aggregate), for the rows selected by ``rows``.
    """

    def __init__(self, resolution: int | None = 16, layers: Sequence[str] | None = None,
                 kind: str = "cross") -> None:
        self.resolution = resolution
        self.layers = frozenset(layers) if layers else None
        self.kind = kind
        self.extras: dict[Any, AttentionStore] = {}  # a run's map requests (attnguide.engine.requests)
        self.modulation: Any = None  # a run's attention modulation (attnguide.engine.modulation)
        self.capturing = False
        self.truncate = False
        self.known_layers: tuple[str, ...] = ()
        self.rows: slice = slice(None)
        self.text_length = 0  # Flux: text tokens before the image tokens in single-stream blocks
        self.recorded_layers: list[str] = []
        self._sum: torch.Tensor | None = None
        self._heads = 0
        self._grid: tuple[int, int] | None = None

    def wants(self, name: str, num_pixels: int) -> bool:
        """Whether a layer named ``name`` with ``num_pixels`` queries is recorded now."""
        if not self.capturing:
            return False
        if name.endswith("attn1.processor") != (self.kind == "self"):
            return False
        if self.layers is not None and name not in self.layers:
            return False
        return self.resolution is None or num_pixels == self.resolution * self.resolution

    def stores_for(self, name: str, num_pixels: int) -> list[AttentionStore]:
        """The stores that record layer ``name`` now: the extras that want it, then this one."""
        wanting = [store for store in self.extras.values() if store.wants(name, num_pixels)]
        return wanting + [self] if self.wants(name, num_pixels) else wanting

    def reset(self) -> None:
        self.recorded_layers = []
        self._sum = None
        self._heads = 0
        self._grid = None

    def record(self, name: str, probs_head_sum: torch.Tensor, heads: int, grid: tuple[int, int]) -> None:
        """Add one layer: ``probs_head_sum: [batch, pixels, tokens]`` summed over ``heads``."""
        if self._grid is not None and grid != self._grid:
            raise ValueError(
                f"attention layer {name} has a {grid[0]}x{grid[1]} grid but earlier captured layers "
                f"are {self._grid[0]}x{self._grid[1]}; select layers of one resolution"
            )
        self._grid = grid
        self._sum = probs_head_sum if self._sum is None else self._sum + probs_head_sum
        self._heads += heads
        self.recorded_layers.append(name)
        if self.truncate and self.known_layers and name == self.known_layers[-1]:
            raise StopForward

    def maps(self) -> torch.Tensor:
        """``[batch, tokens, H, W]`` float32 average over recorded layers and heads."""
        if self._sum is None or self._grid is None:
            raise RuntimeError(
                "no cross-attention layer was captured: check attention.resolution "
                f"({self.resolution}) against the model's latent size, or name layers explicitly"
            )
        avg = (self._sum / self._heads).float()
        batch, _, tokens = avg.shape
        h, w = self._grid
        if self.kind == "self":  # [batch, queries, keys] -> [batch, queries, H, W] over the keys
            return avg.reshape(batch, -1, h, w)
        return avg.reshape(batch, h, w, tokens).permute(0, 3, 1, 2)

    @contextlib.contextmanager
    def capture(self, rows: slice = slice(None), truncate: bool = False,
                extras: bool = False) -> Iterator[AttentionStore]:
        """Record during the body; ``rows`` picks batch rows (e.g. the conditional half);
        ``extras``: the run's requested stores record too (then the forward is not truncated).

        With ``truncate``, once the layer order is known (after one full capturing forward),
        the forward is cut right after the last captured layer: ``StopForward`` is raised
        there and swallowed here, so neither the forward nor the backward touches the later
        (high-resolution, most expensive) blocks. Use it only when the UNet output is not
        needed.
        """
        others = list(self.extras.values()) if extras else []
        for store in (self, *others):
            store.reset()
            store.capturing, store.rows = True, rows
        self.truncate = truncate and not others
        completed = False
        try:
            yield self
            completed = True
        except StopForward:
            pass
        finally:
            for store in (self, *others):
                store.capturing, store.rows = False, slice(None)
            self.truncate = False
        if completed and self.recorded_layers:
            self.known_layers = tuple(self.recorded_layers)


class _CapturingProcessor:
    """Wraps the layer ``name``'s original processor and records into ``store``."""

    def __init__(self, name: str, store: AttentionStore, original: Any) -> None:
        self.name = name
        self.store = store
        self.original = original


class CapturingAttnProcessor(_CapturingProcessor):
    """Cross-attention processor that records softmax probabilities when its store asks.

    When not recording it calls the wrapped original processor, so plain forwards keep the
    pipeline's fast path (SDPA) and give bit-identical results.
    """

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        pixels = _num_pixels(hidden_states)
        stores = self.store.stores_for(self.name, pixels)
        modulation = self.store.modulation
        modulated = modulation is not None and encoder_hidden_states is not None and modulation.covers(self.name)
        if not stores and not modulated:
            passed: torch.Tensor = self.original(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs
            )
            return passed
        return self._explicit(attn, hidden_states, encoder_hidden_states, attention_mask, temb, stores,
                              modulation if modulated else None)

    def _explicit(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        context: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        temb: torch.Tensor | None,
        stores: list[AttentionStore],
        modulation: Any = None,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
            grid = (height, width)
        else:
            side = math.isqrt(hidden_states.shape[1])
            grid = (side, hidden_states.shape[1] // side)
        batch, pixels, _ = hidden_states.shape
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if context is None:  # self-attention (attn1): keys and values from the image itself
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        heads = attn.heads
        head_dim = key.shape[-1] // heads
        query = query.view(batch, -1, heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        scores_dtype = torch.float32 if attn.upcast_attention or attn.upcast_softmax else query.dtype
        scores = torch.matmul(query.to(scores_dtype), key.to(scores_dtype).transpose(-1, -2)) * attn.scale
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, key.shape[2], batch)
            scores = scores + mask.view(batch, heads, -1, mask.shape[-1]).to(scores.dtype)
        probs = scores.softmax(dim=-1)
        values = None
        if modulation is not None:
            probs, values = modulation.apply(self.name, grid, probs, context)
        # probs: [batch, heads, pixels, keys]; the losses read the head sum of the chosen rows.
        # The run's default store comes last: it may end a truncated forward (StopForward).
        head_sum = probs[self.store.rows].sum(dim=1)
        for store in stores:
            store.record(self.name, head_sum, heads, grid)
        if values:  # per-phrase value states: the mean of probs @ to_v(v_i)
            projected = [attn.to_v(v.to(value.dtype)).view(batch, -1, heads, head_dim).transpose(1, 2) for v in values]
            out = torch.stack([torch.matmul(probs.to(value.dtype), v) for v in projected]).mean(dim=0)
        else:
            out = torch.matmul(probs.to(value.dtype), value)
        out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        scaled: torch.Tensor = out / attn.rescale_output_factor
        return scaled


class CapturingJointAttnProcessor(_CapturingProcessor):
    """Joint-attention processor (MMDiT, ``[image, text]`` tokens) that records the image->text
    block when its store asks.

    The block is computed explicitly from the layer's own projections: image queries against
    text keys, softmax over the text keys only (the joint softmax's text block renormalised),
    summed over heads. The layer's output always comes from the wrapped original processor, so
    the forward is the pipeline's own, capturing or not; gradients reach the latents through
    the recorded probabilities.
    """

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if encoder_hidden_states is not None and self.store.wants(self.name, hidden_states.shape[1]):
            self._record(attn, hidden_states, encoder_hidden_states)
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)

    def _record(self, attn: Any, image: torch.Tensor, text: torch.Tensor) -> None:
        batch, pixels, _ = image.shape
        side = math.isqrt(pixels)
        query, key = attn.to_q(image), attn.add_k_proj(text)
        heads = attn.heads
        head_dim = key.shape[-1] // heads
        query = query.view(batch, -1, heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_added_k is not None:
            key = attn.norm_added_k(key)
        scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * attn.scale
        probs = scores.softmax(dim=-1)  # [batch, heads, pixels, text tokens]
        self.store.record(self.name, probs[self.store.rows].sum(dim=1), heads, (side, pixels // side))
        # the store may end a truncated forward here (StopForward), after recording


class CapturingFluxAttnProcessor(_CapturingProcessor):
    """Flux attention processor (``[text, image]`` tokens, rotary embeddings) that records the
    image->text block when its store asks.

    Double-stream blocks get image and text streams separately; single-stream blocks get their
    concatenation, whose first ``store.text_length`` tokens are text. Image queries and text keys
    are projected, normalised and rotated as the layer does, and their softmax is taken over the
    text keys; the layer's output always comes from the wrapped original processor.
    """

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: Any = None, **kwargs: Any) -> Any:
        text = encoder_hidden_states.shape[1] if encoder_hidden_states is not None else self.store.text_length
        pixels = hidden_states.shape[1] - (0 if encoder_hidden_states is not None else text)
        if self.store.wants(self.name, pixels):
            self._record(attn, hidden_states, encoder_hidden_states, image_rotary_emb, text, pixels)
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb, **kwargs)

    def _record(self, attn: Any, hidden: torch.Tensor, context: torch.Tensor | None, rotary: Any,
                text: int, pixels: int) -> None:
        from diffusers.models.embeddings import apply_rotary_emb

        if context is not None:  # double stream
            query = attn.norm_q(attn.to_q(hidden).unflatten(-1, (-1, attn.head_dim)))
            key = attn.norm_added_k(attn.add_k_proj(context).unflatten(-1, (-1, attn.head_dim)))
        else:  # single stream: [text, image] in one sequence
            query = attn.norm_q(attn.to_q(hidden[:, text:]).unflatten(-1, (-1, attn.head_dim)))
            key = attn.norm_k(attn.to_k(hidden[:, :text]).unflatten(-1, (-1, attn.head_dim)))
        if rotary is not None:
            cos, sin = rotary
            query = apply_rotary_emb(query, (cos[text:], sin[text:]), sequence_dim=1)
            key = apply_rotary_emb(key, (cos[:text], sin[:text]), sequence_dim=1)
        # [batch, seq, heads, dim] -> [batch, heads, image, text]
        scores = torch.matmul(query.transpose(1, 2).float(), key.transpose(1, 2).float().transpose(-1, -2))
        probs = (scores * attn.head_dim**-0.5).softmax(dim=-1)
        side = math.isqrt(pixels)
        self.store.record(self.name, probs[self.store.rows].sum(dim=1), probs.shape[1], (side, pixels // side))


def _num_pixels(hidden_states: torch.Tensor) -> int:
    if hidden_states.ndim == 4:
        return hidden_states.shape[2] * hidden_states.shape[3]
    return hidden_states.shape[1]


def is_cross_attention(name: str) -> bool:
    """UNet processor names of cross-attention layers end in ``attn2.processor``."""
    return name.endswith("attn2.processor")


def is_joint_attention(name: str) -> bool:
    """Transformer processor names of joint-attention layers: ``transformer_blocks.N.attn.processor``
    (SD3, Flux's double-stream blocks) and ``single_transformer_blocks.N.attn.processor`` (Flux)."""
    return name.startswith(("transformer_blocks.", "single_transformer_blocks.")) and name.endswith(".attn.processor")


def check_layers(model: Any, layers: Sequence[str] | None, model_name: str) -> None:
    """A ``ConfigError`` naming every layer of ``layers`` that is no capturable attention
    layer of ``model`` (cross-attention in a UNet, joint attention in an SD3 transformer), with
    the closest real name."""
    problem = layer_problem(list(model.attn_processors), layers, model_name)
    if problem:
        raise ConfigError(problem)


def layer_problem(processors: Sequence[str], layers: Sequence[str] | None, model_name: str) -> str | None:
    """What is wrong with ``layers`` given a model's attention processor names (``None``: nothing);
    each unknown name comes with the closest capturable one."""
    if not layers:
        return None
    capturable = [n for n in processors if is_cross_attention(n) or is_joint_attention(n)]
    problems = []
    for layer in layers:
        if layer not in capturable:
            close = difflib.get_close_matches(layer, capturable, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{layer!r}{hint}")
    if not problems:
        return None
    return (f"{model_name} has no capturable attention layer {', '.join(problems)}; its layers are named like "
            f"{capturable[0]!r} ({len(capturable)} in all)")


def _capturing(name: str, store: AttentionStore, proc: Any, self_attention: bool = False) -> Any:
    if is_cross_attention(name) or (self_attention and name.endswith("attn1.processor")):
        return CapturingAttnProcessor(name, store, proc)
    if is_joint_attention(name):
        if type(proc).__name__.startswith("Flux"):
            return CapturingFluxAttnProcessor(name, store, proc)
        return CapturingJointAttnProcessor(name, store, proc)
    return proc


@contextlib.contextmanager
def capture_attention(unet: Any, store: AttentionStore, classic: bool = False,
                      self_attention: bool = False) -> Iterator[AttentionStore]:
    """Install capturing processors on ``unet``'s cross-attention layers (or an SD3
    transformer's joint-attention layers) for the body.

    ``set_attn_processor`` receives a full dict (capturing wrappers on cross-attention layers,
    the originals elsewhere); the originals are restored on exit, also on error. ``classic``
    replaces every processor by diffusers' explicit-softmax ``AttnProcessor`` first, as the
    reference implementations run (for benchmarks of the reference style). ``self_attention``
    wraps the UNet's ``attn1`` layers too (only when a plugin asked for self-attention maps).
    """
    originals = dict(unet.attn_processors)
    base = originals
    if classic:
        from diffusers.models.attention_processor import AttnProcessor

        base = {name: AttnProcessor() for name in originals}
    installed = {name: _capturing(name, store, proc, self_attention) for name, proc in base.items()}
    unet.set_attn_processor(installed)
    try:
        yield store
    finally:
        unet.set_attn_processor(originals)
