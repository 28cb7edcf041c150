"""Lay the installed package out as its import names say, for tools that read folders.

``attnguide`` lives in ``framework/``, ``attnguide.plugins`` in ``plugins/`` and so on
(``pyproject.toml``'s ``package-dir``). A static checker that walks folders needs the import
layout, so this builds it from symlinks: ``ROOT/attnguide/<entry> -> framework/<entry>`` plus
the ``plugins``, ``parsers`` and ``recipes`` folders.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGE_FOLDERS = {"plugins": "plugins", "parsers": "parsers", "recipes": "recipes"}


def build_import_tree(root: Path) -> Path:
    """``root/attnguide`` as a tree of symlinks into the checkout; returns that folder."""
    pkg = root / "attnguide"
    pkg.mkdir(parents=True)
    for entry in (REPO / "framework").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name, folder in SUBPACKAGE_FOLDERS.items():
        (pkg / name).symlink_to(REPO / folder)
    return pkg


if __name__ == "__main__":
    import sys
    import tempfile

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    print(build_import_tree(root))
