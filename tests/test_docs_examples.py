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


def test_writing_plugins_guide_tests_pass(monkeypatch):
    """The tests shown in docs/writing-plugins.md pass against the example package."""
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "attnguide-focus"))
    text = (ROOT / "docs" / "writing-plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    tests_block = next(b for b in blocks if "def test_focus" in b)
    namespace: dict = {}
    exec(compile(tests_block, "docs/writing-plugins.md", "exec"), namespace)  # noqa: S102
    ran = [name for name in namespace if name.startswith("test_")]
    for name in ran:
        namespace[name]()
    assert len(ran) == 2
