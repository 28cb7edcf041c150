import pytest
import torch

from attnguide.testing import analysis_for, context_for, positions, run_plugin
from attnguide_focus import FocusLoss

PROMPT = "a red cat and a blue frog"
BINDINGS = {"cat": ["red"], "frog": ["blue"]}          # {noun: [modifiers]}


def test_focus_loss_is_one_minus_top_k_mass_on_hand_computed_maps():
    analysis = analysis_for(PROMPT, BINDINGS)
    maps = torch.zeros(77, 2, 2)                       # [tokens, H, W]
    maps[positions(analysis, "cat")] = torch.tensor([[0.4, 0.1], [0.3, 0.2]])     # top-2 mass 0.7
    maps[positions(analysis, "frog")] = torch.tensor([[0.25, 0.25], [0.25, 0.25]])  # top-2 mass 0.5
    term = FocusLoss({"top_k": 2}).compute(context_for(analysis), maps)
    assert term.value.item() == pytest.approx(((1 - 0.7) + (1 - 0.5)) / 2)


def test_focus_runs_end_to_end_on_the_tiny_model():
    records = run_plugin(FocusLoss(), PROMPT, BINDINGS, steps=4)
    assert [r.step for r in records] == [0, 1]         # window: the first half of the steps
    assert all(r.logs["subjects"] == 2 for r in records)
