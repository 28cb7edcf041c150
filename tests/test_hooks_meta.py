"""Meta-tests: every hook is documented in docs/hooks.md and exercised by a test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from attnguide.plugin import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "attnguide_spec")]


def test_hook_names_list_matches_the_specification():
    assert sorted(HOOKS) == sorted(hookspecs.HOOK_NAMES)


@pytest.mark.parametrize("hook", sorted(hookspecs.HOOK_NAMES))
def test_every_hook_has_a_section_in_docs(hook):
    text = (ROOT / "docs" / "hooks.md").read_text()
    assert re.search(rf"^## {hook}$", text, re.M), f"docs/hooks.md has no section for {hook}"


@pytest.mark.parametrize("hook", sorted(hookspecs.HOOK_NAMES))
def test_every_hook_is_exercised_by_a_test(hook):
    sources = "\n".join(
        p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != Path(__file__).name
    )
    assert hook in sources, f"no test mentions hook {hook}"


@pytest.mark.parametrize("hook", sorted(hookspecs.HOOK_NAMES))
def test_every_hook_has_a_docstring(hook):
    assert (getattr(hookspecs, hook).__doc__ or "").strip()
