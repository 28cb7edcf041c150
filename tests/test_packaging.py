"""The wheel installs into a fresh venv and every namespaced package imports from it."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_imports_in_a_throwaway_venv(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("attnguide-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # dependencies come from the dev environment's site-packages as a plain path entry: its
    # own .pth files (the editable install's finder) are not processed, so only the wheel
    # can provide attnguide
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "dev_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True, capture_output=True)
    code = (
        "import attnguide, attnguide.plugins, attnguide.parsers, attnguide.recipes, attnguide.models.tiny;"
        "import importlib.resources as r;"
        "assert r.files('attnguide.data').joinpath('bpe_simple_vocab_16e6.txt.gz').is_file();"
        "assert any(p.name.endswith('.yaml') for p in r.files('attnguide.recipes').iterdir());"
        "from attnguide.toyworld.model import WEIGHTS_DIR;"
        "assert len(list(WEIGHTS_DIR.rglob('*.safetensors'))) == 3, WEIGHTS_DIR;"
        "assert (WEIGHTS_DIR / 'TRAINED_WITH.json').is_file();"
        "import importlib.util as u;"
        "assert all(u.find_spec(n) is None for n in ('framework', 'plugins', 'parsers'));"
        "print(attnguide.__file__)"
    )
    proc = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert str(venv) in proc.stdout


def test_no_generic_top_level_packages_are_declared():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(name == "attnguide" or name.startswith("attnguide.") for name in config["packages"])


def test_package_data_patterns_cover_every_shipped_toy_weight_and_ablation_file():
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    weights = ROOT / "framework" / "toyworld" / "weights"
    files = [p.relative_to(weights.parent).as_posix() for p in weights.rglob("*") if p.is_file()]
    assert len(files) >= 8, files
    _all_shipped(files, patterns["attnguide.toyworld"])
    ablations = [p.relative_to(ROOT / "framework" / "tune").as_posix()
                 for p in (ROOT / "framework" / "tune" / "ablations").iterdir()]
    _all_shipped(ablations, patterns["attnguide.tune"])


def _all_shipped(files: list[str], patterns: list[str]) -> None:
    import fnmatch

    for name in files:
        # setuptools globs: "*" does not cross "/"
        assert any(fnmatch.fnmatch(name, pat) and name.count("/") == pat.count("/")
                   for pat in patterns), f"{name} would not ship in the wheel"
