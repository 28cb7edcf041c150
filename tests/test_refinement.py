"""Iterative refinement gives Attend-and-Excite's reference result with one forward less."""

from __future__ import annotations

import torch

from attnguide.engine.guidance import guide_image
from attnguide.plugin.losses import LossParams, LossPlugin
from attnguide.plugin.manager import run_plugin_manager
from attnguide.engine.state import ImageRecord
from attnguide.types import GuidanceContext, LossTerm, PromptAnalysis, PromptTokens

TARGET = 0.2
ALPHA = 0.3
CAP = 20


def loss_of(maps: torch.Tensor) -> torch.Tensor:
    return (1.0 - torch.sigmoid(maps).mean()).clamp_min(0.0)


class Toy(LossPlugin):
    name = "toy"

    class Params(LossParams):
        cap: int = CAP

    def compute(self, ctx, maps):
        return LossTerm(loss_of(maps), step_size=ALPHA, refine_below=TARGET, max_refinement=self.params.cap)


def reference_loop(z0: torch.Tensor, f, cap: int) -> tuple[torch.Tensor, int]:
    """A literal transcription of the reference control flow (forward counting included)."""
    forwards = 0

    def forward(z):
        nonlocal forwards
        forwards += 1
        return loss_of(f(z))

    def update(z, loss):
        (g,) = torch.autograd.grad(loss, [z])
        return z - ALPHA * g

    z = z0.clone().requires_grad_(True)
    loss = forward(z)
    if loss > TARGET:
        iteration = 0
        while loss > TARGET:
            iteration += 1
            z = z.clone().detach().requires_grad_(True)
            loss = forward(z)
            z = update(z, loss)
            if iteration >= cap:
                break
        z = z.clone().detach().requires_grad_(True)
        loss = forward(z)
    z = update(z, loss)
    return z.detach(), forwards


def test_refinement_matches_reference_control_flow_with_one_forward_less():
    torch.manual_seed(0)
    weight = torch.randn(8, 8)
    calls = {"n": 0}

    def f(z):
        calls["n"] += 1
        return (z.flatten(1) @ weight).reshape(1, 8) * 0.1 - 3.0

    z0 = torch.randn(1, 8)
    for cap in (1, 3, CAP):
        calls["n"] = 0
        expected, ref_forwards = reference_loop(z0, f, cap)
        calls["n"] = 0
        pm = run_plugin_manager([("toy", Toy({"cap": cap}))])
        analysis = PromptAnalysis("x", PromptTokens("x", ("<s>", "x", "</s>"), (1,), 2))
        ctx = GuidanceContext(0, 50, 981, 0, analysis, {})
        record = ImageRecord(0, "x", 0)
        got, _ = guide_image(pm, ctx, z0, f, {"toy": 1.0}, record)
        assert torch.allclose(got, expected, atol=1e-6)
        assert calls["n"] == ref_forwards - 1
        assert record.refinement_iterations[0] <= cap
