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
    assert result.images[0].size == (256, 256)
    assert [b.entity.text for b in result.records[0].analysis.bindings] == ["sunflower", "flamingo"]
    assert {r["plugin"] for r in result.records[0].losses} == {"syngen"}
    assert tuple(result.run.guidance_maps[0][0].shape) == (77, 16, 16)
