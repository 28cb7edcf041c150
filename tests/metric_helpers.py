"""Tiny random CLIP and BLIP-VQA scorers built from configs: no download, a second to build."""

from __future__ import annotations

import functools

import pytest
import torch

@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run in one thread: their matmuls are too small to share, and on a busy
    2-core machine two threads waiting on each other made a 0.4 s evaluation take 10 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


BLIP_WORDS = ["yes", "no", "is", "there", "a", "an", "red", "blue", "green", "pink", "yellow", "car", "dog",
              "cat", "cube", "bench", "sunflower", "flamingo", "?", "and", "with"]


@functools.lru_cache(maxsize=1)
def tiny_clip_parts():
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from attnguide.models.tokenizer import VOCAB_SIZE, clip_tokenizer

    text = dict(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                pad_token_id=49407)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=images, tokenizer=clip_tokenizer())


def tiny_clip_scorer(**kwargs):
    from attnguide.metrics import ClipScorer

    model, processor = tiny_clip_parts()
    return ClipScorer(model, processor, **kwargs)


@functools.lru_cache(maxsize=1)
def tiny_blip_parts():
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessorPil, BlipProcessor

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BLIP_WORDS]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    text = dict(vocab_size=len(vocab) + 1, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=64, bos_token_id=len(vocab), sep_token_id=3,
                pad_token_id=0, encoder_hidden_size=32)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision)).eval()
    images = BlipImageProcessorPil(size={"height": 32, "width": 32})
    return model, BlipProcessor(image_processor=images, tokenizer=tokenizer)


def tiny_vqa_scorer(**kwargs):
    from attnguide.metrics import BlipVqaScorer

    model, processor = tiny_blip_parts()
    return BlipVqaScorer(model, processor, **kwargs)


def make_run_dir(root, cells=("method-none", "method-syngen"), prompts=("a red car and a blue dog", "a cat with a green bench"),
                 seeds=(0, 1, 2), *, results=True, losses=True):
    """A run directory in ``attnguide run``'s layout with random-noise images (no engine).

    Returns the run directory. Images are 48x48; ``losses`` adds per-step ``syngen`` values to
    every cell except the first.
    """
    import json

    import numpy as np
    from PIL import Image

    from attnguide.runs.jobs import prompt_stems

    run_dir = root / "run"
    stems = prompt_stems(list(prompts))
    rng = np.random.default_rng(0)
    rows = []
    (run_dir / "recipe.resolved.yaml").parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.resolved.yaml").write_text(
        "name: run\nprompts:\n" + "".join(f"- {p}\n" for p in prompts) + "seeds: [0, 1, 2]\n", encoding="utf-8")
    for c, cell in enumerate(cells):
        folder = run_dir / cell
        folder.mkdir(parents=True, exist_ok=True)
        for prompt in prompts:
            for seed in seeds:
                name = f"{stems[prompt]}_s{seed}"
                Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / f"{name}.png")
                terms = [{"step": s, "refinement": 0, "plugin": "syngen", "value": 1.0 / (s + 1) + seed * 0.01}
                         for s in range(4)] if (losses and c) else []
                meta = {"cell": cell, "cell_labels": {"method": cell.split("-", 1)[-1]}, "prompt": prompt,
                        "seed": seed, "losses": terms, "files": {"image": f"{name}.png"}}
                (folder / f"{name}.json").write_text(json.dumps(meta), encoding="utf-8")
                rows.append({"cell": cell, "prompt": prompt, "seed": seed, "status": "ok",
                             "image": f"{cell}/{name}.png", "metadata": f"{cell}/{name}.json"})
    if results:
        (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return run_dir
