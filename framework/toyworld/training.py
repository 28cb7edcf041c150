"""Train the toy model on toy-world pairs with the Lightning Trainer: first the VAE, then the
UNet on the frozen VAE's latents. ``attnguide toyworld train`` calls ``train``.

Stage 1, ``VAEModule``: L1 reconstruction + ``kl_weight`` x KL, as SD's autoencoder minus the
GAN and perceptual terms (flat-coloured shapes need neither), on random ``crop`` x ``crop``
windows of the 64x64 scenes (the VAE is convolutional; crops quarter the cost of a step).
Stage 2, ``TextToImageModule``: SD's epsilon-prediction loss, ``||eps - unet(x_t, t, text)||^2``
with DDPM noise at uniform ``t``, weighted per sample by min-SNR-5 (Hang et al., 2023: the same
optimum, reached in fewer steps), captions replaced by "" with probability ``caption_dropout`` so
classifier-free guidance works at sampling time, plus ``grounding_weight`` x the token-grounding
loss (``attnguide.toyworld.grounding``) on the same forward's 16x16 cross-attention maps, which
makes each colour and shape token attend to its own object. The learning rate warms up over
``WARMUP_STEPS`` and then follows a cosine decay to 5% by the last step. The weights saved are an
exponential moving average of the UNet's (decay ``ema_decay``, warmed up as
``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early averages are not dominated by the
random initialisation), as in most diffusion training recipes.

``train(init_from=FOLDER)`` continues from a trained pipeline instead of random weights (the EMA
starts from its UNet; ``vae_steps=0`` keeps its VAE and latent scale as they are).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from transformers import CLIPTextModel

from ..engine.attention import AttentionStore, capture_attention
from ..models.assembly import SD_SCHEDULER_CONFIG
from ..models.tokenizer import clip_tokenizer
from .data import ToyWorldDataModule
from .grounding import GROUNDING_RESOLUTION, grounding_loss
from .model import (
    build_pipeline,
    load_toy_pipeline,
    parameter_counts,
    toy_text_encoder,
    toy_unet,
    toy_vae,
)

SCALE_BATCHES = 8  # batches of held-out scenes used to measure the latent standard deviation
MIN_SNR_GAMMA = 5.0
WARMUP_STEPS = 200


class VAEModule(lightning.LightningModule):  # type: ignore[misc]  # lightning is Any here (follow_imports=skip)
    """Autoencoder stage. Batches: ``{"image": [B, 3, 64, 64] in [-1, 1], ...}``."""

    def __init__(self, vae: AutoencoderKL, lr: float = 1e-3, kl_weight: float = 1e-6, crop: int | None = 32) -> None:
        super().__init__()
        self.vae, self.lr, self.kl_weight, self.crop = vae, lr, kl_weight, crop

    def random_crop(self, images: torch.Tensor) -> torch.Tensor:
        """One random ``crop`` x ``crop`` window per image of ``[B, 3, H, W]`` (torch's RNG, so seeded
        runs repeat); the whole image when ``crop`` is None or not smaller than it."""
        size = images.shape[-1]
        if self.crop is None or self.crop >= size:
            return images
        x, y = torch.randint(0, size - self.crop + 1, (2, images.shape[0])).tolist()
        return torch.stack([im[:, j:j + self.crop, i:i + self.crop] for im, i, j in zip(images, x, y)])

    def loss(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(total, l1, kl)`` scalars for ``images: [B, 3, H, W]``."""
        posterior = self.vae.encode(images).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample
        l1 = F.l1_loss(reconstruction, images)
        kl = posterior.kl().mean()
        return l1 + self.kl_weight * kl, l1, kl

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        total, l1, kl = self.loss(self.random_crop(batch["image"]))
        self.log_dict({"vae/loss": total, "vae/l1": l1, "vae/kl": kl}, prog_bar=True)
        return total

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with a cosine decay of the learning rate to 5% over the run's ``max_steps``."""
        optimiser = torch.optim.AdamW(self.vae.parameters(), lr=self.lr, weight_decay=0.0)
        total = max(int(self.trainer.max_steps), 1) if self._trainer is not None else 1
        decay = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: lr_factor(step, total, warmup=0))
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": decay, "interval": "step"}}


