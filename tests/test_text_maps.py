"""SD3's CLIP + T5 maps combined into the CLIP positions the losses read: hand-computed values."""

from __future__ import annotations

import pytest
import torch

from attnguide.engine.text_maps import combine, token_matrix
from attnguide.models.t5_tokenizer import t5_tokenizer
from attnguide.models.tokenizer import clip_tokenizer


def test_token_matrix_spreads_each_clip_position_over_the_t5_pieces_of_its_span():
    m = token_matrix("a pink flamingo", clip_tokenizer(), t5_tokenizer(), 8)
    assert m.shape == (77, 8)
    # CLIP: <sot>=0, a=1, pink=2, flamingo=3, <eot>=4; T5: ▁a=0, ▁pink=1, ▁flaming=2, o=3, </s>=4
    assert m[1].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert m[2].tolist() == [0, 1, 0, 0, 0, 0, 0, 0]
    assert m[3].tolist() == [0, 0, 0.5, 0.5, 0, 0, 0, 0]
    assert m[0].sum() == 0 and m[4:].sum() == 0  # start, end, padding: no T5 piece


def _maps() -> torch.Tensor:
    """3 CLIP + 2 T5 keys over a 1x2 image, each pixel summing to 1 over all 5 keys."""
    clip = torch.tensor([[[0.2, 0.1]], [[0.1, 0.3]], [[0.1, 0.1]]])
    t5 = torch.tensor([[[0.4, 0.1]], [[0.2, 0.4]]])
    return torch.cat([clip, t5])


def _combine(mode):
    matrix = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.5]])  # position 0 has no T5 piece
    return combine(_maps(), matrix, mode)


def test_average_mode_by_hand():
    out = _combine("average")
    # pixel 0: clip renormalised = [.5, .25, .25], t5 = [2/3, 1/3]; T(1) = {0}, T(2) = {0, 1}
    p0 = torch.tensor([0.5, (0.25 + 2 / 3) / 2, (0.25 + 0.5) / 2])
    # pixel 1: clip = [.2, .6, .2], t5 = [.2, .8]
    p1 = torch.tensor([0.2, (0.6 + 0.2) / 2, (0.2 + 0.5) / 2])
    assert torch.allclose(out[:, 0, 0], p0 / p0.sum())
    assert torch.allclose(out[:, 0, 1], p1 / p1.sum())


@pytest.mark.parametrize("mode,pixel0", [
    ("clip", [0.5, 0.25, 0.25]),
    ("t5", [0.0, (2 / 3) / (2 / 3 + 0.5), 0.5 / (2 / 3 + 0.5)]),
])
def test_clip_and_t5_modes_by_hand(mode, pixel0):
    out = _combine(mode)
    assert torch.allclose(out[:, 0, 0], torch.tensor(pixel0))
    assert torch.allclose(out.sum(0), torch.ones(1, 2))
