"""The full-size benchmark architectures (benchmarks/models.py) match the published models.

Built on the meta device: shapes and parameter counts without memory or compute. The counts are
those of the published checkpoints (SDXL base 1.0, SD3-medium, Flux-dev and their text encoders).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import models

PUBLISHED = {  # parameters of the published checkpoints
    "sdxl_unet": 2.567e9,  # stabilityai/stable-diffusion-xl-base-1.0 unet: 2,567,463,684
    "sd3_transformer": 2.028e9,  # stabilityai/stable-diffusion-3-medium-diffusers transformer: 2,028,328,000
    "flux_transformer": 11.90e9,  # black-forest-labs/FLUX.1-dev transformer: 11,901,408,320
    "clip_l": 123.1e6,  # openai/clip-vit-large-patch14 text model: 123,060,480
    "clip_bigg": 694.7e6,  # OpenCLIP ViT-bigG/14 text model with projection: 694,659,840
    "t5_xxl": 4.76e9,  # google/t5-v1_1-xxl encoder: 4,762,310,656
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("builder", sorted(PUBLISHED))
def test_full_size_module_has_the_published_parameter_count(builder):
    with torch.device("meta"):
        module = getattr(models, builder)()
    assert next(module.parameters()).is_meta
    assert _count(module) == pytest.approx(PUBLISHED[builder], rel=0.01)


def test_full_size_pipelines_assemble_on_meta_with_their_families_and_1024px():
    from attnguide.models.families import denoiser, family_of, native_size

    for name in models.FULL_SIZE_MODELS:
        pipe = models.full_size_pipeline(name, device="meta")
        assert family_of(pipe) == name and native_size(pipe) == 1024
        assert next(denoiser(pipe).parameters()).dtype == torch.bfloat16
    assert torch.get_default_dtype() == torch.float32  # placement restored


def test_sdxl_unet_has_70_cross_attention_layers_60_of_them_32x32_at_1024px():
    """A meta forward at 1024 px (128x128 latents) gives each attn2 layer's query count."""
    from attnguide.models.families import default_attention_resolution

    pipe = models.full_size_pipeline("sdxl", device="meta")
    unet = pipe.unet
    queries: dict[str, int] = {}
    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            module.register_forward_pre_hook(
                lambda mod, args, kwargs, name=name: queries.__setitem__(name, (args or [kwargs["hidden_states"]])[0].shape[1]),
                with_kwargs=True,
            )
    with models.placed("meta", torch.bfloat16), torch.no_grad():
        out = unet(torch.empty(1, 4, 128, 128), torch.tensor(999.0), encoder_hidden_states=torch.empty(1, 77, 2048),
                   added_cond_kwargs={"text_embeds": torch.empty(1, 1280), "time_ids": torch.empty(1, 6)}).sample
    assert tuple(out.shape) == (1, 4, 128, 128)
    assert len(queries) == 70 and Counter(queries.values()) == {32 * 32: 60, 64 * 64: 10}
    lowest = Counter(n.split(".attentions")[0] for n, q in queries.items() if q == 32 * 32)
    assert lowest == {"down_blocks.2": 2 * 10, "mid_block": 10, "up_blocks.0": 3 * 10}
    assert default_attention_resolution(pipe) == 32  # the engine captures exactly those 60


@pytest.mark.parametrize("name", ["sdxl", "sd3", "flux"])
def test_full_size_models_refuse_to_build_without_cuda(monkeypatch, name):
    from attnguide.errors import ModelLoadError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match=rf"^{name} needs a CUDA GPU: .*; use tiny-{name} on CPU$"):
        models.build(name)


def test_benchmark_cli_lists_every_model_and_refuses_full_size_without_cuda(monkeypatch, capsys):
    from benchmarks.guidance import QUICK_MODELS, SIZES, main

    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(name in help_text for name in models.MODELS)
    assert set(SIZES) == set(models.MODELS) and SIZES["sdxl"] == SIZES["sd3"] == SIZES["flux"] == 1024
    assert {"tiny", *models.FAMILY_MODELS} <= set(QUICK_MODELS)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        main(["--models", "tiny,flux", "--steps", "1", "--repeats", "1"])  # refused before tiny runs
    assert exit_info.value.code == 2
    assert "flux needs a CUDA GPU" in capsys.readouterr().err
