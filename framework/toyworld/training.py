"""Train the toy model on toy-world pairs with the Lightning Trainer: first the VAE, then the
UNet (and text encoder) on the frozen VAE's latents. ``attnguide toyworld train`` calls ``train``.

Stage 1, ``VAEModule``: L1 reconstruction + ``kl_weight`` x KL, as SD's autoencoder minus the
GAN and perceptual terms (flat-coloured shapes need neither).
Stage 2, ``TextToImageModule``: SD's epsilon-prediction loss, ``||eps - unet(x_t, t, text)||^2``
with DDPM noise at uniform ``t``, captions replaced by "" with probability ``caption_dropout`` so
classifier-free guidance works at sampling time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from transformers import CLIPTextModel

from attnguide.models.assembly import SD_SCHEDULER_CONFIG
from attnguide.models.tokenizer import clip_tokenizer
from attnguide.toyworld.data import ToyWorldDataModule
from attnguide.toyworld.model import build_pipeline, parameter_counts, toy_text_encoder, toy_unet, toy_vae

SCALE_BATCHES = 8  # batches of held-out scenes used to measure the latent standard deviation


class VAEModule(lightning.LightningModule):
    """Autoencoder stage. Batches: ``{"image": [B, 3, 64, 64] in [-1, 1], ...}``."""

    def __init__(self, vae: AutoencoderKL, lr: float = 1e-3, kl_weight: float = 1e-6) -> None:
        super().__init__()
        self.vae, self.lr, self.kl_weight = vae, lr, kl_weight

    def loss(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(total, l1, kl)`` scalars for ``images: [B, 3, H, W]``."""
        posterior = self.vae.encode(images).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample
        l1 = F.l1_loss(reconstruction, images)
        kl = posterior.kl().mean()
        return l1 + self.kl_weight * kl, l1, kl

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        total, l1, kl = self.loss(batch["image"])
        self.log_dict({"vae/loss": total, "vae/l1": l1, "vae/kl": kl}, prog_bar=True)
        return total

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.vae.parameters(), lr=self.lr, weight_decay=0.0)


class TextToImageModule(lightning.LightningModule):
    """Diffusion stage on frozen-VAE latents ``[B, 4, 16, 16]`` scaled by ``vae.config.scaling_factor``."""

    def __init__(self, vae: AutoencoderKL, unet: UNet2DConditionModel, text_encoder: CLIPTextModel,
                 train_text_encoder: bool = True, caption_dropout: float = 0.1, lr: float = 3e-4) -> None:
        super().__init__()
        self.vae, self.unet, self.text_encoder = vae, unet, text_encoder
        self.train_text_encoder, self.caption_dropout, self.lr = train_text_encoder, caption_dropout, lr
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
        if not self.train_text_encoder:
            self.text_encoder.eval()
        return self

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """Captions -> ``[B, 77, 64]`` last hidden states, as ``StableDiffusionPipeline.encode_prompt``."""
        ids = self.tokenizer(captions, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return self.text_encoder(ids)[0]

    def loss(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """Epsilon-prediction MSE for one batch (``images: [B, 3, 64, 64]``)."""
        with torch.no_grad():
            latents = self.vae.encode(images).latent_dist.sample() * self.vae.config.scaling_factor
        dropped = (torch.rand(len(captions)) < self.caption_dropout).tolist()
        text = self.encode_text(["" if d else c for c, d in zip(captions, dropped)])
        noise = torch.randn_like(latents)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        return F.mse_loss(self.unet(noisy, t, encoder_hidden_states=text).sample, noise)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch["image"], list(batch["caption"]))
        self.log("unet/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = list(self.unet.parameters())
        if self.train_text_encoder:
            params += list(self.text_encoder.parameters())
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=1e-2)


@torch.no_grad()
def set_latent_scale(vae: AutoencoderKL, loader: Any, device: torch.device | str = "cpu") -> float:
    """Set ``vae.config.scaling_factor`` to 1 / std of sampled latents (SD's 0.18215, measured)."""
    vae.to(device).eval()
    latents = [vae.encode(batch["image"].to(device)).latent_dist.sample()
               for _, batch in zip(range(SCALE_BATCHES), loader)]
    scale = float(1.0 / torch.cat(latents).std().clamp_min(1e-6))
    vae.register_to_config(scaling_factor=scale)
    return scale


def _trainer(out: Path, stage: str, steps: int, accelerator: str, precision: str) -> lightning.Trainer:
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", filename=stage + "-{step}",
                                 every_n_train_steps=min(steps, 1000), save_top_k=-1, save_last=True)
    checkpoint.CHECKPOINT_NAME_LAST = stage + "-last"  # the final step, whatever the step count
    return lightning.Trainer(
        max_steps=steps, accelerator=accelerator, devices=1, precision=precision,
        default_root_dir=out, callbacks=[checkpoint], logger=CSVLogger(out, name="logs", version=stage),
        log_every_n_steps=min(steps, 50), limit_val_batches=0, num_sanity_val_steps=0,
        enable_progress_bar=True, enable_model_summary=False,
    )


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the checkout this module lives in, or None outside git."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def train(out_dir: str | Path, vae_steps: int = 5000, unet_steps: int = 50000, batch_size: int = 64, seed: int = 0,
          accelerator: str = "auto", *, num_workers: int = 0, train_text_encoder: bool = True,
          precision: str = "32-true", command: list[str] | None = None) -> Path:
    """Train VAE then UNet (+ text encoder), write ``out_dir/{checkpoints, logs, pipeline,
    TRAINED_WITH.json}``; return the pipeline folder (load it with ``load_pipeline``)."""
    if min(vae_steps, unet_steps, batch_size) < 1:
        raise ValueError("vae_steps, unet_steps and batch_size must be at least 1")
    args = {"out_dir": str(out_dir), "vae_steps": vae_steps, "unet_steps": unet_steps, "batch_size": batch_size,
            "seed": seed, "accelerator": accelerator, "num_workers": num_workers,
            "train_text_encoder": train_text_encoder, "precision": precision}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lightning.seed_everything(seed, workers=True, verbose=False)
    data = ToyWorldDataModule(batch_size, num_workers=num_workers, seed=seed)
    vae, unet, text_encoder = toy_vae(), toy_unet(), toy_text_encoder()

    vae_trainer = _trainer(out, "vae", vae_steps, accelerator, precision)
    vae_trainer.fit(VAEModule(vae), train_dataloaders=data.train_dataloader())
    scale = set_latent_scale(vae, data.val_dataloader(), vae_trainer.strategy.root_device)

    unet_trainer = _trainer(out, "unet", unet_steps, accelerator, precision)
    unet_trainer.fit(TextToImageModule(vae, unet, text_encoder, train_text_encoder),
                     train_dataloaders=data.train_dataloader())

    models = [m.cpu().eval().requires_grad_(False) for m in (vae, unet, text_encoder)]
    pipeline_dir = out / "pipeline"
    build_pipeline(*models).save_pretrained(pipeline_dir, safe_serialization=True)
    record = {
        "command": command if command is not None else sys.argv,
        "args": args,
        "git_commit": git_commit(),
        "parameters": parameter_counts(*models),
        "latent_scaling_factor": scale,
        "final_metrics": {k: float(v) for t in (vae_trainer, unet_trainer) for k, v in t.callback_metrics.items()},
    }
    (out / "TRAINED_WITH.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return pipeline_dir
