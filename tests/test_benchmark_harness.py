"""The benchmark harness runs and reports its rows (timings themselves are never asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.mark.slow
def test_benchmark_writes_rows_and_ratios_for_both_modes(tmp_path):
    from benchmarks.guidance import main

    out = tmp_path / "bench.json"
    assert main(["--models", "tiny", "--methods", "none,syngen", "--steps", "2", "--repeats", "1",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    modes = {(r["method"], r["mode"]) for r in report["rows"]}
    assert modes == {("none", "optimized"), ("none", "reference"), ("syngen", "optimized"), ("syngen", "reference")}
    syngen = next(r for r in report["rows"] if r["method"] == "syngen" and r["mode"] == "optimized")
    assert syngen["s_per_guided_step"] > 0 and syngen["max_latent_diff"] < 1e-3
    assert {"speedup_vs_reference", "guided_step_over_plain_step"} <= set(report["ratios"][1])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-sd3", "tiny-flux"])
def test_benchmark_reports_guided_over_plain_and_memory_for_every_family(tmp_path, model):
    from benchmarks.guidance import main

    out = tmp_path / "bench.json"
    assert main(["--models", model, "--methods", "none,syngen", "--steps", "2", "--repeats", "1",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    syngen = next(r for r in report["ratios"] if r["model"] == model and r["method"] == "syngen")
    assert syngen["guided_step_over_plain_step"] > 0 and syngen["peak_mem_over_plain"] > 0
    # SD3 and Flux have no classic-attention reference mode; SDXL has
    assert ("speedup_vs_reference" in syngen) == (model == "tiny-sdxl")
