"""Typed values that travel between the stations of the data path.

parse -> bind -> align -> capture -> loss -> update. Each station takes and returns one of
these; none of them reaches into another station's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .lazy import torch


@dataclass(frozen=True)
class Word:
    """One word of a parsed prompt, with its dependency arc normalised to Universal Dependencies.

    Attributes:
        index: position of the word in ``ParsedPrompt.words`` (0-based).
        text: the word as it appears in the prompt.
        start, end: character span in the prompt, ``prompt[start:end] == text``.
        upos: universal POS tag (``NOUN``, ``ADJ``, ``PROPN`` ...).
        head: index of the head word, or ``-1`` for the root.
        deprel: UD dependency label (``amod``, ``nmod``, ``obl:npmod`` ...), lower case.
        lemma: the lemma when the parser gives one, else ``text.lower()``.
    """

    index: int
    text: str
    start: int
    end: int
    upos: str
    head: int
    deprel: str
    lemma: str = ""


@dataclass(frozen=True)
class ParsedPrompt:
    """A dependency parse of one prompt, in UD vocabulary, produced by a parser plugin."""

    prompt: str
    words: tuple[Word, ...]
    parser: str = ""

    def children(self, index: int) -> list[Word]:
        """Words whose head is ``index``, in prompt order."""
        return [w for w in self.words if w.head == index]


@dataclass(frozen=True)
class WordRef:
    """A word of a binding before alignment: its index in the parse and its text and span."""

    index: int
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Binding:
    """An entity (noun) with the modifiers that belong to it; modifiers may be empty."""

    entity: WordRef
    modifiers: tuple[WordRef, ...] = ()


@dataclass(frozen=True)
class AlignedWord:
    """A word of a binding mapped to its text-encoder token positions.

    ``tokens`` are positions in the encoder's input sequence (for CLIP position 0 is the start
    token; T5 has none), one per piece of the word; a word that was truncated away has no
    aligned form.
    """

    text: str
    tokens: tuple[int, ...]
    start: int = -1
    end: int = -1


@dataclass(frozen=True)
class AlignedBinding:
    """A binding whose words carry token positions."""

    entity: AlignedWord
    modifiers: tuple[AlignedWord, ...] = ()

    @property
    def positions(self) -> tuple[int, ...]:
        """Every token position of the binding (modifiers first, entity last)."""
        out: list[int] = []
        for word in (*self.modifiers, self.entity):
            out.extend(word.tokens)
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity": {"text": self.entity.text, "tokens": list(self.entity.tokens)},
            "modifiers": [{"text": m.text, "tokens": list(m.tokens)} for m in self.modifiers],
        }


@dataclass(frozen=True)
class PromptTokens:
    """Token-level view of one prompt for the losses.

    Attributes:
        prompt: the text.
        pieces: the piece of every position (for CLIP ``pieces[0]`` is the start token).
        prompt_positions: positions of the prompt's own tokens (no start/end/padding):
            ``1 .. n`` for a prompt of ``n`` tokens after truncation with a start token (CLIP),
            ``0 .. n-1`` without one (T5).
        eot_position: position of the end-of-text token.
    """

    prompt: str
    pieces: tuple[str, ...]
    prompt_positions: tuple[int, ...]
    eot_position: int


@dataclass
class PromptAnalysis:
    """Everything the losses know about one prompt: parse, bindings and token positions.

    ``bindings`` holds every entity, with or without modifiers; ``attribute_bindings`` only
    those that have modifiers (what SynGen guides on); ``entities`` each entity once.
    """

    prompt: str
    tokens: PromptTokens
    bindings: list[AlignedBinding] = field(default_factory=list)
    parsed: ParsedPrompt | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def attribute_bindings(self) -> list[AlignedBinding]:
        return [b for b in self.bindings if b.modifiers]

    @property
    def entities(self) -> list[AlignedWord]:
        return [b.entity for b in self.bindings]

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "words": [w.__dict__ for w in self.parsed.words] if self.parsed else [],
            "bindings": [b.to_dict() for b in self.bindings],
            "warnings": list(self.warnings),
        }


@dataclass
class LossTerm:
    """What a loss plugin returns for one guided step.

    Attributes:
        value: scalar tensor with a graph back to the latents (float32).
        step_size: alpha_t of the plugin at this step; the engine descends on
            ``sum(weight * step_size * value)``.
        refine_below: if set, and ``value`` is above it, the engine runs iterative refinement
            (update, forward, recompute) until it is not, as Attend-and-Excite does.
        max_refinement: cap on refinement iterations.
        logs: extra scalars to record for this step (floats).
    """

    value: torch.Tensor
    step_size: float = 1.0
    refine_below: float | None = None
    max_refinement: int = 20
    logs: dict[str, float] = field(default_factory=dict)


Terms = list[tuple[str, float, LossTerm]]
"""``(plugin name, weight, term)`` for every loss that returned a term at one evaluation."""


@dataclass(frozen=True)
class LossRecord:
    """One evaluated loss term of one image, as logged per step (``ImageRecord.losses``).

    Attributes:
        step: denoising step index (0-based).
        refinement: 0 for a step's first evaluation, ``k`` for the k-th refinement pass.
        plugin: the loss plugin's registered name.
        value: the term's value (float).
        weight: the plugin's weight in the run.
        step_size: the term's ``step_size`` at this step.
        logs: the extra scalars the plugin logged (``LossTerm.logs``).

    ``record["value"]`` reads a field or a log by name, as the flat JSON metadata does.
    """

    step: int
    refinement: int
    plugin: str
    value: float
    weight: float
    step_size: float
    logs: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The flat form written to image metadata: the fields, then the logs."""
        out: dict[str, Any] = {
            "step": self.step, "refinement": self.refinement, "plugin": self.plugin,
            "value": self.value, "weight": self.weight, "step_size": self.step_size,
        }
        out.update(self.logs)
        return out

    def __getitem__(self, key: str) -> Any:
        flat = self.to_dict()
        if key not in flat:
            raise KeyError(f"loss record of {self.plugin!r} has no {key!r} (has: {', '.join(flat)})")
        return flat[key]


