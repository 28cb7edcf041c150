"""``attnguide tune``: choose a loss plugin's parameters on a calibration split against a metric,
then report the chosen values on a disjoint held-out split, paired with ``none`` (docs/tune.md).

``space`` parses and expands the search space, ``method`` checks it against the plugin,
``splits`` makes the disjoint samples, ``objective`` holds the metrics, ``log`` the resumable
record of scores, ``search`` the loop, ``report`` the JSON, table and recipe.
"""

from __future__ import annotations

from .objective import METRICS, Metric, builtin_metric, clip_metric, metric_from_callable, toy_binding_metric
from .search import choose, tune
from .space import Dimension, grid_points, parse_param, parse_values, random_points, read_space_file
from .splits import Sample, make_splits, toy_prompts

__all__ = [
    "METRICS",
    "Dimension",
    "Metric",
    "Sample",
    "builtin_metric",
    "choose",
    "clip_metric",
    "grid_points",
    "make_splits",
    "metric_from_callable",
    "parse_param",
    "parse_values",
    "random_points",
    "read_space_file",
    "toy_binding_metric",
    "toy_prompts",
    "tune",
]
