"""Toy-world (image, caption) pairs as a torch ``Dataset`` and a Lightning ``DataModule``.

Item ``i`` is ``sample(first_seed + i, n_objects(i))``: the same index always gives the same
pair, whichever worker draws it. Training seeds start at ``TRAIN_SEED_OFFSET`` so that seeds below
it (the judge's and the evaluation's) are never trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..models.tokenizer import clip_tokenizer
from .grounding import grounding_targets
from .render import sample

if TYPE_CHECKING:
    from PIL import Image

TRAIN_SEED_OFFSET = 1_000_000
SEEDS_PER_RUN_SEED = 10_000_000  # run seed s trains on scenes TRAIN_SEED_OFFSET + s * this + i
DEFAULT_LENGTH = 1_000_000


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB ``PIL.Image`` -> ``[3, H, W]`` float32 in [-1, 1]."""
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32))
    return pixels.permute(2, 0, 1) / 127.5 - 1.0


class ToyWorldDataset(Dataset[dict[str, Any]]):
    """``length`` captioned scenes; item ``i`` is ``{"image": [3, 64, 64] float32 in [-1, 1],
    "caption": str, "seed": int}`` rendered from seed ``first_seed + i`` with
    ``objects[0] + i % (objects[1] - objects[0] + 1)`` objects (so counts cycle evenly).

    With ``grounding``, items also carry the token-grounding targets (``grounding_targets``):
    ``"masks": [3, 16, 16]`` object coverage and ``"positions": [3, 2]`` colour/shape token rows.
    """

    def __init__(self, first_seed: int, length: int = DEFAULT_LENGTH, objects: tuple[int, int] = (1, 3),
                 grounding: bool = False) -> None:
        lo, hi = objects
        if not 1 <= lo <= hi <= 3:
            raise ValueError(f"objects must be a range within (1, 3), got {objects}")
        if length < 1:
            raise ValueError(f"length must be positive, got {length}")
        self.first_seed, self.length, self.objects = first_seed, length, (lo, hi)
        self.tokenizer = clip_tokenizer() if grounding else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        lo, hi = self.objects
        seed = self.first_seed + index
        image, text, scene = sample(seed, lo + index % (hi - lo + 1))
        item = {"image": image_to_tensor(image), "caption": text, "seed": seed}
        if self.tokenizer is not None:
            item["masks"], item["positions"] = grounding_targets(text, scene, self.tokenizer)
        return item


class ToyWorldDataModule(lightning.LightningDataModule):  # type: ignore[misc]  # lightning is Any here (follow_imports=skip)
    """Batches ``{"image": [B, 3, 64, 64], "caption": list[str], "seed": [B] int64}`` (plus
    ``"masks": [B, 3, 16, 16]`` and ``"positions": [B, 3, 2]`` with ``grounding``).

    The train set is in a fixed order (scenes are already random), so a run is reproducible
    from ``seed`` alone; the validation set is 256 scenes from seeds never trained on.
    """

    def __init__(self, batch_size: int, num_workers: int = 0, seed: int = 0, objects: tuple[int, int] = (1, 3),
                 length: int = DEFAULT_LENGTH, grounding: bool = False) -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.objects, self.length, self.grounding = cast("tuple[int, int]", tuple(objects)), length, grounding

    def train_dataset(self) -> ToyWorldDataset:
        return ToyWorldDataset(TRAIN_SEED_OFFSET + self.seed * SEEDS_PER_RUN_SEED, self.length, self.objects,
                               grounding=self.grounding)

    def val_dataset(self) -> ToyWorldDataset:
        return ToyWorldDataset(20_000, 256, self.objects, grounding=self.grounding)

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader(self.train_dataset())

    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader(self.val_dataset())

    def _loader(self, dataset: ToyWorldDataset) -> DataLoader[dict[str, Any]]:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, drop_last=True)
