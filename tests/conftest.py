"""Shared fixtures: the tiny pipeline (built once per session) and engines over it."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):  # noqa: ANN001 - pytest hook
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_pipe():
    from attnguide.models.tiny import tiny_pipeline

    return tiny_pipeline()


@pytest.fixture()
def fresh_tiny_pipe():
    from attnguide.models.tiny import tiny_pipeline

    return tiny_pipeline()
