"""The plugin manager factory: built-ins, entry points, validation, duplicates."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from attnguide.errors import PluginError
from attnguide.plugin.hookspecs import hookimpl
from attnguide.plugin.losses import LossPlugin
from attnguide.plugin.manager import make_plugin_manager, run_plugin_manager

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "attnguide-focus"


def test_builtins_are_registered_from_an_explicit_tuple():
    pm = make_plugin_manager(autoload=False)
    assert {"syngen", "entropy_syngen", "attend_excite", "astar"} <= set(pm.registry.names("loss"))
    assert "heatmaps" in pm.registry.names("callback")


def test_unknown_plugin_name_lists_registered_names_and_suggests():
    pm = make_plugin_manager(autoload=False)
    with pytest.raises(PluginError, match=r"unknown loss plugin 'syngem'.*'syngen'.*Registered: .*astar"):
        pm.registry.get("loss", "syngem")


class Misspelled:
    @hookimpl
    def attnguide_register_loses(self):
        return []


class WrongArgument:
    @hookimpl
    def on_step_start(self, run, stepp):
        pass


def test_misspelled_hook_is_rejected_naming_plugin_and_hook():
    with pytest.raises(PluginError, match=r"'oops'.*unknown hook 'attnguide_register_loses'.*attnguide_register_losses"):
        make_plugin_manager(autoload=False, extra=[("oops", Misspelled())])


def test_misspelled_argument_is_rejected_naming_plugin_hook_and_argument():
    with pytest.raises(PluginError, match=r"'bad-arg'.*on_step_start.*stepp"):
        run_plugin_manager([("bad-arg", WrongArgument())])


class Dupe(LossPlugin):
    name = "syngen"


class DupeRegistrar:
    @hookimpl
    def attnguide_register_losses(self):
        return [Dupe]


def test_duplicate_names_are_rejected_naming_both_sources():
    with pytest.raises(PluginError, match=r"duplicate loss plugin name 'syngen'.*attnguide.plugins.*dupes"):
        make_plugin_manager(autoload=False, extra=[("dupes", DupeRegistrar())])


@pytest.fixture()
def installed_example(tmp_path, monkeypatch):
    """The example package made importable with a real dist-info, as pip would leave it."""
    shutil.copy(EXAMPLE / "attnguide_focus.py", tmp_path / "attnguide_focus.py")
    info = tmp_path / "attnguide_focus-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: attnguide-focus\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[attnguide]\nfocus = attnguide_focus\n")
    (info / "top_level.txt").write_text("attnguide_focus\n")
    (info / "RECORD").write_text("attnguide_focus.py,,\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("attnguide_focus", None)


def test_entry_point_plugins_are_autoloaded(installed_example):
    pm = make_plugin_manager()
    assert "focus" in pm.registry.names("loss")
    assert pm.registry.sources[("loss", "focus")] == "focus"


def test_autoload_can_be_disabled_by_environment(installed_example, monkeypatch):
    monkeypatch.setenv("ATTNGUIDE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "focus" not in make_plugin_manager().registry.names("loss")


def test_plugins_command_lists_source_distribution_and_parameters(installed_example, capsys):
    import json

    from attnguide.cli.main import main

    assert main(["plugins", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["focus"]["distribution"] == "attnguide-focus"
    assert rows["focus"]["params"]["top_k"]["default"] == 8
    assert rows["syngen"]["distribution"] == "attnguide"
    assert rows["heatmaps"]["kind"] == "callback"


class ThirdPartyParser:
    name = "whitespace"


class ThirdPartyCallback:
    name = "noop"


class AllKinds:
    @hookimpl
    def attnguide_register_parsers(self):
        return [ThirdPartyParser]

    @hookimpl
    def attnguide_register_callbacks(self):
        return [ThirdPartyCallback]


def test_attnguide_register_parsers_and_attnguide_register_callbacks_fill_the_registry():
    pm = make_plugin_manager(autoload=False, extra=[("third", AllKinds())])
    assert pm.registry.get("parser", "whitespace") is ThirdPartyParser
    assert pm.registry.get("callback", "noop") is ThirdPartyCallback
    assert pm.registry.sources[("parser", "whitespace")] == "third"
