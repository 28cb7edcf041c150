"""The toy model's data, architecture and training loop (docs/toyworld.md, "Model and training").

Training runs are a few steps on the CPU: they check the plumbing (checkpoints, the saved
pipeline loading back into the engine), not the quality of the model.
"""

from __future__ import annotations

import json

import pytest
import torch

from attnguide.cli.main import main
from attnguide.toyworld import sample
from attnguide.toyworld.data import TRAIN_SEED_OFFSET, ToyWorldDataModule, ToyWorldDataset, image_to_tensor
from attnguide.toyworld.model import (
    LATENT_SIZE,
    MAX_WEIGHT_BYTES,
    build_pipeline,
    parameter_counts,
    toy_text_encoder,
    toy_unet,
    toy_vae,
)
from attnguide.toyworld.training import TextToImageModule, VAEModule


@pytest.fixture(scope="module")
def toy_models():
    torch.manual_seed(0)
    return toy_vae(), toy_unet(), toy_text_encoder()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_train")
    rc = main(["toyworld", "train", "--out", str(out), "--vae-steps", "3", "--unet-steps", "3",
               "--batch-size", "4", "--seed", "0", "--accelerator", "cpu"])
    assert rc == 0
    return out


def test_dataset_item_is_the_seeded_render_as_a_tensor_in_minus_one_to_one():
    dataset = ToyWorldDataset(first_seed=500, length=10, objects=(1, 3))
    item = dataset[4]
    image, caption, _ = sample(504, 1 + 4 % 3)
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1.0 and item["image"].max() <= 1.0
    assert item["caption"] == caption and item["seed"] == 504
    assert torch.equal(item["image"], image_to_tensor(image))
    assert torch.equal(dataset[4]["image"], ToyWorldDataset(500, 10)[4]["image"])


def test_dataset_cycles_object_counts_and_rejects_bad_ranges():
    dataset = ToyWorldDataset(first_seed=0, length=6, objects=(2, 3))
    counts = [dataset[i]["caption"].count(" and ") + dataset[i]["caption"].count(" next to ")
              + dataset[i]["caption"].count(" with ") + dataset[i]["caption"].count(", ") + 1 for i in range(6)]
    assert counts == [2, 3, 2, 3, 2, 3]
    with pytest.raises(ValueError):
        ToyWorldDataset(0, 10, objects=(0, 3))
    with pytest.raises(IndexError):
        dataset[6]


def test_datamodule_batches_have_the_right_shapes_and_are_deterministic():
    first = next(iter(ToyWorldDataModule(batch_size=4, seed=1).train_dataloader()))
    again = next(iter(ToyWorldDataModule(batch_size=4, seed=1).train_dataloader()))
    other = next(iter(ToyWorldDataModule(batch_size=4, seed=2).train_dataloader()))
    assert first["image"].shape == (4, 3, 64, 64)
    assert len(first["caption"]) == 4 and all(isinstance(c, str) for c in first["caption"])
    assert torch.equal(first["image"], again["image"]) and first["caption"] == again["caption"]
    assert not torch.equal(first["image"], other["image"])
    assert int(first["seed"].min()) >= TRAIN_SEED_OFFSET  # evaluation seeds are never trained on


def test_all_weights_fit_in_25_mib_as_fp32(toy_models):
    counts = parameter_counts(*toy_models)
    assert counts == {"AutoencoderKL": 242_327, "UNet2DConditionModel": 1_077_572, "CLIPTextModel": 3_217_152}
    assert 4 * sum(counts.values()) <= MAX_WEIGHT_BYTES


def test_vae_downsamples_by_four_and_unet_cross_attends_at_16_and_8(toy_models):
    vae, unet, text_encoder = toy_models
    assert vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean.shape == (1, 4, LATENT_SIZE, LATENT_SIZE)
    query_lengths = set()
    hooks = [m.register_forward_hook(lambda mod, inp, out: query_lengths.add(inp[0].shape[1]))
             for name, m in unet.named_modules() if name.endswith("attn2")]
    with torch.no_grad():
        unet(torch.zeros(1, 4, 16, 16), 10, encoder_hidden_states=torch.zeros(1, 77, 64))
    for h in hooks:
        h.remove()
    assert query_lengths == {16 * 16, 8 * 8}
    assert text_encoder.config.num_hidden_layers == 1
    assert build_pipeline(*toy_models).vae_scale_factor == 4


def test_vae_loss_decreases_over_20_steps_on_a_fixed_batch():
    torch.manual_seed(0)
    module = VAEModule(toy_vae())
    images = next(iter(ToyWorldDataModule(batch_size=4, seed=0).train_dataloader()))["image"]
    optimiser = module.configure_optimizers()["optimizer"]
    losses = []
    for _ in range(20):
        loss = module.loss(images)[0]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


def test_text_to_image_module_trains_only_the_unet_when_the_text_encoder_is_frozen(toy_models):
    module = TextToImageModule(*toy_models, train_text_encoder=False)
    module.train()
    assert not module.vae.training and not module.text_encoder.training and module.unet.training
    loss = module.loss(torch.zeros(2, 3, 64, 64), ["a red circle", "a blue square"])
    loss.backward()
    assert all(p.grad is None for p in module.vae.parameters())
    assert all(p.grad is None for p in module.text_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.unet.parameters())
    module.unet.zero_grad(set_to_none=True)


def test_train_writes_checkpoints_pipeline_and_record(trained):
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == [
        "unet-last.ckpt", "unet-step=3.ckpt", "vae-last.ckpt", "vae-step=3.ckpt"]
    assert (trained / "pipeline" / "model_index.json").is_file()
    weights = list((trained / "pipeline").rglob("*.safetensors"))
    assert len(weights) == 3 and sum(w.stat().st_size for w in weights) <= MAX_WEIGHT_BYTES
    record = json.loads((trained / "TRAINED_WITH.json").read_text())
    assert record["command"][:3] == ["attnguide", "toyworld", "train"]
    assert record["args"]["vae_steps"] == 3 and record["args"]["batch_size"] == 4
    assert "git_commit" in record and record["latent_scaling_factor"] > 0
    assert {"vae/loss", "unet/loss"} <= set(record["final_metrics"])


def test_saved_pipeline_loads_and_generates_through_the_engine(trained):
    from attnguide.engine import Engine
    from attnguide.models.loading import load_pipeline

    pipe = load_pipeline(str(trained / "pipeline"))
    record = json.loads((trained / "TRAINED_WITH.json").read_text())
    assert pipe.vae.config.scaling_factor == pytest.approx(record["latent_scaling_factor"])
    result = Engine(pipe).generate("a red circle", [0], steps=2, height=64, width=64,
                                   output_type="latent", progress=False)
    latents = torch.as_tensor(result.latents)
    assert latents.shape == (1, 4, 16, 16) and torch.isfinite(latents).all()


def test_train_cli_rejects_non_positive_steps(tmp_path, capsys):
    assert main(["toyworld", "train", "--out", str(tmp_path), "--vae-steps", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err
