"""``attnguide.lazy``: module stand-ins that import on first attribute read."""

from __future__ import annotations

import subprocess
import sys

import pytest

from attnguide.lazy import lazy_import


def test_stand_in_imports_on_first_read_and_forwards_every_read():
    code = (
        "import sys\n"
        "from attnguide.lazy import lazy_import\n"
        "mod = lazy_import('json.decoder')\n"
        "before = 'json.decoder' in sys.modules\n"
        "value = mod.JSONDecodeError\n"
        "import json.decoder as real\n"
        "real.attnguide_marker = 1\n"
        "print(before, value is real.JSONDecodeError, mod.attnguide_marker)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # not imported before the first read; the real class; attributes added later are seen
    assert proc.stdout.split() == ["False", "True", "1"]


def test_unknown_module_fails_at_first_use_like_an_import():
    mod = lazy_import("attnguide_no_such_module")
    with pytest.raises(ModuleNotFoundError, match="attnguide_no_such_module"):
        mod.anything  # noqa: B018


def test_torch_stand_in_is_the_real_module():
    import torch

    from attnguide.lazy import F, np, torch as lazy_torch

    x = lazy_torch.ones(3)
    assert isinstance(x, torch.Tensor)
    assert lazy_torch.float32 is torch.float32
    assert F.softmax is torch.nn.functional.softmax
    assert np.float32(1.0) == 1.0
    assert "softmax" in dir(F)
