"""Loading pipelines by name: tiny, a local directory, bad ids and paths."""

from __future__ import annotations

import pytest
import torch

from attnguide.errors import ModelLoadError
from attnguide.models.loading import load_pipeline, load_tokenizer
from attnguide.models.tiny import tiny_pipeline
from attnguide.models.tokenizer import VOCAB_SIZE


def test_tiny_pipeline_is_deterministic_for_a_seed():
    a, b = tiny_pipeline(seed=3), tiny_pipeline(seed=3)
    for (name, p), (_, q) in zip(a.unet.named_parameters(), b.unet.named_parameters()):
        assert torch.equal(p, q), name
    c = tiny_pipeline(seed=4)
    assert not torch.equal(next(a.unet.parameters()), next(c.unet.parameters()))


def test_tiny_tokenizer_is_the_real_clip_vocabulary():
    tok = load_tokenizer("tiny")
    assert len(tok) == VOCAB_SIZE
    ids = tok("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_tiny_cross_attention_has_contrast_for_guidance(tiny_pipe):
    from attnguide.engine.attention import AttentionStore, capture_attention

    store = AttentionStore(16)
    cond = tiny_pipe.encode_prompt("a pink sunflower and a yellow flamingo", "cpu", 1, False)[0]
    z = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with capture_attention(tiny_pipe.unet, store), store.capture():
        tiny_pipe.unet(z, 500, encoder_hidden_states=cond)
    maps = store.maps()[0, 1:8].flatten(1)
    p = maps / maps.sum(1, keepdim=True)
    entropy = -(p * p.log()).sum(1)
    assert entropy.mean() < torch.log(torch.tensor(256.0)) - 0.1  # far enough from uniform


def test_local_directory_loads_and_generates_identically(tmp_path, tiny_pipe):
    from attnguide.engine.engine import Engine

    tiny_pipe.save_pretrained(tmp_path / "model")
    loaded = load_pipeline(str(tmp_path / "model"), scheduler="ddim")
    tiny_pipe_ddim = load_pipeline("tiny", scheduler="ddim")
    a = Engine(loaded).generate("a cat", [0], steps=2, output_type="latent", progress=False).latents
    b = Engine(tiny_pipe_ddim).generate("a cat", [0], steps=2, output_type="latent", progress=False).latents
    assert torch.allclose(a, b, atol=1e-6)


def test_a_copy_of_the_shipped_toy_weights_loads_by_path_with_the_shipped_tokenizer(tmp_path):
    import shutil

    from attnguide.toyworld.model import WEIGHTS_DIR

    shutil.copytree(WEIGHTS_DIR, tmp_path / "toy")  # no tokenizer/ folder, as shipped
    pipe = load_pipeline(str(tmp_path / "toy"))
    assert pipe.tokenizer("a red circle").input_ids == load_tokenizer("toyworld")("a red circle").input_ids
    assert pipe.tokenizer.model_max_length == 77


@pytest.mark.parametrize("model,match", [
    ("/no/such/dir", "does not exist"),
    ("./missing.safetensors", "does not exist"),
    ("nobody/no-such-model", "cannot load model 'nobody/no-such-model'"),
])
def test_bad_model_names_give_one_clear_error(model, match, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=match):
        load_pipeline(model)


def test_unknown_scheduler_lists_the_known_ones():
    from attnguide.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown scheduler 'fast'.*ddim.*pndm"):
        load_pipeline("tiny", scheduler="fast")
