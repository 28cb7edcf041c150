"""Issue 18 on the CPU: sweeps in batches, nothing installed when unguided, and the GPU fast
path options (compile, channels-last) harmless here."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from attnguide import Engine, RuntimeConfig, load_pipeline
from attnguide.runs.recipe import check_output_dir, load_recipe
from attnguide.runs.runner import batches, run_recipe
from recipe_helpers import registry

PROMPTS = ["a red dog and a blue frog", "a pink sunflower and a yellow flamingo", "a green cat and a white bowl"]
OVERRIDES = ["model=tiny", "sampling.steps=3", "sampling.height=256", "sampling.width=256", "save_latents=true",
             f"prompts=[{', '.join(PROMPTS)}]", "seeds=[0]"]


def run(tmp_path, *overrides):
    loaded = load_recipe("syngen_sd14", [*OVERRIDES, *overrides, f"output_dir={tmp_path}"], registry=registry())
    check_output_dir(loaded, create=True)
    return loaded, run_recipe(loaded, progress=False, report=lambda *_: None)


def latents_of(run_dir):
    return {p.name: load_file(str(p))["latents"] for p in sorted(run_dir.rglob("*.latents.safetensors"))}


def test_a_sweep_runs_in_batches_and_matches_one_image_at_a_time(tmp_path, monkeypatch):
    from attnguide.engine.engine import Engine as EngineClass

    sizes = []
    original = EngineClass.generate

    def spy(self, prompts, *args, **kwargs):
        sizes.append(len(prompts))
        return original(self, prompts, *args, **kwargs)

    monkeypatch.setattr(EngineClass, "generate", spy)
    loaded, summary = run(tmp_path / "b2", "runtime.batch_size=2")
    assert summary.written == 3 and summary.failed == 0
    assert sizes == [2, 1]  # three images of one cell in batches of two
    meta = json.loads(next(loaded.run_dir.rglob("*_s0.json")).read_text())
    assert meta["batch_size"] in (1, 2)
    sizes.clear()
    single, _ = run(tmp_path / "b1")
    assert sizes == [1, 1, 1]
    batched, alone = latents_of(loaded.run_dir), latents_of(single.run_dir)
    assert batched.keys() == alone.keys() and len(batched) == 3
    for name in alone:
        scale = alone[name].abs().max()
        assert (batched[name] - alone[name]).abs().max() <= 1e-4 * scale, name


def test_resume_after_a_batched_run_redoes_only_the_missing_image(tmp_path, monkeypatch):
    loaded, _ = run(tmp_path, "runtime.batch_size=3")
    missing = sorted(loaded.run_dir.rglob("*_s0.json"))[1]
    missing.unlink()
    from attnguide.engine.engine import Engine as EngineClass

    sizes = []
    original = EngineClass.generate
    monkeypatch.setattr(EngineClass, "generate",
                        lambda self, prompts, *a, **k: sizes.append(list(prompts)) or original(self, prompts, *a, **k))
    _, summary = run(tmp_path, "runtime.batch_size=3")
    assert summary.written == 1 and summary.skipped == 2
    assert len(sizes) == 1 and len(sizes[0]) == 1 and missing.is_file()


def test_a_failing_batch_is_retried_one_image_at_a_time(tmp_path, monkeypatch):
    from attnguide.engine.engine import Engine as EngineClass

    original = EngineClass.generate

    def fails_for_the_flamingo(self, prompts, *args, **kwargs):
        if any("flamingo" in p for p in prompts):
            raise RuntimeError("out of memory (simulated)")
        return original(self, prompts, *args, **kwargs)

    monkeypatch.setattr(EngineClass, "generate", fails_for_the_flamingo)
    loaded, summary = run(tmp_path, "runtime.batch_size=3")
    assert summary.written == 2 and summary.failed == 1
    assert "flamingo" in summary.failures[0]["prompt"] and "out of memory" in summary.failures[0]["error"]


def test_batches_keep_to_one_cell_and_the_size():
    class Cell:
        def __init__(self, name):
            self.name = name

    class Job:
        def __init__(self, cell):
            self.cell = cell

    a, b = Cell("a"), Cell("b")
    jobs = [Job(a), Job(a), Job(a), Job(b), Job(a)]
    assert [[j.cell.name for j in batch] for batch in batches(jobs, 2)] == [["a", "a"], ["a"], ["b"], ["a"]]
    assert [len(batch) for batch in batches(jobs, 1)] == [1] * 5


def test_batch_size_must_be_positive(tmp_path):
    from attnguide.errors import RecipeError

    with pytest.raises(RecipeError, match="batch_size"):
        load_recipe("syngen_sd14", [*OVERRIDES, "runtime.batch_size=0", f"output_dir={tmp_path}"],
                    registry=registry())


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny", scheduler="ddim")


def generate(engine, losses=()):
    return engine.generate(PROMPTS[:2], [0, 1], steps=3, losses=list(losses), height=256, width=256,
                           output_type="latent", progress=False)


def test_an_unguided_run_installs_no_attention_processors(pipe):
    engine = Engine(pipe, parser="spacy")
    originals = dict(engine.denoiser.attn_processors)
    seen = []
    handle = engine.denoiser.register_forward_pre_hook(
        lambda module, args: seen.append({n: type(p).__name__ for n, p in module.attn_processors.items()}))
    calls = []
    set_processors = engine.denoiser.set_attn_processor
    engine.denoiser.set_attn_processor = lambda *a, **k: calls.append(1) or set_processors(*a, **k)
    try:
        generate(engine)
        assert calls == [] and len(seen) == 3
        assert all(s == {n: type(p).__name__ for n, p in originals.items()} for s in seen)
        generate(engine, ["syngen"])  # a guided run installs them, and restores them after
        assert calls == [1, 1]
        assert dict(engine.denoiser.attn_processors) == originals
    finally:
        handle.remove()
        del engine.denoiser.set_attn_processor


def test_compiled_and_channels_last_runs_match_the_eager_ones(pipe):
    eager = Engine(pipe, parser="spacy")
    plain, guided = generate(eager), generate(eager, ["syngen"])
    fast = Engine(load_pipeline("tiny", scheduler="ddim"), parser="spacy",
                  runtime=RuntimeConfig(compile=True, compile_backend="eager", channels_last=True))
    assert fast._compiled is not None
    assert fast.denoiser.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(generate(fast).latents, plain.latents, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(generate(fast, ["syngen"]).latents, guided.latents, rtol=1e-4, atol=1e-3)