class TextToImageModule(lightning.LightningModule):  # type: ignore[misc]  # lightning is Any here (follow_imports=skip)
    """Diffusion stage on frozen-VAE latents ``[B, 4, 16, 16]`` scaled by ``vae.config.scaling_factor``."""

    def __init__(self, vae: AutoencoderKL, unet: UNet2DConditionModel, text_encoder: CLIPTextModel,
                 train_text_encoder: bool = False, caption_dropout: float = 0.1, lr: float = 6e-4,
                 ema_decay: float = 0.999, grounding_weight: float = 0.0) -> None:
        super().__init__()
        self.vae, self.unet, self.text_encoder = vae, unet, text_encoder
        self.train_text_encoder, self.caption_dropout, self.lr = train_text_encoder, caption_dropout, lr
        self.ema_decay, self.grounding_weight = ema_decay, grounding_weight
        self.attention = AttentionStore(resolution=GROUNDING_RESOLUTION)
        self.ema_unet = copy.deepcopy(unet).requires_grad_(False).eval()
        # a trained text encoder is averaged too, so the saved UNet reads the states it was averaged with
        self.ema_text_encoder = copy.deepcopy(text_encoder).requires_grad_(False).eval() if train_text_encoder else None
        self.vae.requires_grad_(False).eval()
        self.text_encoder.requires_grad_(train_text_encoder)
        self.tokenizer = clip_tokenizer()
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=SD_SCHEDULER_CONFIG["num_train_timesteps"],
            beta_start=SD_SCHEDULER_CONFIG["beta_start"],
            beta_end=SD_SCHEDULER_CONFIG["beta_end"],
            beta_schedule=SD_SCHEDULER_CONFIG["beta_schedule"],
        )

    def train(self, mode: bool = True) -> TextToImageModule:
        super().train(mode)
        self.vae.eval()  # frozen: Lightning puts the whole module in train mode each epoch
        self.ema_unet.eval()
        if self.ema_text_encoder is not None:
            self.ema_text_encoder.eval()
        if not self.train_text_encoder:
            self.text_encoder.eval()
        return self

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """Captions -> ``[B, 77, 64]`` last hidden states, as ``StableDiffusionPipeline.encode_prompt``."""
        ids = self.tokenizer(captions, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        hidden: torch.Tensor = self.text_encoder(ids)[0]
        return hidden

    def loss(self, images: torch.Tensor, captions: list[str], masks: torch.Tensor | None = None,
             positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(denoising, grounding)`` losses for one batch (``images: [B, 3, 64, 64]``): the
        min-SNR-weighted epsilon MSE, and - when ``masks [B, 3, 16, 16]`` and ``positions [B, 3, 2]``
        are given and ``grounding_weight > 0`` - ``grounding_loss`` on the 16x16 cross-attention maps
        of the same forward (captions dropped for classifier-free guidance name no token); else 0."""
        with torch.no_grad():
            latents = self.vae.encode(images).latent_dist.sample() * self.vae.config.scaling_factor
        dropped = (torch.rand(len(captions)) < self.caption_dropout).tolist()
        text = self.encode_text(["" if d else c for c, d in zip(captions, dropped)])
        noise = torch.randn_like(latents)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        if self.grounding_weight > 0 and masks is not None and positions is not None:
            with capture_attention(self.unet, self.attention), self.attention.capture():
                prediction = self.unet(noisy, t, encoder_hidden_states=text).sample
            named = positions.clone()
            named[torch.tensor(dropped, dtype=torch.bool, device=named.device)] = -1
            grounding = grounding_loss(self.attention.maps(), masks.to(self.device), named.to(self.device))
        else:
            prediction = self.unet(noisy, t, encoder_hidden_states=text).sample
            grounding = torch.zeros((), device=self.device)
        per_sample = F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * self.min_snr_weight(t)).mean(), grounding

    def min_snr_weight(self, t: torch.Tensor) -> torch.Tensor:
        """``min(SNR(t), gamma) / SNR(t)`` for epsilon prediction, ``SNR = abar / (1 - abar)``; ``[B]``."""
        abar: torch.Tensor = self.noise_scheduler.alphas_cumprod.to(self.device)[t]
        snr = abar / (1 - abar)
        return snr.clamp(max=MIN_SNR_GAMMA) / snr

    def ema_rate(self, updates: int) -> float:
        """The EMA decay for update number ``updates`` (0-based): ``min(decay, (1 + n) / (10 + n))``."""
        return min(self.ema_decay, (1.0 + updates) / (10.0 + updates))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """``ema = d * ema + (1 - d) * live`` after each optimiser step, ``d = ema_rate(step)``, for
        the UNet and (when trained) the text encoder."""
        decay = self.ema_rate(max(int(self.global_step) - 1, 0))
        pairs = [(self.ema_unet, self.unet)]
        if self.ema_text_encoder is not None:
            pairs.append((self.ema_text_encoder, self.text_encoder))
        with torch.no_grad():
            for averaged, trained in pairs:
                for ema, live in zip(averaged.parameters(), trained.parameters()):
                    ema.lerp_(live, 1.0 - decay)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        denoising, grounding = self.loss(batch["image"], list(batch["caption"]), batch.get("masks"),
                                         batch.get("positions"))
        loss = denoising + self.grounding_weight * grounding
        self.log_dict({"unet/loss": loss, "unet/denoising": denoising, "unet/grounding": grounding}, prog_bar=True)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        params = list(self.unet.parameters())
        if self.train_text_encoder:
            params += list(self.text_encoder.parameters())
        optimiser = torch.optim.AdamW(params, lr=self.lr, weight_decay=1e-2)
        total = max(int(self.trainer.max_steps), 1) if self._trainer is not None else 1
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: lr_factor(step, total))
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def lr_factor(step: int, total: int, warmup: int = WARMUP_STEPS, floor: float = 0.05) -> float:
    """Learning-rate multiplier at optimiser step ``step`` of ``total``: linear warm-up to 1 over
    ``warmup`` steps, then cosine decay to ``floor`` at ``total`` (warm-up shortened to a tenth of
    short runs)."""
    warmup = min(warmup, max(total // 10, 1))
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class PipelineSnapshot(Callback):  # type: ignore[misc]  # lightning is Any here (follow_imports=skip)
    """Every ``every`` steps of the diffusion stage, save the EMA weights as a loadable pipeline
    in ``folder`` (written beside it, then renamed), so an interrupted run leaves a usable model."""

    def __init__(self, folder: Path, every: int) -> None:
        self.folder, self.every = Path(folder), every

    def on_train_batch_end(self, trainer: lightning.Trainer, module: TextToImageModule, *args: Any) -> None:
        if trainer.global_step % self.every == 0 and trainer.is_global_zero:
            save_pipeline(module, self.folder)


class LineProgress(Callback):  # type: ignore[misc]  # lightning is Any here (follow_imports=skip)
    """One line per ``every`` steps on stderr (step, loss, seconds per step, time left), for
    logs and pipes where a progress bar would not show."""

    def __init__(self, stage: str, every: int = 50) -> None:
        self.stage, self.every, self.started = stage, every, 0.0

    def on_train_start(self, trainer: lightning.Trainer, module: lightning.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: lightning.Trainer, module: lightning.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every and step != trainer.max_steps:
            return
        per_step = (time.perf_counter() - self.started) / max(step, 1)
        losses = " ".join(f"{k}={float(v):.4f}" for k, v in trainer.callback_metrics.items() if k.startswith(self.stage))
        print(f"[{self.stage}] step {step}/{trainer.max_steps} {losses} {per_step:.2f} s/step, "
              f"{per_step * (trainer.max_steps - step) / 60:.0f} min left", file=sys.stderr, flush=True)


def saved_models(module: TextToImageModule) -> list[torch.nn.Module]:
    """The models a pipeline is saved from: the VAE, the EMA UNet and the text encoder (its EMA
    when it was trained)."""
    text = module.ema_text_encoder if module.ema_text_encoder is not None else module.text_encoder
    return [module.vae, module.ema_unet, text]


def save_pipeline(module: TextToImageModule, folder: Path) -> None:
    """Write ``saved_models(module)`` (fp32 safetensors) to ``folder`` atomically."""
    models = [copy.deepcopy(m).cpu().eval().requires_grad_(False) for m in saved_models(module)]
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_pipeline(*models).save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


@torch.no_grad()
def set_latent_scale(vae: AutoencoderKL, loader: Any, device: torch.device | str = "cpu") -> float:
    """Set ``vae.config.scaling_factor`` to 1 / std of sampled latents (SD's 0.18215, measured)."""
    vae.to(device).eval()
    latents = [vae.encode(batch["image"].to(device)).latent_dist.sample()
               for _, batch in zip(range(SCALE_BATCHES), loader)]
    scale = float(1.0 / torch.cat(latents).std().clamp_min(1e-6))
    vae.register_to_config(scaling_factor=scale)
    return scale


def _trainer(out: Path, stage: str, steps: int, accelerator: str, precision: str,
             extra: Sequence[Callback] = ()) -> lightning.Trainer:
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", filename=stage + "-{step}",
                                 every_n_train_steps=min(steps, 500), save_top_k=-1, save_last=True)
    checkpoint.CHECKPOINT_NAME_LAST = stage + "-last"  # the final step, whatever the step count
    interactive = sys.stderr.isatty()
    progress = [] if interactive else [LineProgress(stage)]
    return lightning.Trainer(
        max_steps=steps, accelerator=accelerator, devices=1, precision=precision,
        default_root_dir=out, callbacks=[checkpoint, *progress, *extra], logger=CSVLogger(out, name="logs", version=stage),
        log_every_n_steps=min(steps, 50), limit_val_batches=0, num_sanity_val_steps=0,
        enable_progress_bar=interactive, enable_model_summary=False,
    )


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the checkout this module lives in, or None outside git."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def train(out_dir: str | Path, vae_steps: int = 2500, unet_steps: int = 3500, batch_size: int = 32, seed: int = 0,
          accelerator: str = "auto", *, num_workers: int = 0, train_text_encoder: bool = False,
          objects: tuple[int, int] = (1, 2), precision: str = "32-true", lr: float = 6e-4,
          init_from: str | Path | None = None, grounding_weight: float = 0.1, text_layers: int = 1,
          command: list[str] | None = None) -> Path:
    """Train VAE then UNet (and the text encoder if ``train_text_encoder``) on scenes of
    ``objects`` objects; write ``out_dir/{checkpoints, logs, pipeline, TRAINED_WITH.json}`` (and
    ``pipeline`` snapshots every 500 diffusion steps); return the pipeline folder (load it with
    ``load_pipeline``).

    ``text_layers``: causal layers of a new text encoder (1 for toy world v1, 3 in the v2 attempt of
    docs/toyworld.md; ignored with ``init_from``, whose encoder is kept).
    ``init_from``: a trained toy pipeline folder to continue from instead of random weights; then
    ``vae_steps`` may be 0 (keep its VAE and latent scale), and the folder's ``TRAINED_WITH.json``
    (or its parent's) is kept in this run's record under ``"init_from_record"``.
    """
    least_vae = 0 if init_from is not None else 1
    if vae_steps < least_vae or min(unet_steps, batch_size, text_layers) < 1:
        raise ValueError(f"vae_steps must be at least {least_vae}, unet_steps, batch_size and text_layers at least 1")
    args = {"out_dir": str(out_dir), "vae_steps": vae_steps, "unet_steps": unet_steps, "batch_size": batch_size,
            "seed": seed, "accelerator": accelerator, "num_workers": num_workers,
            "train_text_encoder": train_text_encoder, "objects": list(objects), "precision": precision, "lr": lr,
            "init_from": None if init_from is None else str(init_from), "grounding_weight": grounding_weight,
            "text_layers": text_layers}
    commit = git_commit()  # the code this run starts with (the checkout may move on while it trains)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lightning.seed_everything(seed, workers=True, verbose=False)
    data = ToyWorldDataModule(batch_size, num_workers=num_workers, seed=seed, objects=objects)
    if init_from is None:
        vae, unet, text_encoder = toy_vae(), toy_unet(), toy_text_encoder(text_layers)
    else:
        start = load_toy_pipeline(init_from)
        vae, unet, text_encoder = start.vae, start.unet.train(), start.text_encoder  # from_pretrained gives eval mode

    vae_trainer = None
    scale = float(vae.config.scaling_factor)
    if vae_steps > 0:
        vae_trainer = _trainer(out, "vae", vae_steps, accelerator, precision)
        vae_trainer.fit(VAEModule(vae), train_dataloaders=data.train_dataloader())
        scale = set_latent_scale(vae, data.val_dataloader(), vae_trainer.strategy.root_device)

    pipeline_dir = out / "pipeline"
    module = TextToImageModule(vae, unet, text_encoder, train_text_encoder, lr=lr, grounding_weight=grounding_weight)
    unet_trainer = _trainer(out, "unet", unet_steps, accelerator, precision,
                            [PipelineSnapshot(pipeline_dir, min(unet_steps, 500))])
    unet_data = ToyWorldDataModule(batch_size, num_workers=num_workers, seed=seed, objects=objects,
                                   grounding=grounding_weight > 0)  # the VAE stage needs no grounding targets
    unet_trainer.fit(module, train_dataloaders=unet_data.train_dataloader())
    save_pipeline(module, pipeline_dir)
    models = saved_models(module)
    record = {
        "command": command if command is not None else sys.argv,
        "args": args,
        "git_commit": commit,
        "parameters": parameter_counts(*models),
        "latent_scaling_factor": scale,
        "final_metrics": {k: float(v) for t in (vae_trainer, unet_trainer) if t is not None
                          for k, v in t.callback_metrics.items()},
    }
    if init_from is not None:
        record["init_from_record"] = previous_record(Path(init_from))
    (out / "TRAINED_WITH.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return pipeline_dir


def previous_record(pipeline_dir: Path) -> dict[str, Any] | None:
    """The ``TRAINED_WITH.json`` that describes ``pipeline_dir``: in it (shipped weights) or beside
    it (a ``train`` output folder); None when there is none."""
    for candidate in (pipeline_dir / "TRAINED_WITH.json", pipeline_dir.parent / "TRAINED_WITH.json"):
        if candidate.is_file():
            record: dict[str, Any] = json.loads(candidate.read_text(encoding="utf-8"))
            return record
    return None
