"""One dispatch path: run order, refusal of whatever would never be called, errors that name
plugin and hook, the one place windows are decided, and the public latent-update route."""

from __future__ import annotations

import types

import pytest
import torch

from attnguide import Callback, ConfigError, LossPlugin, LossTerm, PluginError, hookimpl
from attnguide.plugin.dispatch import invoke, run_order
from attnguide.plugin.losses import window_contains
from attnguide.plugin.manager import make_plugin_manager, run_plugin_manager
from attnguide.testing import analysis_for, run_plugin, tiny_engine

PROMPT = "a red cat and a blue frog"
BINDINGS = {"cat": ["red"], "frog": ["blue"]}


class LightningStyle(Callback):
    """Hook methods named the Lightning way, without ``@hookimpl``."""

    name = "lightning_style"

    def __init__(self, params=None):
        super().__init__(params)
        self.events = []

    def on_run_start(self, run):
        self.events.append("run_start")

    def on_step_end(self, step):
        self.events.append(f"step_end {step}")

    def on_run_end(self, images):
        self.events.append("run_end")


def test_a_callback_written_the_lightning_way_without_hookimpl_is_called():
    cb = LightningStyle()
    tiny_engine().generate(PROMPT, [0], steps=2, callbacks=[cb], output_type="latent", progress=False)
    assert cb.events == ["run_start", "step_end 0", "step_end 1", "run_end"]


def test_run_hooks_in_a_registrar_module_are_refused_saying_where_they_belong():
    registrar = types.ModuleType("my_registrar")

    def on_step_end(step):
        pass

    registrar.on_step_end = on_step_end
    with pytest.raises(PluginError, match=r"'my_registrar' implements run hook 'on_step_end'.*Callback"):
        make_plugin_manager(autoload=False, extra=[("my_registrar", registrar)])


def test_an_update_hook_in_a_registrar_is_refused_too():
    class Registrar:
        @hookimpl
        def attnguide_update_latents(self, latents):
            return latents

    with pytest.raises(PluginError, match="run hook 'attnguide_update_latents'"):
        make_plugin_manager(autoload=False, extra=[("reg", Registrar())])


def test_a_registrar_hook_on_a_run_plugin_is_refused():
    class Confused(Callback):
        name = "confused"

        def attnguide_register_losses(self):
            return []

    with pytest.raises(PluginError, match="'confused' implements registrar hook 'attnguide_register_losses'"):
        run_plugin_manager([("confused", Confused())])


@pytest.mark.parametrize("marker", [{"wrapper": True}, {"hookwrapper": True}])
def test_a_wrapper_hookimpl_is_refused_at_registration_with_a_clear_message(marker):
    class Wrapping(Callback):
        name = "wrapping"

        @hookimpl(**marker)
        def on_step_end(self, step):
            yield

    with pytest.raises(PluginError, match=r"'wrapping': hook on_step_end is marked as a wrapper"):
        tiny_engine().generate(PROMPT, [0], steps=1, callbacks=[Wrapping()], output_type="latent", progress=False)


def test_a_misspelt_unmarked_hook_method_is_refused_with_the_closest_name():
    class Typo(Callback):
        name = "typo"

        def on_step_ended(self, step):
            pass

    with pytest.raises(PluginError, match=r"'typo' implements unknown hook 'on_step_ended'; did you mean 'on_step_end'"):
        tiny_engine().generate(PROMPT, [0], steps=1, callbacks=[Typo()], output_type="latent", progress=False)


class Recorder(Callback):
    name = "first"

    def __init__(self, label, log):
        super().__init__()
        self.label, self.log = label, log

    def on_step_start(self, step):
        self.log.append(self.label)


def test_callbacks_are_called_in_the_order_the_run_lists_them():
    log: list[str] = []
    a, b, c = Recorder("a", log), Recorder("b", log), Recorder("c", log)
    b.name = "second"
    c.name = "third"
    tiny_engine().generate(PROMPT, [0], steps=1, callbacks=[a, b, c], output_type="latent", progress=False)
    assert log == ["a", "b", "c"]


def test_losses_are_evaluated_and_logged_in_the_order_the_run_lists_them():
    engine = tiny_engine()
    analysis = analysis_for(PROMPT, BINDINGS)
    for order in (["attend_excite", "syngen"], ["syngen", "attend_excite"]):
        result = engine.generate(PROMPT, [0], steps=2, losses=order, analyses=[analysis],
                                 output_type="latent", progress=False)
        step0 = [r.plugin for r in result.records[0].losses if r.step == 0 and r.refinement == 0]
        assert step0 == order


def test_run_order_keeps_registration_order_with_tryfirst_and_trylast_at_the_ends():
    class P:
        def __init__(self, tag):
            self.tag = tag

        def on_step_start(self, step):
            return self.tag

    class First(P):
        @hookimpl(tryfirst=True)
        def on_step_start(self, step):
            return self.tag

    class Last(P):
        @hookimpl(trylast=True)
        def on_step_start(self, step):
            return self.tag

    plugins = [("x", P("x")), ("last", Last("last")), ("y", P("y")), ("first", First("first")), ("z", P("z"))]
    pm = run_plugin_manager(plugins)
    assert [r for _, r in invoke(pm.hook.on_step_start, step=0)] == ["first", "x", "y", "z", "last"]
    assert [impl.plugin_name for impl in run_order(pm.hook.on_step_start)][0] == "first"


