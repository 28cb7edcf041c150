"""``attnguide evaluate`` scores toy-world runs with the toy judge, and the report shows it."""

from __future__ import annotations

import csv
import json

import pytest

from attnguide.cli.main import main
from attnguide.errors import ConfigError
from attnguide.metrics import EvalSettings, evaluate_run
from attnguide.report import build_report
from attnguide.toyworld.render import render
from attnguide.toyworld.scene import Scene, ToyObject

PROMPT = "a red circle and a blue square"
# what each (cell, seed) image shows: asked for, swapped colours, the square missing
SCENES = {
    ("method-none", 0): [("blue", "circle"), ("red", "square")],
    ("method-none", 1): [("red", "circle")],
    ("method-none", 2): [("red", "circle"), ("blue", "square")],
    ("method-syngen", 0): [("red", "circle"), ("blue", "square")],
    ("method-syngen", 1): [("red", "circle"), ("blue", "square")],
    ("method-syngen", 2): [("blue", "circle"), ("red", "square")],
}


def toy_run(root, scenes=SCENES, prompt=PROMPT, model="toyworld"):
    """A run directory in ``attnguide run``'s layout whose images are rendered toy scenes."""
    run_dir = root / "toyrun"
    rows = []
    for (cell, seed), objects in scenes.items():
        folder = run_dir / cell
        folder.mkdir(parents=True, exist_ok=True)
        centres = [(18.0, 20.0), (44.0, 42.0)]
        scene = Scene(objects=tuple(ToyObject(c, s, "medium", centres[k]) for k, (c, s) in enumerate(objects)))
        name = f"toy_s{seed}"
        render(scene).save(folder / f"{name}.png")
        meta = {"cell": cell, "cell_labels": {"method": cell.split("-", 1)[1]}, "prompt": prompt, "seed": seed,
                "model": model, "losses": [], "files": {"image": f"{name}.png"}}
        (folder / f"{name}.json").write_text(json.dumps(meta), encoding="utf-8")
        rows.append({"cell": cell, "prompt": prompt, "seed": seed, "status": "ok",
                     "image": f"{cell}/{name}.png", "metadata": f"{cell}/{name}.json"})
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return run_dir


def expected(cell):
    """Binding, neglect, swap and leak per seed of ``cell``, worked out from SCENES by hand (here
    every leak is a swap: the one neglect draws only the red circle, nothing in the wrong colour)."""
    return {
        "method-none": {"binding_accuracy": [0, 0, 1], "neglect_rate": [0, 1, 0], "swap_rate": [1, 0, 0],
                        "leak_rate": [1, 0, 0]},
        "method-syngen": {"binding_accuracy": [1, 1, 0], "neglect_rate": [0, 0, 0], "swap_rate": [0, 0, 1],
                          "leak_rate": [0, 0, 1]},
    }[cell]


def test_a_toyworld_run_is_scored_by_the_toy_judge_without_loading_any_model(tmp_path):
    run_dir = toy_run(tmp_path)
    result = evaluate_run(run_dir, EvalSettings(bootstrap_samples=200))
    assert list(result.summary["settings"]["metrics"]) == ["toy"]
    assert list(result.summary["metrics"]) == ["binding_accuracy", "neglect_rate", "swap_rate", "leak_rate"]
    assert result.summary["lower_is_better"] == ["neglect_rate", "swap_rate", "leak_rate"]
    for cell in ("method-none", "method-syngen"):
        rows = sorted((r for r in result.rows if r["cell"] == cell), key=lambda r: r["seed"])
        for metric, values in expected(cell).items():
            assert [r[metric] for r in rows] == values, (cell, metric)
            est = result.summary["cells"][cell][metric]
            assert est["mean"] == pytest.approx(sum(values) / 3) and est["n"] == 3
            assert est["ci_low"] <= est["mean"] <= est["ci_high"]
    swapped = next(r for r in result.rows if r["cell"] == "method-none" and r["seed"] == 0)
    assert swapped["toy_objects"] == [["red", "circle"], ["blue", "square"]]
    assert sorted(swapped["toy_detected"]) == [["blue", "circle"], ["red", "square"]]


