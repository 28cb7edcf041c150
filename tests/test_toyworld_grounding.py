"""The token-grounding loss the toy model is trained with (attnguide.toyworld.grounding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnguide.engine.attention import CapturingAttnProcessor
from attnguide.models.tokenizer import clip_tokenizer
from attnguide.toyworld import sample
from attnguide.toyworld.data import ToyWorldDataset
from attnguide.toyworld.grounding import coverage, grounding_loss, grounding_targets, word_positions
from attnguide.toyworld.model import toy_text_encoder, toy_unet, toy_vae
from attnguide.toyworld.scene import Scene, ToyObject
from attnguide.toyworld.training import TextToImageModule


def test_grounding_loss_matches_hand_values_on_a_2x2_grid():
    maps = torch.zeros(1, 4, 2, 2)
    maps[0, 1] = torch.tensor([[3.0, 1.0], [0.0, 0.0]])  # 3/4 of it on the top-left cell
    maps[0, 2] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # uniform
    masks = torch.zeros(1, 3, 2, 2)
    masks[0, 0, 0, 0] = 1.0  # object 0: the top-left cell
    masks[0, 1, 1] = 0.5  # object 1: half of each bottom cell
    positions = torch.tensor([[[1, 2], [2, -1], [-1, -1]]])
    # object 0: token 1 -> inside 3/4, loss 1/16; token 2 -> inside 1/4, loss 9/16
    # object 1: token 2 -> inside (0.5 + 0.5) / 4 = 1/4, loss 9/16; the -1 rows are not counted
    expected = (1 / 16 + 9 / 16 + 9 / 16) / 3
    assert grounding_loss(maps, masks, positions).item() == pytest.approx(expected)


def test_grounding_loss_is_zero_on_perfect_maps_and_zero_with_a_graph_when_nothing_is_named():
    masks = torch.zeros(2, 3, 4, 4)
    masks[:, 0, :2, :2] = 1.0
    maps = torch.rand(2, 5, 4, 4) * 0 + masks[:, :1].expand(-1, 5, -1, -1)
    positions = torch.full((2, 3, 2), -1)
    positions[:, 0] = torch.tensor([3, 4])
    assert grounding_loss(maps, masks, positions).item() == pytest.approx(0.0)
    live = torch.rand(2, 5, 4, 4, requires_grad=True)
    none = grounding_loss(live, masks, torch.full((2, 3, 2), -1))
    assert none.item() == 0.0 and none.requires_grad


def test_targets_name_each_objects_colour_and_shape_tokens_and_cover_its_pixels():
    tokenizer = clip_tokenizer()
    scene = Scene(objects=(ToyObject("red", "circle", "large", (16.0, 16.0)),
                           ToyObject("blue", "square", "medium", (46.0, 46.0))))
    caption = "a large red circle and a blue square"
    masks, positions = grounding_targets(caption, scene, tokenizer)
    # <start> a large red circle and a blue square: red is row 3, circle 4, blue 7, square 8
    assert positions.tolist() == [[3, 4], [7, 8], [-1, -1]]
    assert word_positions(caption, ["blue", "square"], tokenizer) == [7, 8]
    assert masks.shape == (3, 16, 16) and masks[2].sum() == 0
    # circle of radius 0.85 * 13 px around (16, 16) -> cells of 4 px: centre cell (4, 4) fully covered
    assert masks[0, 4, 4] == 1.0 and masks[0, 12, 12] == 0.0
    assert masks[1, 11, 11] == 1.0 and masks[1, 4, 4] == 0.0
    area = np.pi * (0.85 * 13) ** 2 / 16  # in 4x4-pixel cells
    assert float(masks[0].sum()) == pytest.approx(area, rel=0.05)  # PIL fills edge pixels: +3%
    assert np.allclose(coverage(scene), masks[:2].numpy())


def test_dataset_with_grounding_returns_targets_of_its_own_scene():
    dataset = ToyWorldDataset(first_seed=700, length=4, objects=(1, 3), grounding=True)
    item = dataset[2]
    _, caption, scene = sample(702, 3)
    masks, positions = grounding_targets(caption, scene, clip_tokenizer())
    assert item["caption"] == caption
    assert torch.equal(item["masks"], masks) and torch.equal(item["positions"], positions)
    assert "masks" not in ToyWorldDataset(first_seed=700, length=4)[2]


def test_grounding_weight_adds_a_loss_with_gradient_to_the_unets_cross_attention():
    torch.manual_seed(0)
    module = TextToImageModule(toy_vae(), toy_unet(), toy_text_encoder(), grounding_weight=0.1, caption_dropout=0.0)
    batch = [ToyWorldDataset(first_seed=900, length=2, objects=(2, 2), grounding=True)[i] for i in range(2)]
    images = torch.stack([b["image"] for b in batch])
    masks = torch.stack([b["masks"] for b in batch])
    positions = torch.stack([b["positions"] for b in batch])
    denoising, grounding = module.loss(images, [b["caption"] for b in batch], masks, positions)
    # random maps are near uniform: each token has about the object's share of the 256 cells outside it
    share = masks[:, :2].sum(dim=(-2, -1)) / 256
    assert grounding.item() == pytest.approx(float(((1 - share) ** 2).mean()), abs=0.03)
    grounding.backward()
    key = module.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight
    assert key.grad is not None and key.grad.abs().sum() > 0
    assert not any(isinstance(p, CapturingAttnProcessor) for p in module.unet.attn_processors.values())
    assert denoising.item() > 0
