"""The guidance engine: owns the denoising loop of a diffusers Stable Diffusion pipeline.

With no loss plugin the loop is the pipeline's own (same components, scheduler calls and
random draws), so outputs match ``StableDiffusionPipeline.__call__``. With loss plugins, each
step first runs the guidance phase (``attnguide.engine.guidance``) on every image, then the ordinary
classifier-free-guidance step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..models.families import (
    default_attention_layers,
    default_attention_resolution,
    denoiser,
    family_of,
    text_tokenizer,
)
from ..plugin.dispatch import invoke
from ..plugin.losses import LossPlugin
from ..plugin.manager import AttnguidePluginManager, make_plugin_manager, run_plugin_manager
from ..plugin.specs import CallbackLike, LossLike, build_callbacks, build_losses
from ..types import GuidanceContext, PromptAnalysis
from .attention import AttentionStore, capture_attention, check_layers
from .conditioning import T5_LENGTH, Conditioning, cached_encoder, encode, rows_of
from .family_calls import decode, predict, prepare_flux
from .guidance import custom_update, guide_batch
from .interventions import edited_conditioning, implements, initial_latents
from .modulation import install_modulation
from .requests import install_requests
from .runtime import RuntimeConfig, make_fabric
from .sampling import SamplingConfig, image_draws, sampling_config, scheduler_time
from .state import ImageRecord, RunState
from .text_maps import PromptMaps, TextMaps


@dataclass
class GenerationResult:
    """Output of ``Engine.generate``.

    Attributes:
        images: PIL images, one per (prompt, seed), prompt-major (empty for ``output_type='latent'``).
        latents: final latents ``[B, C, h, w]`` float32 on CPU.
        records: per image: prompt, seed, bindings with token positions, per-step loss terms.
        run: the run state (timesteps, captured maps, timings).
    """

    images: list[Any]
    latents: torch.Tensor
    records: list[ImageRecord]
    run: RunState
    config: dict[str, Any] = field(default_factory=dict)


class Engine:
    """Guided generation for one pipeline.

    Args:
        pipe: a diffusers ``StableDiffusionPipeline`` (SD 1.x / 2.x) or
            ``StableDiffusionXLPipeline`` (``attnguide.models.families``).
        runtime: Fabric settings (device, precision).
        attention_resolution: capture cross-attention layers whose grid is this size; ``"auto"``:
            the family's default (16 for SD 1.x/2.x - 16x16 at 512 px, and the tiny model at 256
            px has 16x16 layers too; for SDXL a quarter of the native latent size, 32 at 1024 px).
        attention_layers: optional explicit processor names to capture instead.
        parser: registered parser name used when losses need bindings; ``parser_params`` its
            settings.
        plugin_manager: a manager from ``make_plugin_manager()``; built when omitted.
        truncate_guidance: stop the guidance forward right after the last captured layer
            (same loss and gradient, less work). On by default.
        gradient_checkpointing: recompute UNet activations in the guidance backward instead
            of storing them (less memory, more time).
        reference_style: run as the reference implementations do - classic attention in
            every layer of every forward, full guidance forwards, and Attend-and-Excite's
            repeated refinement forward. Same results; for benchmarks.
        text_maps: SD3 only: how the CLIP and T5 maps of a word are combined into the maps
            the losses read (``average``, ``clip`` or ``t5``; ``attnguide.engine.text_maps``).
        batch_guidance: guide all images of a call in one forward and backward per guidance
            pass (each image's gradient is its own; equal to one at a time within float
            rounding). Off: one image at a time, as the references. Reference style and a
            plugin replacing ``attnguide_update_latents`` always go one at a time.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        runtime: RuntimeConfig | None = None,
        attention_resolution: int | None | Literal["auto"] = "auto",
        attention_layers: Sequence[str] | None = None,
        parser: str = "spacy",
        parser_params: dict[str, Any] | None = None,
        plugin_manager: AttnguidePluginManager | None = None,
        fabric: Any = None,
        truncate_guidance: bool = True,
        gradient_checkpointing: bool = False,
        reference_style: bool = False,
        text_maps: TextMaps = "average",
        batch_guidance: bool = True,
    ) -> None:
        self.pipe = pipe
        self.family = family_of(pipe)
        self.fabric = fabric or make_fabric(runtime)
        self.runtime = runtime or RuntimeConfig()
        self.pm = plugin_manager or make_plugin_manager()
        if attention_resolution == "auto":
            attention_resolution = default_attention_resolution(pipe)
            attention_layers = attention_layers or default_attention_layers(pipe)
        self.store = AttentionStore(attention_resolution, attention_layers)
        self.denoiser = denoiser(pipe)
        check_layers(self.denoiser, attention_layers, type(pipe).__name__)
        self.parser_name = parser
        self.parser_params = dict(parser_params or {})
        self._parser: Any = None
        self.reference_style = reference_style
        self.truncate_guidance = truncate_guidance and not reference_style
        self.batch_guidance = batch_guidance
        self._view = PromptMaps(pipe, self.family, text_maps, T5_LENGTH)
        if reference_style and self.family in ("sd3", "flux"):
            raise ConfigError(
                f"reference_style runs classic attention processors, which {type(pipe).__name__}'s joint attention has not"
            )
        if gradient_checkpointing:
            self.denoiser.enable_gradient_checkpointing()
        encoders = (getattr(pipe, n, None) for n in ("text_encoder", "text_encoder_2", "text_encoder_3"))
        for module in (self.denoiser, pipe.vae, *encoders):
            if module is None:
                continue
            module.requires_grad_(False)
            module.eval()
            self.fabric.to_device(module)
        self._compiled = self._fast_path(self.runtime)

    def _fast_path(self, runtime: RuntimeConfig) -> Any:
        """Apply ``runtime.channels_last`` (UNets) and build the compiled denoiser for forwards
        that capture nothing (``runtime.compile``), or None."""
        if runtime.channels_last and self.family in ("sd", "sdxl"):
            self.denoiser.to(memory_format=torch.channels_last)
        if not runtime.compile:
            return None
        return torch.compile(self.denoiser, backend=runtime.compile_backend)

    @property
    def text_maps(self) -> TextMaps:
        """SD3's CLIP/T5 map combination (``attnguide.engine.text_maps``); settable between runs."""
        return self._view.mode

    @text_maps.setter
    def text_maps(self, mode: TextMaps) -> None:
        self._view.mode = mode

    @classmethod
    def from_model(cls, model: str, *, scheduler: str | None = None, **kwargs: Any) -> Engine:
        """Build from ``"tiny"``, ``"toyworld"``, a hub id, a local directory or a single-file checkpoint."""
        from ..models.loading import load_pipeline

        return cls(load_pipeline(model, scheduler=scheduler), **kwargs)

    @property
    def device(self) -> torch.device:
        device: torch.device = self.fabric.device
        return device

    # -- parse -> bind -> align ---------------------------------------------------------
    def analyse(self, prompt: str) -> PromptAnalysis:
        """Parse ``prompt`` and align its bindings to this pipeline's tokenizer."""
        from ..prompts.parsing import analyse_prompt, get_parser

        if self._parser is None:
            self._parser = get_parser(self.parser_name, self.parser_params, self.pm.registry)
        return analyse_prompt(prompt, self._parser, text_tokenizer(self.pipe))

    # -- generation -------------------------------------------------------------------
    def generate(
        self,
        prompts: str | Sequence[str],
        seeds: int | Sequence[int] | None = None,
        *,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        losses: Sequence[LossLike] = (),
        callbacks: Sequence[CallbackLike] = (),
        sampling: SamplingConfig | Mapping[str, Any] | None = None,
        analyses: Sequence[PromptAnalysis] | None = None,
        output_type: str = "pil",
        progress: bool = True,
        **sampling_overrides: Any,
    ) -> GenerationResult:
        """Generate one image per (prompt, seed).

        Args:
            prompts: a prompt or a list of prompts.
            seeds: one seed per image (``len(prompts) * images_per_prompt``), or one int (or a
                list of one): image ``k`` of every prompt gets ``seed + k``; default 0. A seed
                fixes its image's initial latents whatever else is in the batch.
            generator: diffusers' alternative to ``seeds``: a ``torch.Generator`` that draws
                every image's initial latents in one draw, or a list with one per image. Each
                record's ``seed`` is then its generator's ``initial_seed()`` and its
                ``generator`` flag is set. Not together with ``seeds``.
            losses: loss plugins - registered names, ``{"name": ..., "weight": ...,
                "window": [start, end] | "time_window": [low, high], **params}`` dicts, or
                ``LossPlugin`` instances.
            callbacks: callback names, dicts or instances.
            sampling: a ``SamplingConfig`` or a dict of its settings (steps, guidance scale,
                size, negative prompt ...); keyword overrides (``steps=10``) are applied on top.
                Keywords may use diffusers' names: ``num_inference_steps``,
                ``num_images_per_prompt``, ``negative_prompt`` (``attnguide.engine.sampling``).
            analyses: precomputed prompt analyses (one per prompt); parsed when omitted and
                a loss or callback needs them.
            output_type: ``"pil"`` or ``"latent"`` (skip decoding).
        """
        cfg = sampling_config(sampling, sampling_overrides)
        prompt_list, seed_list, draws = image_draws(prompts, seeds, generator, cfg.images_per_prompt, self.device)
        loss_plugins = build_losses(losses, self.pm.registry, family=self.family)
        callback_plugins = build_callbacks(callbacks, self.pm.registry, family=self.family)
        needs = bool(loss_plugins) or any(c.needs_analysis or _intervenes(c) for c in callback_plugins)
        per_prompt = self._analyses(prompt_list, analyses, needs)
        records = [
            ImageRecord(index=i, prompt=p, seed=s, analysis=per_prompt.get(p), generator=generator is not None)
            for i, (p, s) in enumerate(zip(prompt_list, seed_list))
        ]
        run = RunState(config=self._run_config(cfg, loss_plugins), records=records)
        run.plugins = [*loss_plugins, *callback_plugins]
        run_pm = run_plugin_manager([(p.name, p) for p in run.plugins])
        weights = {p.name: p.weight for p in loss_plugins}
        height, width = cfg.resolve_size(self.pipe)
        latent = (height // int(self.pipe.vae_scale_factor), width // int(self.pipe.vae_scale_factor))
        requests = install_requests(self.store, run.plugins, self.family, self.denoiser, latent)
        install_modulation(self.store, run, run_pm, self.family, self.denoiser, latent)
        # A run without plugins (an ablation's baseline) keeps the model's own processors: its
        # loop is the pipeline's, with nothing installed that could cost time.
        capture = (capture_attention(self.denoiser, self.store, classic=self.reference_style,
                                     self_attention=any(r.kind == "self" for _, r in requests))
                   if self._captures(run) else contextlib.nullcontext())
        try:
            with capture:
                latents = self._denoise(cfg, prompt_list, draws, run, run_pm, weights, progress)
        finally:
            self.store.extras, self.store.modulation = {}, None
        images = decode(self.pipe, self.family, latents, (height, width), self.device) if output_type == "pil" else []
        invoke(run_pm.hook.on_run_end, run=run, images=images)
        return GenerationResult(images, latents.detach().float().cpu(), records, run, run.config)

    def _captures(self, run: RunState) -> bool:
        """Whether ``run`` installs the capturing attention processors: when it has plugins, or
        runs reference style (classic attention); else the model keeps its own processors."""
        return bool(run.plugins) or self.reference_style

    def _analyses(
        self, prompts: list[str], given: Sequence[PromptAnalysis] | None, needed: bool
    ) -> dict[str, PromptAnalysis]:
        if given is not None:
            return {a.prompt: a for a in given}
        if not needed:
            return {}
        return {p: self.analyse(p) for p in dict.fromkeys(prompts)}

    def _run_config(self, cfg: SamplingConfig, loss_plugins: list[Any]) -> dict[str, Any]:
        return {
            **cfg.model_dump(),
            "scheduler_class": type(self.pipe.scheduler).__name__,
            "losses": [p.state_dict() for p in loss_plugins],
            "attention": {"resolution": self.store.resolution, "layers": sorted(self.store.layers or [])},
            "precision": str(getattr(self.fabric, "_precision", "")),
            "device": str(self.device),
        }

    def _denoise(
        self, cfg: SamplingConfig, prompts: list[str], generators: torch.Generator | list[torch.Generator],
        run: RunState, run_pm: Any, weights: dict[str, float], progress: bool,
    ) -> torch.Tensor:
        """The denoising loop; ``generators`` draw the initial latents (one per image, or one
        drawing the whole batch) and any scheduler noise."""
        pipe = self.pipe
        height, width = cfg.resolve_size(pipe)
        text = encode(pipe, self.family, cfg, prompts, self.device, (height, width))
        if self.family == "flux":
            latents, timesteps, extra = prepare_flux(self.pipe, cfg.steps, text, len(prompts), (height, width),
                                                     generators, self.device)
        else:
            pipe.scheduler.set_timesteps(cfg.steps, device=self.device)
            timesteps = pipe.scheduler.timesteps
            latents = pipe.prepare_latents(
                len(prompts), self.denoiser.config.in_channels, height, width, text.embeds.dtype, self.device,
                generators, None,
            )
            extra = pipe.prepare_extra_step_kwargs(generators, cfg.eta) if self.family != "sd3" else {}
        if self.family == "sdxl" and hasattr(pipe.scheduler, "set_begin_index"):
            pipe.scheduler.set_begin_index(0)  # as StableDiffusionXLPipeline
        if implements(run_pm, "attnguide_initial_latents"):
            latents = initial_latents(run, run_pm, latents, timesteps[0],
                                      lambda z, b: self._forward_one(z, timesteps[0], text, b, run),
                                      float(getattr(pipe.scheduler, "init_noise_sigma", 1.0)))
        run.latents, run.timesteps = latents, [t.item() for t in timesteps]
        invoke(run_pm.hook.on_run_start, run=run)
        losses = [p for p in run.plugins if isinstance(p, LossPlugin)]
        encoder = (cached_encoder(pipe, self.family, cfg, (height, width), self.device)
                   if implements(run_pm, "attnguide_edit_embeddings") else None)
        started = time.perf_counter()
        bar = tqdm(total=len(timesteps), desc="denoising", disable=not progress, leave=False)
        for i, t in enumerate(timesteps):
            t_value = run.timesteps[i]  # read once before the loop: no device sync per step
            invoke(run_pm.hook.on_step_start, where=f"at step {i}", run=run, step=i, timestep=t_value)
            time_i = scheduler_time(pipe.scheduler, t_value)
            step_text = text if encoder is None else edited_conditioning(
                run, run_pm, text, i, t, cfg.steps, encoder, self._embeds_forward(run, text, t, i))
            if any(loss.active_at(i, cfg.steps, time_i) for loss in losses):  # else: no guidance forward
                latents = self._guidance_phase(run, run_pm, weights, latents, step_text, i, t, cfg.steps)
            latents = self._cfg_step(cfg, run, latents, step_text, i, t, extra)
            run.latents = latents
            invoke(run_pm.hook.on_step_end, where=f"at step {i}", run=run, step=i, timestep=t_value, latents=latents)
            bar.update(1)
        bar.close()
        run.timings["denoise_s"] = time.perf_counter() - started
        return latents

    def _guidance_phase(
        self, run: RunState, run_pm: Any, weights: dict[str, float], latents: torch.Tensor,
        text: Conditioning, step: int, t: torch.Tensor, num_steps: int,
    ) -> torch.Tensor:
        """Every image's guidance for this step: all images in one batch (``batch_guidance``),
        else one at a time (reference style, or a plugin replacing the latent update)."""
        contexts = []
        for b, record in enumerate(run.records):
            if record.analysis is None:
                raise ConfigError(f"prompt {record.prompt!r} has no analysis; guidance needs bindings")
            contexts.append(GuidanceContext(
                step, num_steps, run.timesteps[step], b, record.analysis, run.plugin_state.setdefault(b, {}),
                num_timesteps=len(run.timesteps), time=scheduler_time(self.pipe.scheduler, run.timesteps[step]),
                previous_maps=self._previous_maps(run, b, step),
            ))

        def forward(z: torch.Tensor, images: list[int]) -> list[torch.Tensor]:
            maps, extras = self._forward_maps(z, t, text, images, run, step)
            for b, extra in zip(images, extras):
                contexts[b].extra_maps = extra
            return maps

        together = self.batch_guidance and not self.reference_style and not custom_update(run_pm)
        groups = [list(range(len(contexts)))] if together else [[b] for b in range(len(contexts))]
        updated = []
        for group in groups:
            new, maps = guide_batch(run_pm, [contexts[b] for b in group], latents[group[0] : group[-1] + 1], forward,
                                    weights, [run.records[b] for b in group],
                                    repeat_refinement_forward=self.reference_style)
            for b, image_maps in zip(group, maps):
                if image_maps is not None:
                    run.guidance_maps.setdefault(step, {})[b] = image_maps.cpu()
            updated.append(new)
        return torch.cat(updated)

    def _forward_maps(self, z: torch.Tensor, t: torch.Tensor, text: Conditioning, images: list[int],
                      run: RunState, step: int | None = None) -> tuple[list[torch.Tensor], list[dict[Any, torch.Tensor]]]:
        """The conditional forward of ``images`` on ``z: [k, ...]`` (one row each) at ``t``: per
        image ``maps [tokens, H, W]`` and ``{MapRequest: maps}`` for the run's requests,
        differentiable w.r.t. ``z``."""
        self._set_rows([(b, "cond") for b in images], step)
        with self.store.capture(truncate=self.truncate_guidance, extras=True), self.fabric.autocast():
            predict(self.pipe, self.family, self.denoiser, self.store, z, t, rows_of(text.cond, images),
                    text.image_kwargs(images))
        maps = self.store.maps()
        extras = {request: store.maps() for request, store in self.store.extras.items()}
        views = [self._view(maps[k], run.records[b].prompt) for k, b in enumerate(images)]
        return views, [{request: m[k] for request, m in extras.items()} for k in range(len(images))]

    def _forward_one(self, z: torch.Tensor, t: torch.Tensor, text: Conditioning, b: int,
                     run: RunState) -> tuple[torch.Tensor, dict[Any, torch.Tensor]]:
        """``_forward_maps`` for image ``b`` alone: ``(maps [tokens, H, W], {MapRequest: maps})``."""
        maps, extras = self._forward_maps(z, t, text, [b], run)
        return maps[0], extras[0]

    def _embeds_forward(self, run: RunState, text: Conditioning, t: torch.Tensor,
                        step: int) -> Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]:
        """``(embeds [L, D], b) -> (prediction, maps [tokens, H, W])``: image ``b``'s conditional
        forward at ``t`` on its current latents with ``embeds`` (differentiable w.r.t. them)."""

        def forward(embeds: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
            assert run.latents is not None
            self._set_rows([(b, "cond")], step)
            with torch.enable_grad(), self.store.capture(), self.fabric.autocast():
                prediction = predict(self.pipe, self.family, self.denoiser, self.store,
                                     run.latents[b : b + 1].detach(), t, embeds[None], text.image_kwargs(b))
            return prediction, self._view(self.store.maps()[0], run.records[b].prompt)

        return forward

    def _set_rows(self, rows: list[tuple[int, str]], step: int | None) -> None:
        if self.store.modulation is not None:
            self.store.modulation.set_forward(rows, step)

    def _previous_maps(self, run: RunState, b: int, step: int) -> torch.Tensor | None:
        """Image ``b``'s maps of the last guided step before ``step`` (on the device), or None."""
        earlier = [s for s in run.guidance_maps if s < step and b in run.guidance_maps[s]]
        return run.guidance_maps[max(earlier)][b].to(self.device) if earlier else None

    @torch.no_grad()
    def _cfg_step(
        self, cfg: SamplingConfig, run: RunState, latents: torch.Tensor, text: Conditioning,
        step: int, t: torch.Tensor, extra: dict[str, Any],
    ) -> torch.Tensor:
        scheduler = self.pipe.scheduler
        batch = latents.shape[0]
        model_input = torch.cat([latents] * 2) if text.cfg else latents
        capture = step in run.capture_steps
        rows = slice(batch, None) if text.cfg else slice(None)
        branches = ([(b, "uncond") for b in range(batch)] if text.cfg else []) + [(b, "cond") for b in range(batch)]
        self._set_rows(branches, step)
        model = self.denoiser if self._captures(run) or self._compiled is None else self._compiled
        with self.store.capture(rows) if capture else contextlib.nullcontext(), self.fabric.autocast():
            noise = predict(self.pipe, self.family, model, self.store, model_input, t, text.embeds,
                            text.forward_kwargs())
        if capture:
            maps = self.store.maps()
            if self.family == "sd3":
                maps = torch.stack([self._view(m, r.prompt) for m, r in zip(maps, run.records)])
            run.step_maps[step] = maps.cpu()
        if text.cfg:
            uncond, conditional = noise.chunk(2)
            noise = uncond + cfg.guidance_scale * (conditional - uncond)
        stepped: torch.Tensor = scheduler.step(noise, t, latents, **extra, return_dict=False)[0]
        return stepped


def _intervenes(plugin: Any) -> bool:
    """Whether ``plugin`` implements a hook that hands it the prompt's analysis."""
    return any(callable(getattr(plugin, hook, None)) for hook in ("attnguide_initial_latents", "attnguide_edit_embeddings"))
