"""Metric models load from a local directory or the cache without the network, and a model that
is in neither fails at once with one message instead of retrying an unreachable hub."""

from __future__ import annotations

import time

import pytest
from metric_helpers import make_run_dir, tiny_clip_parts

from attnguide.cli.main import main
from attnguide.errors import ModelLoadError
from attnguide.metrics import models

MISSING = "attnguide-tests/no-such-clip"


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, no HF_HUB_OFFLINE, and a hub endpoint that refuses connections."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    return cache


def never_probe(*_args, **_kwargs):
    raise AssertionError("the hub was probed although the model is local or HF_HUB_OFFLINE is set")


def test_evaluate_without_cached_weights_fails_at_once_with_one_message(empty_cache, tmp_path, capfd):
    from transformers import CLIPModel, CLIPProcessor  # noqa: F401 - imported here so only the load is timed

    run_dir = make_run_dir(tmp_path, prompts=("a cat",), seeds=(0,))
    start = time.perf_counter()
    code = main(["evaluate", str(run_dir), "--metrics", "clip", "--clip-model", MISSING, "--phrases", "split",
                 "--quiet"])
    elapsed = time.perf_counter() - start
    err = capfd.readouterr().err
    assert code == 2
    assert elapsed < 10, f"took {elapsed:.1f} s: the hub was retried"
    assert err.count("cannot load the CLIP model") == 1 and err.count(MISSING) >= 1
    assert "is not reachable" in err and "Retrying" not in err
    assert err.strip().count("\n") == 0, f"more than the one error line:\n{err}"


def test_with_hf_hub_offline_the_hub_is_not_even_probed(empty_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "hub_reachable", never_probe)
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set") as info:
        models.load_clip(MISSING)
    assert "--clip-model PATH" in str(info.value)


def test_cached_weights_and_local_directories_load_without_the_network(empty_cache, tmp_path, monkeypatch):
    model, processor = tiny_clip_parts()
    snapshot = empty_cache / "models--attnguide-tests--tiny-clip" / "snapshots" / ("0" * 40)
    model.save_pretrained(snapshot)
    processor.save_pretrained(snapshot)
    (empty_cache / "models--attnguide-tests--tiny-clip" / "refs").mkdir()
    (empty_cache / "models--attnguide-tests--tiny-clip" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(models, "hub_reachable", never_probe)
    cached, _ = models.load_clip("attnguide-tests/tiny-clip")
    assert cached.config.projection_dim == model.config.projection_dim == 16
    local, _ = models.load_clip(str(snapshot))
    assert local.config.text_config.hidden_size == 32


def test_a_broken_local_directory_is_an_error_naming_it(empty_cache, tmp_path, monkeypatch):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    monkeypatch.setattr(models, "hub_reachable", never_probe)
    with pytest.raises(ModelLoadError, match="not-a-model"):
        models.load_clip(str(folder))


def test_the_hub_probe_reports_a_refused_connection_quickly(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    assert models.hub_reachable(timeout=2.0) is False
    assert time.perf_counter() - start < 2.5


def test_behind_a_proxy_the_hub_is_left_to_the_client(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert models.hub_reachable(timeout=0.5) is True
