"""Device, precision and distribution through Lightning Fabric - the only device layer."""

from __future__ import annotations

from typing import Any

import pydantic


class RuntimeConfig(pydantic.BaseModel):
    """Fabric settings. ``precision``: ``32-true`` on CPU; ``16-mixed``/``bf16-mixed`` on CUDA."""

    model_config = pydantic.ConfigDict(extra="forbid")

    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    precision: str = "32-true"
    strategy: str = "auto"


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
