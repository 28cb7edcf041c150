"""The Python example in the README runs as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - documentation under test
    result = namespace["result"]
    assert result.images[0].size == (64, 64)
    assert [b.entity.text for b in result.records[0].analysis.bindings] == ["circle", "square"]
    assert {r["plugin"] for r in result.records[0].losses} == {"syngen"}
    assert tuple(result.run.guidance_maps[0][0].shape) == (77, 16, 16)


def _guide_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "writing-plugins.md").read_text(), re.S)


def test_writing_plugins_guide_shows_the_example_package_and_its_tests_verbatim():
    example = ROOT / "examples" / "attnguide-focus"
    blocks = _guide_blocks()
    assert (example / "test_attnguide_focus.py").read_text() in blocks
    # the class block is the example module up to formatting: same names, same formula
    assert "class FocusLoss(LossPlugin[FocusParams])" in (example / "attnguide_focus.py").read_text()
    assert "class FocusLoss(LossPlugin[FocusParams])" in blocks[0]


def test_the_example_package_tests_pass(monkeypatch):
    """The example package's own tests (shown in docs/writing-plugins.md) pass."""
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "attnguide-focus"))
    path = ROOT / "examples" / "attnguide-focus" / "test_attnguide_focus.py"
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 - documentation under test
    ran = [name for name in namespace if name.startswith("test_")]
    for name in ran:
        namespace[name]()
    assert len(ran) == 2


def test_writing_plugins_guide_try_it_block_runs(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "attnguide-focus"))
    from attnguide_focus import FocusLoss

    namespace: dict = {"FocusLoss": FocusLoss}
    block = next(b for b in _guide_blocks() if "engine.generate" in b)
    exec(compile(block, "docs/writing-plugins.md", "exec"), namespace)  # noqa: S102
    values = [r.value for r in namespace["result"].records[0].losses]
    assert len(values) == 5 and all(v > 0 for v in values)  # window: the first half of 10 steps


def test_the_update_override_shown_in_hooks_doc_runs():
    from attnguide.testing import run_plugin

    text = (ROOT / "docs" / "hooks.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "docs/hooks.md", "exec"), namespace)  # noqa: S102
    records = run_plugin("syngen", "a red cat and a blue frog", {"cat": ["red"], "frog": ["blue"]},
                         steps=2, callbacks=[namespace["SignedStep"]()])
    assert [r.step for r in records] == [0]
