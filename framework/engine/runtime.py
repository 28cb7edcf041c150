"""Device, precision and distribution through Lightning Fabric - the only device layer."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
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
    ``threads``: torch's intra-op thread count in every process of ``attnguide run``. CPU kernels
    may sum in another order with another count, so it decides the last bits of an image: it is
    part of the content hash, and a fixed default (1, whatever ``devices`` is) keeps results
    the same across process and core counts. ``Engine`` itself never changes the count.
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
    threads: int = 1

    @pydantic.field_validator("threads", mode="before")
    @classmethod
    def _whole_positive(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("the intra-op thread count (torch.set_num_threads) must be a whole number, 1 or more")
        return value


def pin_threads(count: int) -> None:
    """Set torch's intra-op thread count of this process to ``count``."""
    import torch

    torch.set_num_threads(count)


@contextlib.contextmanager
def kept_threads() -> Iterator[None]:
    """Set back, after the block, torch's thread count and ``OMP_NUM_THREADS`` as found on entry
    (Lightning's launcher sets both to cores / processes when the variable is unset)."""
    import torch

    count, variable = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    try:
        yield
    finally:
        torch.set_num_threads(count)
        if variable is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = variable


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
