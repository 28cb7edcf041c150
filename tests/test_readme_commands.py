"""The README's command-line examples run as written (shortened only by ``--steps`` and
``--quiet``, with ``--out`` under a temporary folder)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from safetensors.torch import load_file

from attnguide.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[list[str]]:
    """Each ``attnguide ...`` command of the README's command-line block, as argv (without the
    program name); continuation lines are joined and trailing comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Command line\s+```bash\n(.*?)```", text, re.S)
    assert block is not None, "README.md has no command-line block"
    joined = block.group(1).replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "attnguide":
            commands.append(words[1:])
    return commands


def command(starting: list[str]) -> list[str]:
    return next(c for c in readme_commands() if c[: len(starting)] == starting)


def with_out(argv: list[str], out: Path) -> list[str]:
    at = argv.index("--out")
    return [*argv[:at + 1], str(out), *argv[at + 2:]]


def test_readme_generate_command_writes_image_metadata_heatmaps_and_latents_into_out(tmp_path, capsys):
    argv = command(["generate", "--model", "toyworld"])
    assert "--heatmaps" in argv and "--save-latents" in argv
    out = tmp_path / "demo"
    assert main([*with_out(argv, out), "--steps", "4", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    image = Path(printed["image"])
    assert image.parent == out and image.is_file()
    stem = image.name.removesuffix(".png")
    for suffix in ("json", "heatmaps.png", "maps.safetensors", "latents.safetensors"):
        assert (out / f"{stem}.{suffix}").is_file(), suffix
    maps = load_file(out / f"{stem}.maps.safetensors")
    assert maps and all(m.shape[-2:] == (16, 16) for m in maps.values())
    meta = json.loads((out / f"{stem}.json").read_text())
    assert meta["method_params"][0]["params"]["step_size"] == 3.0
    assert {"heatmaps.png", "maps.safetensors"} <= set(meta["files"])


def test_readme_toy_model_examples_use_the_measured_syngen_step_size():
    """docs/toyworld.md: the paper's step size 20 erases the toy model's objects; 3 is the best."""
    generate = command(["generate", "--model", "toyworld"])
    assert generate[generate.index("--method") + 1] == "syngen:step_size=3"
    evaluate = command(["toyworld", "evaluate"])
    assert "syngen:step_size=3" in evaluate[evaluate.index("--methods") + 1].split(",")
    python = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert python is not None and '{"name": "syngen", "step_size": 3.0}' in python.group(1)


def test_readme_toyworld_evaluate_methods_resolve_against_the_registry():
    from attnguide.plugin.manager import make_plugin_manager
    from attnguide.toyworld.evaluate import resolve_methods

    evaluate = command(["toyworld", "evaluate"])
    registry = make_plugin_manager().registry
    labels = evaluate[evaluate.index("--methods") + 1].split(",")
    specs = resolve_methods(labels, registry.names("loss"), registry)
    assert specs["syngen:step_size=3"] == [{"name": "syngen", "step_size": 3}]
