"""Fast start-up: ``attnguide --help`` and every subcommand's ``--help`` import no heavy library
(torch, diffusers, transformers, spaCy, Lightning); the commands import them when they run.
``import attnguide`` is light too, while ``from attnguide import Engine`` and every name in
``attnguide.__all__`` still resolve. No timings are asserted (they are noisy); the imports are
what makes start-up slow, so they are what is checked."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "diffusers", "transformers", "spacy", "lightning")

# Runs in a fresh interpreter: `argvs` (a JSON list of argument lists) each through the CLI's
# main, then prints which HEAVY modules got imported and the exit codes.
_SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys
    from attnguide.cli.main import main

    heavy, argvs = json.loads(sys.argv[1])
    codes = []
    for argv in argvs:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                codes.append(main(argv))
            except SystemExit as exc:
                codes.append(exc.code)
    print(json.dumps({"loaded": [m for m in heavy if m in sys.modules], "codes": codes}))
""")


def _run_cli(*argvs: list[str], heavy: tuple[str, ...] = HEAVY) -> dict[str, list]:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps([heavy, list(argvs)])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["generate", "--help"], ["validate", "--help"]],
                         ids=" ".join)
def test_help_imports_no_heavy_library(argv):
    result = _run_cli(argv)
    assert result["codes"] == [0]
    assert result["loaded"] == [], f"attnguide {' '.join(argv)} imported {result['loaded']}"


def test_every_subcommand_help_imports_no_heavy_library():
    from attnguide.cli.main import build_parser

    def commands(parser, prefix):  # every (sub)command's argv, nested ones (toyworld evaluate) included
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield [*prefix, name]
                    yield from commands(sub, [*prefix, name])

    argvs = [[*cmd, "--help"] for cmd in commands(build_parser(), [])]
    assert {"run", "generate", "validate", "parse", "toyworld"} <= {a[0] for a in argvs}
    assert ["toyworld", "evaluate", "--help"] in argvs
    result = _run_cli(*argvs)
    assert result["codes"] == [0] * len(argvs)
    assert result["loaded"] == []


def test_importing_the_package_imports_no_heavy_library():
    code = f"import sys, attnguide, attnguide.cli.main; print([m for m in {HEAVY!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_public_names_still_resolve():
    import attnguide
    from attnguide import Engine

    assert isinstance(Engine, type) and Engine.__module__ == "attnguide.engine.engine"
    assert Engine is importlib.import_module("attnguide.engine.engine").Engine
    for name in attnguide.__all__:
        assert getattr(attnguide, name) is not None, name
        assert name in dir(attnguide)
    with pytest.raises(AttributeError):
        attnguide.NoSuchName  # noqa: B018 - the lazy __getattr__ still refuses unknown names


SHIPPED_RECIPES = ("quickstart", "ablation_methods", "syngen_sdxl", "initno_sd14", "toyworld_binding")


@pytest.mark.parametrize("recipe", SHIPPED_RECIPES)
def test_validate_imports_no_heavy_library(recipe):
    """``attnguide validate`` builds the plugin registry (every built-in plugin module is
    imported, its Params model checked) without loading torch or numpy: plugin modules take
    torch from ``attnguide.lazy``."""
    result = _run_cli(["validate", recipe], heavy=(*HEAVY, "numpy"))
    assert result["codes"] == [0]
    assert result["loaded"] == [], f"attnguide validate {recipe} imported {result['loaded']}"


def test_plugin_listing_imports_no_heavy_library():
    result = _run_cli(["plugins"], heavy=(*HEAVY, "numpy"))
    assert result["codes"] == [0]
    assert result["loaded"] == []


def test_builtin_plugin_modules_import_without_torch():
    code = (
        "import sys; import attnguide.plugins as p, pkgutil, importlib\n"
        "for m in pkgutil.iter_modules(p.__path__): importlib.import_module('attnguide.plugins.' + m.name)\n"
        "print([m for m in ('torch', 'numpy') if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"