def test_a_failing_hook_becomes_a_plugin_error_naming_plugin_hook_and_step():
    class Broken(Callback):
        name = "broken"

        def on_step_end(self, step):
            if step == 1:
                raise RuntimeError("disk on fire")

    with pytest.raises(PluginError, match=r"plugin 'broken' failed in hook on_step_end at step 1: RuntimeError: disk on fire"):
        tiny_engine().generate(PROMPT, [0], steps=2, callbacks=[Broken()], output_type="latent", progress=False)


# -- windows ---------------------------------------------------------------------------------
def test_window_contains_its_start_and_excludes_its_end():
    assert window_contains((0.0, 0.5), 0, 4) and window_contains((0.0, 0.5), 1, 4)
    assert not window_contains((0.0, 0.5), 2, 4)  # 2 == 0.5 * 4: the end is excluded
    assert window_contains((0.25, 0.5), 1, 4) and not window_contains((0.25, 0.5), 0, 4)


class Counting(LossPlugin):
    """A loss active exactly where its ``active_at`` says, counting guidance forwards."""

    name = "counting"

    def __init__(self, active_steps):
        super().__init__()
        self.active_steps, self.computed = set(active_steps), []

    def active_at(self, step, num_steps, time=None):
        return step in self.active_steps

    def compute(self, ctx, maps):
        self.computed.append(ctx.step)
        return LossTerm(maps[2].sum(), step_size=1.0)


def test_the_engine_asks_the_plugins_window_and_runs_no_guidance_forward_outside_it():
    engine = tiny_engine()
    grad_forwards: list[int] = []
    handle = engine.pipe.unet.register_forward_pre_hook(
        lambda *_: grad_forwards.append(1) if torch.is_grad_enabled() else None)
    try:
        plugin = Counting({1, 3})
        run_plugin(plugin, PROMPT, BINDINGS, steps=5)
    finally:
        handle.remove()
    assert plugin.computed == [1, 3]
    assert len(grad_forwards) == 2


def test_window_boundary_step_is_not_guided_end_to_end():
    records = run_plugin({"name": "syngen", "window": [0.0, 0.5]}, PROMPT, BINDINGS, steps=4)
    assert sorted({r.step for r in records}) == [0, 1]
    records = run_plugin({"name": "syngen", "window": [0.5, 1.0]}, PROMPT, BINDINGS, steps=4)
    assert sorted({r.step for r in records}) == [2, 3]


# -- the public route to replace the latent update --------------------------------------------
class KeepLatents(Callback):
    """Replaces the latent update with the identity (no monkeypatching: a run plugin)."""

    name = "keep_latents"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def attnguide_update_latents(self, latents, terms):
        self.calls += 1
        assert terms and terms[0][0] == "syngen"
        return latents.detach()


class SignStep(LossPlugin):
    """A loss that also brings its own update: a signed-gradient step of 0.01."""

    name = "sign_step"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.moves: list[torch.Tensor] = []

    def compute(self, ctx, maps):
        return LossTerm(maps[list(ctx.analysis.entities[0].tokens)].sum(), step_size=1.0)

    def attnguide_update_latents(self, latents, terms):
        (grad,) = torch.autograd.grad(sum(t.value for _, _, t in terms), [latents])
        new = (latents - 0.01 * grad.sign()).detach()
        self.moves.append((new - latents).detach())
        return new


def test_a_loss_plugin_can_bring_its_own_update_and_it_wins_over_the_default():
    plugin = SignStep(window=(0.0, 0.5))
    records = run_plugin(plugin, PROMPT, BINDINGS, steps=4)
    assert [r.step for r in records] == [0, 1]
    assert len(plugin.moves) == 2
    for move in plugin.moves:
        steps = move.abs()
        assert torch.all((steps - 0.01).abs() < 1e-6) or torch.all((steps < 1e-6) | ((steps - 0.01).abs() < 1e-6))
        assert steps.max() > 0.009  # the default update (z - grad) would not move by exactly 0.01


def test_an_update_hook_returning_something_else_than_a_tensor_is_a_plugin_error():
    class Bad(Callback):
        name = "bad_update"

        def attnguide_update_latents(self, latents):
            return "oops"

    with pytest.raises(PluginError, match="returned str, expected a tensor"):
        run_plugin("syngen", PROMPT, BINDINGS, steps=2, callbacks=[Bad()])


def test_a_loss_passed_as_a_callback_or_the_reverse_is_a_config_error():
    with pytest.raises(ConfigError, match=r"callbacks\[0\]: 'syngen' is not a callback plugin; pass it in losses"):
        tiny_engine().generate(PROMPT, [0], steps=1, callbacks=[make_plugin_manager(autoload=False)
                                                                 .registry.get("loss", "syngen")()])


def test_only_the_dispatch_module_calls_hook_implementations():
    # one path: no module walks pluggy's implementations or calls them by hand
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = [str(p.relative_to(root)) for folder in ("framework", "plugins", "parsers")
                 for p in (root / folder).rglob("*.py")
                 if p.name != "dispatch.py" and (".get_hookimpls(" in p.read_text() or "impl.function(" in p.read_text())]
    assert offenders == []
