"""Device, precision and distribution through Lightning Fabric - the only device layer."""

from __future__ import annotations

from typing import Any

import pydantic


class RuntimeConfig(pydantic.BaseModel):
    """Fabric settings, and how the engine runs the denoiser.

    ``precision``: ``32-true`` on CPU; ``16-mixed``/``bf16-mixed`` on CUDA (for half-precision
    weights without autocast, load the model with ``dtype: float16`` and keep ``32-true``).
    ``batch_size``: images per engine call in ``attnguide run`` (one cell's jobs; guidance is
    batched too). ``compile``: ``torch.compile`` the denoiser for forwards that capture nothing
    (``compile_backend``: ``inductor``; ``eager`` checks the plumbing without a compiler).
    ``channels_last``: UNet weights in channels-last memory format (faster convolutions on GPUs).
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    precision: str = "32-true"
    strategy: str = "auto"
    batch_size: int = pydantic.Field(1, ge=1)
    compile: bool = False
    compile_backend: str = "inductor"
    channels_last: bool = False


def make_fabric(config: RuntimeConfig | None = None, **overrides: Any) -> Any:
    """A ``lightning.fabric.Fabric`` for ``config`` (not launched)."""
    from lightning.fabric import Fabric

    cfg = (config or RuntimeConfig()).model_copy(update=overrides)
    return Fabric(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        precision=cfg.precision,
        strategy=cfg.strategy,
    )
