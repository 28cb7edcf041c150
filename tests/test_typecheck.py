"""framework/, plugins/ and parsers/ pass ``mypy --strict`` (config in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

from typecheck_tree import REPO, build_import_tree


def test_package_passes_mypy_strict_with_zero_errors(tmp_path):
    build_import_tree(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(tmp_path / ".mypy_cache"), "-p", "attnguide"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "Success: no issues found" in proc.stdout