def test_the_report_of_an_evaluated_toyworld_run_has_the_judge_metrics_in_table_and_csv(tmp_path):
    run_dir = toy_run(tmp_path)
    evaluate_run(run_dir, EvalSettings(bootstrap_samples=200))
    report = build_report(run_dir)
    rows = {r["cell"]: r for r in csv.DictReader(report.csv.read_text().splitlines())}
    for cell in ("method-none", "method-syngen"):
        for metric, values in expected(cell).items():
            assert float(rows[cell][f"{metric}_mean"]) == pytest.approx(sum(values) / 3)
            assert float(rows[cell][f"{metric}_ci_low"]) <= float(rows[cell][f"{metric}_ci_high"])
    html = report.html.read_text(encoding="utf-8")
    assert "<th>binding_accuracy</th>" in html and "<th>neglect_rate &darr;</th>" in html
    md = report.markdown.read_text()
    # syngen binds better (2/3 vs 1/3) and neglects less (0 vs 1/3): lowest neglect is the best
    assert "| method-syngen | 3 | **0.6667" in md and "**0.0000 [0.0000, 0.0000]**" in md


def test_the_evaluate_command_picks_the_toy_judge_for_a_toyworld_run(tmp_path, capsys):
    run_dir = toy_run(tmp_path)
    assert main(["evaluate", str(run_dir), "--quiet", "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "binding_accuracy" in out and "swap_rate" in out and "clip" not in out
    summary = json.loads((run_dir / "metrics_summary.json").read_text())
    assert summary["cells"]["method-syngen"]["binding_accuracy"]["mean"] == pytest.approx(2 / 3)


def test_other_runs_keep_clip_and_vqa_as_the_automatic_metrics(tmp_path):
    from metric_helpers import tiny_clip_scorer, tiny_vqa_scorer

    run_dir = toy_run(tmp_path, model="tiny")
    result = evaluate_run(run_dir, EvalSettings(bootstrap_samples=50, phrases="split"), clip=tiny_clip_scorer(),
                          vqa=tiny_vqa_scorer())
    assert list(result.summary["settings"]["metrics"]) == ["clip", "vqa"]
    assert "binding_accuracy" not in result.summary["metrics"] and "clip_score" in result.summary["metrics"]


def test_the_toy_judge_can_be_asked_for_and_refuses_a_prompt_it_cannot_read(tmp_path, capsys):
    run_dir = toy_run(tmp_path, scenes={("method-none", 0): [("red", "circle")]}, prompt="a photo of a cat",
                      model="tiny")
    with pytest.raises(ConfigError, match="'a photo of a cat'"):
        evaluate_run(run_dir, EvalSettings(metrics=("toy",)))
    assert main(["evaluate", str(run_dir), "--metrics", "toy", "--quiet"]) == 2
    assert "a photo of a cat" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="toy"):
        EvalSettings(metrics=("auto", "clip"))


def documented_toy_commands() -> list[list[str]]:
    """The console block of docs/evaluation.md's toy-world section, as argv lists."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text(encoding="utf-8")
    block = re.search(r"### Toy-world runs.*?```console\n(.*?)```", text, re.S)
    assert block is not None, "docs/evaluation.md has no toy-world console block"
    return [shlex.split(line.removeprefix("$ "), comments=True)[1:] for line in block.group(1).splitlines()
            if line.startswith("$ attnguide")]


@pytest.mark.slow
def test_the_documented_toy_world_commands_run_and_the_report_has_judge_metrics(tmp_path, capsys):
    """docs/evaluation.md (and docs/ablations.md, which shows the same two commands) as written,
    the run shortened to one prompt, one seed and two steps (about 40 s on two busy cores; the
    judged table itself is checked on rendered scenes by the fast tests above)."""
    from pathlib import Path

    run, evaluate, report = documented_toy_commands()
    assert run == ["run", "toyworld_binding"] and evaluate[0] == "evaluate" and report[0] == "report"
    ablations = (Path(__file__).resolve().parents[1] / "docs" / "ablations.md").read_text(encoding="utf-8")
    assert f"`attnguide {' '.join(evaluate)}`" in ablations and f"`attnguide {' '.join(report)}`" in ablations
    out = tmp_path / "outputs"
    assert main([*run, "--quiet", "seeds.count=1", "sampling.steps=2", f"prompts=[{PROMPT}]", f"output_dir={out}",
                 "runtime.accelerator=cpu"]) == 0
    run_dir = str(out / "toyworld_binding")
    assert main([evaluate[0], run_dir, *evaluate[2:], "--quiet"]) == 0
    assert main([report[0], run_dir, *report[2:]]) == 0
    rows = list(csv.DictReader((out / "toyworld_binding" / "report.csv").read_text().splitlines()))
    assert len(rows) == 7 and all(r["binding_accuracy_mean"] in ("0.0", "1.0") for r in rows)
    assert all(r["neglect_rate_n"] == "1" and r["swap_rate_ci_high"] != "" for r in rows)
    capsys.readouterr()
