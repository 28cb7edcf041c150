"""``attnguide.testing``: the helpers plugin authors' tests are built from."""

from __future__ import annotations

import pytest
import torch

import attnguide
from attnguide import ConfigError, LossRecord
from attnguide.testing import analysis_for, context_for, peaked_maps, positions, random_maps, run_plugin


def test_analysis_for_binds_modifiers_to_nouns_on_the_real_tokenizer():
    analysis = analysis_for("a pink sunflower and a blue hydrangea", {"sunflower": ["pink"], "hydrangea": ["blue"]})
    assert [(b.entity.text, [m.text for m in b.modifiers]) for b in analysis.bindings] == [
        ("sunflower", ["pink"]), ("hydrangea", ["blue"])]
    # "hydrangea" is two BPE pieces in CLIP's vocabulary: both positions are bound
    assert positions(analysis, "hydrangea") == (7, 8)
    assert positions(analysis, "pink") == (2,)
    assert analysis.tokens.prompt_positions == tuple(range(1, 9))


def test_analysis_for_refuses_a_plain_word_list_that_would_bind_no_modifier():
    with pytest.raises(ConfigError, match=r"bindings must be \{noun: \[modifiers\]\}"):
        analysis_for("a red cat", ["cat"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'dog'"):
        analysis_for("a red cat", {"dog": ["red"]})


def test_peaked_maps_sum_to_one_over_tokens_and_peak_where_asked():
    analysis = analysis_for("a red cat", {"cat": ["red"]})
    maps = peaked_maps(analysis, {"cat": (3, 12), 2: (10, 1)}, size=16)
    assert maps.shape == (77, 16, 16) and maps.dtype == torch.float32
    assert torch.allclose(maps.sum(0), torch.ones(16, 16))
    assert divmod(int(maps[3].argmax()), 16) == (3, 12)
    assert divmod(int(maps[2].argmax()), 16) == (10, 1)
    # an unnamed token is flat where no bump is
    assert maps[5].max() - maps[5].min() < maps[3].max() - maps[3].min()


def test_random_maps_are_seeded_distributions_over_tokens():
    a, b = random_maps(10, 4, seed=1), random_maps(10, 4, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, random_maps(10, 4, seed=2))
    assert torch.allclose(a.sum(0), torch.ones(4, 4))


def test_context_for_gives_a_fresh_state_and_the_step():
    analysis = analysis_for("a red cat", {"cat": ["red"]})
    ctx = context_for(analysis, step=3, num_steps=10)
    assert (ctx.step, ctx.num_steps, ctx.state, ctx.refinement) == (3, 10, {}, 0)


def test_run_plugin_runs_a_registered_loss_through_the_engine_and_returns_typed_records():
    records = run_plugin({"name": "syngen", "step_size": 3.0}, "a red cat and a blue frog",
                         {"cat": ["red"], "frog": ["blue"]}, steps=4)
    assert [r.step for r in records] == [0, 1]
    assert all(isinstance(r, LossRecord) and r.plugin == "syngen" and r.step_size == 3.0 for r in records)
    assert set(records[0].logs) == {"pos", "neg"} and records[0].logs["pos"] > 0


def test_loss_record_reads_like_the_metadata_json():
    record = LossRecord(step=1, refinement=0, plugin="syngen", value=0.5, weight=1.0, step_size=20.0,
                        logs={"pos": 0.7})
    assert record.to_dict() == {"step": 1, "refinement": 0, "plugin": "syngen", "value": 0.5, "weight": 1.0,
                                "step_size": 20.0, "pos": 0.7}
    assert record["pos"] == 0.7 and record["value"] == 0.5
    with pytest.raises(KeyError, match="has no 'neg'"):
        record["neg"]


def test_the_public_api_exports_what_users_touch():
    for name in ["Engine", "load_pipeline", "LossPlugin", "LossParams", "Callback", "GuidanceContext",
                 "LossTerm", "LossRecord", "PromptAnalysis", "RuntimeConfig", "SamplingConfig", "hookimpl",
                 "AttnguideError", "ConfigError", "PluginError", "ParserError", "ModelLoadError", "RecipeError",
                 "Parser", "make_plugin_manager"]:
        assert name in attnguide.__all__ and getattr(attnguide, name) is not None
    assert set(attnguide.__all__) <= set(dir(attnguide))


def test_plugins_and_parsers_need_no_type_ignore_for_their_params():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in [*(root / "plugins").glob("*.py"), *(root / "parsers").glob("*.py")]:
        assert "type: ignore" not in path.read_text(), path.name
