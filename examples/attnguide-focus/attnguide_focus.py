"""attnguide-focus: a guidance loss that gathers each subject's attention into few pixels."""

from __future__ import annotations

import pydantic
import torch

from attnguide import GuidanceContext, LossParams, LossPlugin, LossTerm, hookimpl


class FocusParams(LossParams):
    top_k: int = pydantic.Field(8, ge=1, description="pixels that should hold the attention")
    step_size: float = pydantic.Field(10.0, gt=0, description="alpha of the latent update")


class FocusLoss(LossPlugin[FocusParams]):
    """L = mean over subjects of (1 - attention mass in the subject's top-k pixels)."""

    name = "focus"
    Params = FocusParams
    default_window = (0.0, 0.5)  # the first half of the steps, like SynGen and A&E

    def compute(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        # maps: [tokens, H, W] float32; each subject may span several BPE pieces
        subjects = [word.tokens for word in ctx.analysis.entities if word.tokens]
        if not subjects:
            return None
        losses = []
        for tokens in subjects:
            heat = maps[list(tokens)].mean(0).flatten()
            heat = heat / heat.sum()
            k = min(self.params.top_k, heat.numel())
            losses.append(1.0 - heat.topk(k).values.sum())
        value = torch.stack(losses).mean()
        return LossTerm(value, step_size=self.params.step_size, logs={"subjects": len(subjects)})


@hookimpl
def attnguide_register_losses() -> list[type]:
    return [FocusLoss]
