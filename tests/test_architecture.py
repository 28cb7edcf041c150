"""The folders are the architecture: imports are followable, acyclic, and documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"framework": "attnguide", "plugins": "attnguide.plugins", "parsers": "attnguide.parsers",
           "recipes": "attnguide.recipes"}


def _module_name(path: Path) -> str:
    folder = path.relative_to(ROOT).parts[0]
    rel = path.relative_to(ROOT / folder).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([FOLDERS[folder], *parts])


def _modules() -> dict[str, Path]:
    out = {}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            out[_module_name(path)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports anywhere (functions included), except
    under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def walk(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return cycles


def test_the_import_graph_has_no_circle():
    graph = _graph()
    assert len(graph) > 90 and graph["attnguide.engine.engine"]  # the walk sees the package
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_framework_modules_import_each_other_relatively():
    # an absolute ``attnguide.x`` import inside framework/ cannot be followed to framework/x.py
    # without reading pyproject.toml; a relative one can. The other top-level folders
    # (plugins/, parsers/, recipes/) are named absolutely: a relative import could not reach them.
    other_folders = {name for folder, name in FOLDERS.items() if folder != "framework"}
    offenders = []
    for path in (ROOT / "framework").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            if any(module == o or module.startswith(o + ".") for o in other_folders):
                continue
            if isinstance(node, ast.ImportFrom) and not node.level and module.split(".")[0] == "attnguide":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module}")
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "attnguide" for a in node.names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} import attnguide")
    assert offenders == []


def test_no_framework_folder_holds_more_than_about_a_dozen_modules():
    for folder in [ROOT / "framework", *(p for p in (ROOT / "framework").iterdir() if p.is_dir())]:
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        # framework/cli/ holds one small module per subcommand (plus main and two option helpers)
        limit = 15 if folder.name == "cli" else 13
        assert len(modules) <= limit, f"{folder.relative_to(ROOT)} has {len(modules)} modules"


def _subpackages() -> list[str]:
    return sorted(p.name for p in (ROOT / "framework").iterdir()
                  if p.is_dir() and (p / "__init__.py").exists())


@pytest.mark.parametrize("doc", ["README.md", "docs/architecture.md"])
def test_layout_tables_name_every_framework_folder_and_only_existing_paths(doc):
    text = (ROOT / doc).read_text()
    for package in _subpackages():
        assert f"framework/{package}/" in text, f"{doc} does not mention framework/{package}/"
        assert f"attnguide.{package}" in text, f"{doc} does not give the import name attnguide.{package}"
    for path in re.findall(r"`((?:framework|plugins|parsers|recipes)/[\w/.]*)`", text):
        assert (ROOT / path).exists(), f"{doc} names {path}, which does not exist"


def test_architecture_doc_opens_with_the_folder_to_import_name_map_and_the_data_path():
    text = (ROOT / "docs" / "architecture.md").read_text()
    head = text[: text.index("\n## ", text.index("\n## ") + 1)]
    for folder, name in FOLDERS.items():
        assert f"`{folder}/`" in head and f"`{name}`" in head
    assert "prompt" in head and "framework/engine/" in head and "plugins/" in head


@pytest.mark.parametrize("doc", ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))])
def test_every_source_path_a_doc_names_exists(doc):
    text = (ROOT / doc).read_text()
    missing = [path for path in re.findall(r"`((?:framework|plugins|parsers|recipes|examples)/[\w/.-]*)`", text)
               if not (ROOT / path).exists()]
    assert missing == []
