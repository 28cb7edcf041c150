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
from attnguide.toyworld.training import TextToImageModule, VAEModule, lr_factor


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
    loss, grounding = module.loss(torch.zeros(2, 3, 64, 64), ["a red circle", "a blue square"])
    assert float(grounding) == 0.0  # off by default
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
    # the default --grounding-weight 0.1 reached the UNet stage: its batches carried grounding targets
    assert record["args"]["grounding_weight"] == 0.1 and record["final_metrics"]["unet/grounding"] > 0


def test_saved_pipeline_loads_and_generates_through_the_engine(trained):
    from attnguide.engine.engine import Engine
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
    assert "must be at least 1 (0 only with --init-from)" in capsys.readouterr().err
    assert main(["toyworld", "train", "--out", str(tmp_path), "--lr", "0"]) == 2
    assert "--lr must be positive" in capsys.readouterr().err


def test_train_cli_names_a_missing_init_from_folder(tmp_path, capsys):
    assert main(["toyworld", "train", "--out", str(tmp_path), "--init-from", str(tmp_path / "nowhere"),
                 "--vae-steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "--init-from" in err and "nowhere" in err and "model_index.json missing" in err


def test_lr_factor_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    # total 1000, warm-up 100: step 0 -> 1/100, step 99 -> 1; then 0.05 + 0.95 * (1 + cos(pi p)) / 2
    assert lr_factor(0, 1000, warmup=100) == pytest.approx(0.01)
    assert lr_factor(99, 1000, warmup=100) == pytest.approx(1.0)
    assert lr_factor(100, 1000, warmup=100) == pytest.approx(1.0)
    assert lr_factor(550, 1000, warmup=100) == pytest.approx(0.05 + 0.95 * 0.5)  # halfway: cos(pi/2) = 0
    assert lr_factor(1000, 1000, warmup=100) == pytest.approx(0.05)
    assert lr_factor(5000, 1000, warmup=100) == pytest.approx(0.05)
    assert lr_factor(0, 20, warmup=100) == pytest.approx(0.5)  # short run: warm-up of 20 // 10 = 2 steps
    assert lr_factor(0, 100, warmup=0) == pytest.approx(1.0)  # the VAE's schedule: cosine from the start
    assert lr_factor(50, 100, warmup=0) == pytest.approx(0.525)


def test_ema_decay_warms_up_and_the_update_is_a_lerp(toy_models):
    module = TextToImageModule(*toy_models, ema_decay=0.999)
    assert module.ema_rate(0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert module.ema_rate(90) == pytest.approx(91 / 100)
    assert module.ema_rate(10**6) == pytest.approx(0.999)
    ema, live = next(module.ema_unet.parameters()), next(module.unet.parameters())
    before = ema.detach().clone()
    with torch.no_grad():
        live.add_(1.0)
    module.on_train_batch_end(None, None, 0)  # no trainer attached: global_step 0, decay 0.1
    assert torch.allclose(ema, 0.1 * before + 0.9 * live.detach())
    with torch.no_grad():
        live.sub_(1.0)
        ema.copy_(live)


def test_train_init_from_continues_a_trained_pipeline_and_records_its_origin(trained, tmp_path):
    out = tmp_path / "more"
    rc = main(["toyworld", "train", "--out", str(out), "--init-from", str(trained / "pipeline"), "--vae-steps", "0",
               "--unet-steps", "2", "--batch-size", "2", "--seed", "1", "--accelerator", "cpu"])
    assert rc == 0
    record = json.loads((out / "TRAINED_WITH.json").read_text())
    first = json.loads((trained / "TRAINED_WITH.json").read_text())
    assert record["init_from_record"] == first
    assert record["latent_scaling_factor"] == pytest.approx(first["latent_scaling_factor"])  # VAE kept
    assert "--init-from" in record["command"] and "vae/loss" not in record["final_metrics"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["unet-last.ckpt", "unet-step=2.ckpt"]
    from safetensors.torch import load_file
    old = load_file(next((trained / "pipeline" / "vae").glob("*.safetensors")))
    new = load_file(next((out / "pipeline" / "vae").glob("*.safetensors")))
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)


# -- toy world v2: a text encoder of several causal layers, trained and averaged --------------------
def test_v2_text_encoder_mixes_left_context_through_three_causal_layers():
    torch.manual_seed(0)
    one, three = toy_text_encoder(), toy_text_encoder(3)
    assert (one.config.num_hidden_layers, three.config.num_hidden_layers) == (1, 3)
    assert 4 * sum(parameter_counts(toy_vae(), toy_unet(), three).values()) <= MAX_WEIGHT_BYTES
    ids = torch.tensor([[49406, 736, 7117, 537, 1746, 3999, 49407]])  # <bos> red circle and blue square <eos>
    changed = ids.clone()
    changed[0, 1] = 1901  # "green" for "red"
    with torch.no_grad():
        a, b = three(ids)[0], three(changed)[0]
    assert torch.equal(a[0, 0], b[0, 0])  # causal: <bos> sees nothing after it
    assert not torch.allclose(a[0, 5], b[0, 5])  # "square" has absorbed the first word


def test_a_trained_text_encoder_gets_gradients_and_an_average_that_is_saved(toy_models):
    from attnguide.toyworld.training import saved_models

    vae, unet, _ = toy_models
    torch.manual_seed(0)
    module = TextToImageModule(vae, unet, toy_text_encoder(3), train_text_encoder=True)
    module.train()
    assert module.text_encoder.training and module.ema_text_encoder is not None
    assert not module.ema_text_encoder.training
    loss, _ = module.loss(torch.zeros(2, 3, 64, 64), ["a red circle", "a blue square"])
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.text_encoder.parameters())
    ema, live = next(module.ema_text_encoder.parameters()), next(module.text_encoder.parameters())
    before = ema.detach().clone()
    with torch.no_grad():
        live.add_(1.0)
    module.on_train_batch_end(None, None, 0)  # decay 0.1 at update 0, as the UNet's average
    assert torch.allclose(ema, 0.1 * before + 0.9 * live.detach())
    assert saved_models(module)[2] is module.ema_text_encoder and saved_models(module)[1] is module.ema_unet
    frozen = TextToImageModule(vae, unet, toy_text_encoder(), train_text_encoder=False)
    assert frozen.ema_text_encoder is None and saved_models(frozen)[2] is frozen.text_encoder
    module.zero_grad(set_to_none=True)


def test_train_cli_records_text_layers_and_rejects_zero(tmp_path, capsys):
    assert main(["toyworld", "train", "--out", str(tmp_path), "--text-layers", "0"]) == 2
    assert "--text-layers at least 1" in capsys.readouterr().err
    out = tmp_path / "v2"
    assert main(["toyworld", "train", "--out", str(out), "--vae-steps", "1", "--unet-steps", "1", "--batch-size", "2",
                 "--accelerator", "cpu", "--text-layers", "2", "--train-text-encoder"]) == 0
    record = json.loads((out / "TRAINED_WITH.json").read_text())
    assert record["args"]["text_layers"] == 2 and record["args"]["train_text_encoder"] is True
    assert record["command"][-3:] == ["--text-layers", "2", "--train-text-encoder"]
    config = json.loads((out / "pipeline" / "text_encoder" / "config.json").read_text())
    assert config["num_hidden_layers"] == 2
