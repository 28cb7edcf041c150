"""The benchmark harness runs and reports its rows (timings themselves are never asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def test_benchmark_writes_rows_and_ratios_for_every_mode_and_batch(tmp_path):
    from benchmarks.guidance import main

    out = tmp_path / "bench.json"
    assert main(["--models", "tiny", "--methods", "none,syngen:step_size=5", "--steps", "4", "--repeats", "1",
                 "--batches", "1,2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    modes = {(r["method"], r["mode"], r["batch"]) for r in report["rows"]}
    assert modes == {
        ("none", "optimized", 1), ("none", "reference", 1), ("none", "diffusers_pipeline", 1),
        ("syngen:step_size=5", "optimized", 1), ("syngen:step_size=5", "reference", 1),
        ("none", "optimized", 2), ("none", "diffusers_pipeline", 2),
        ("syngen:step_size=5", "optimized", 2), ("syngen:step_size=5", "per_image", 2),
    }
    rows = {(r["method"], r["mode"], r["batch"]): r for r in report["rows"]}
    syngen = rows[("syngen:step_size=5", "optimized", 1)]
    assert syngen["s_per_guided_step"] > 0 and syngen["max_latent_diff"] < 1e-3
    # the unguided engine is diffusers' loop: the same latents as the pipeline's own call
    assert rows[("none", "diffusers_pipeline", 1)]["max_latent_diff"] == 0.0
    assert rows[("none", "diffusers_pipeline", 2)]["max_latent_diff"] == 0.0
    assert rows[("syngen:step_size=5", "per_image", 2)]["max_latent_diff"] < 1e-3
    assert rows[("none", "optimized", 2)]["images_per_s"] > 0
    ratios = {(r["method"], r["batch"]): r for r in report["ratios"]}
    assert {"speedup_vs_reference", "guided_step_over_plain_step"} <= set(ratios[("syngen:step_size=5", 1)])
    assert "speedup_vs_per_image" in ratios[("syngen:step_size=5", 2)]
    assert "engine_over_diffusers_pipeline" in ratios[("none", 1)]


def test_benchmark_no_reference_times_the_engine_alone(tmp_path):
    from benchmarks.guidance import main

    out = tmp_path / "bench.json"
    assert main(["--models", "tiny", "--methods", "none", "--steps", "2", "--repeats", "1", "--no-reference",
                 "--json", str(out)]) == 0
    modes = {r["mode"] for r in json.loads(out.read_text())["rows"]}
    assert modes == {"optimized", "diffusers_pipeline"}


def test_benchmark_refuses_a_bad_batch_list(capsys):
    from benchmarks.guidance import main

    with pytest.raises(SystemExit):
        main(["--models", "tiny", "--batches", "1,0"])
    assert "--batches" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-sd3", "tiny-flux"])
def test_benchmark_reports_guided_over_plain_and_memory_for_every_family(tmp_path, model):
    from benchmarks.guidance import main

    out = tmp_path / "bench.json"
    assert main(["--models", model, "--methods", "none,syngen", "--steps", "4", "--repeats", "1",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    syngen = next(r for r in report["ratios"] if r["model"] == model and r["method"] == "syngen")
    assert syngen["guided_step_over_plain_step"] > 0 and syngen["peak_mem_over_plain"] > 0
    # SD3 and Flux have no classic-attention reference mode; SDXL has
    assert ("speedup_vs_reference" in syngen) == (model == "tiny-sdxl")


def documented_benchmark_commands():
    import shlex

    root = Path(__file__).resolve().parents[1]
    commands = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for line in doc.read_text(encoding="utf-8").splitlines():
            line = line.strip().strip("`")
            if line.startswith("python -m benchmarks.guidance"):
                commands.append((doc.name, shlex.split(line.split("  #")[0])[3:]))
    return commands


def test_every_documented_benchmark_command_parses_and_plans(monkeypatch):
    # the commands take minutes to hours (some need CUDA): here each one is parsed and planned
    # with the timing replaced, so a renamed flag, model or method in the docs fails
    import benchmarks.guidance as bench

    commands = documented_benchmark_commands()
    assert len(commands) >= 6
    planned = []
    monkeypatch.setattr(bench, "require_cuda", lambda model: None)
    monkeypatch.setattr(bench, "_write", lambda path, rows: "")
    monkeypatch.setattr(bench, "bench_model", lambda name, methods, *a, **k: planned.append((name, methods)) or [])
    registry = __import__("attnguide.plugin.manager", fromlist=["x"]).make_plugin_manager().registry
    from attnguide.toyworld.evaluate import parse_method

    for doc, args in commands:
        planned.clear()
        assert bench.main(args) == 0, (doc, args)
        assert planned, (doc, args)
        for _, methods in planned:
            for method in methods:
                for part in method.split("+"):
                    name, _ = parse_method(part)
                    assert name == "none" or name in registry.classes["loss"] or name in registry.classes["callback"], (
                        doc, method)