@dataclass
class GuidanceContext:
    """Per image, per step view handed to loss plugins.

    Attributes:
        step: denoising step index ``i`` (0-based).
        num_steps: the requested number of denoising steps ``T`` (step windows are fractions
            of it: the references guide ``i < 25`` of 50 whatever the scheduler).
        num_timesteps: length of the scheduler's timestep list (PNDM has ``T + 1``); the
            Attend-and-Excite step-size schedule spans it, as the reference does.
        timestep: the scheduler's timestep value at this step.
        image_index: index of the image in the run.
        analysis: the prompt's bindings and token positions.
        state: this plugin's private state for this image, kept across steps of one run.
        refinement: 0 for the first evaluation of a step, k for the k-th refinement pass.
        time: the scheduler's time at this step, ``timestep / num_train_timesteps`` (1 = pure
            noise; the flow time sigma on flow-matching schedulers); ``None`` when unknown.
        previous_maps: this image's maps ``[tokens, H, W]`` (detached) from the last
            evaluation of the previous guided step - the maps "at t + 1" that CONFORM adds as
            positives; ``None`` at the first guided step.
        extra_maps: the maps the plugin asked for (``map_requests``), by ``MapRequest``, from
            the same forward as ``maps`` (``attnguide.engine.requests``).
    """

    step: int
    num_steps: int
    timestep: int | float
    image_index: int
    analysis: PromptAnalysis
    state: dict[str, Any]
    refinement: int = 0
    num_timesteps: int = 0
    time: float | None = None
    previous_maps: torch.Tensor | None = None
    extra_maps: dict[Any, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.num_timesteps:
            self.num_timesteps = self.num_steps

    @property
    def fraction(self) -> float:
        """``step / num_steps`` - where a step window is evaluated."""
        return self.step / max(self.num_steps, 1)


@dataclass
class NoiseContext:
    """Per image view handed to ``attnguide_initial_latents`` before the first step.

    Attributes:
        image_index: index of the image in the run.
        seed: the image's seed.
        analysis: the prompt's bindings and token positions.
        timestep: the first timestep (the one ``forward`` runs at).
        state: this plugin's private state for this image (kept for the whole run).
        forward: ``z [1, C, h, w] -> (maps [tokens, H, W], extra maps by MapRequest)``: the
            conditional forward at the first timestep, differentiable w.r.t. ``z``.
        fresh_noise: ``k -> [1, C, h, w]``: restart ``k``'s initial noise, seeded by the
            image's seed and ``k`` (scaled as the scheduler's initial noise).
    """

    image_index: int
    seed: int
    analysis: PromptAnalysis
    timestep: int | float
    state: dict[str, Any]
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, dict[Any, torch.Tensor]]]
    fresh_noise: Callable[[int], torch.Tensor]


@dataclass
class EmbeddingContext:
    """Per image, per step view handed to ``attnguide_edit_embeddings``.

    Attributes:
        image_index: index of the image in the run.
        step: denoising step index; ``num_steps`` the requested number of steps.
        timestep: the scheduler's timestep at this step.
        analysis: the prompt's bindings and token positions.
        state: this plugin's private state for this image (kept across steps).
        encode: ``text -> [L, D]``: this pipeline's conditional embedding of ``text``.
        forward: ``embeds [L, D] -> (prediction [1, ...], maps [tokens, H, W])``: the image's
            conditional forward at this step on its current latents with ``embeds``,
            differentiable w.r.t. ``embeds`` (ToMe's updates of the prompt embeddings).
    """

    image_index: int
    step: int
    num_steps: int
    timestep: int | float
    analysis: PromptAnalysis
    state: dict[str, Any]
    encode: Callable[[str], torch.Tensor]
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None


@dataclass
class AttentionContext:
    """Per layer, per forward view handed to ``attnguide_modulate_attention``.

    Attributes:
        layer: the processor name (``...attn2.processor``).
        grid: the layer's query grid ``(h, w)``.
        step: the denoising step; ``None`` in the initial-noise forwards.
        rows: per batch row, ``(image index, "cond" | "uncond")``.
        analyses: one prompt analysis per image of the run.
        state: ``{image index: this plugin's state for that image}`` for the images in ``rows``.
        context: the layer's text states ``[rows, L, D]`` (what ``to_k``/``to_v`` project).
    """

    layer: str
    grid: tuple[int, int]
    step: int | None
    rows: list[tuple[int, str]]
    analyses: list[PromptAnalysis | None]
    state: dict[int, dict[str, Any]]
    context: torch.Tensor


@dataclass
class AttentionEdit:
    """What ``attnguide_modulate_attention`` may return besides bare probabilities.

    Attributes:
        probs: ``[rows, heads, queries, keys]`` new probabilities (``None``: unchanged).
        values: text states ``[rows, L, D]`` each; the layer's output becomes the mean over them
            of ``probs @ to_v(values_i)`` (Structured Diffusion Guidance's per-phrase values).
    """

    probs: torch.Tensor | None = None
    values: list[torch.Tensor] | None = None

