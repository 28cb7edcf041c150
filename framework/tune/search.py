"""The tune loop: score every grid point on the calibration split, choose the best mean, then
score the chosen point and ``none`` on the held-out split.

Images come from ``Engine.generate`` (the same path as ``attnguide generate`` and ``attnguide
run``), in batches of calibration or held-out samples at one point. Every score is logged
(``attnguide.tune.log``) as its batch finishes, so an interrupted run, rerun with the same
settings, skips what is done; growing the grid reuses the points already scored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .log import EvaluationLog, settings_hash
from .method import check_space, method_specs, with_point
from .objective import Metric, metric_from_callable
from .report import summarise, write_json
from .space import Dimension, grid_points, random_points
from .splits import Sample

Point = dict[str, Any]


def tune(
    engine: Any,
    method: str | Sequence[Mapping[str, Any]],
    space: Sequence[Dimension] | Mapping[str, Sequence[Any]],
    metric: Metric | Callable[[Any, str], float],
    calibration: Sequence[Sample],
    heldout: Sequence[Sample],
    *,
    out_dir: str | Path | None = None,
    search: str = "grid",
    trials: int | None = None,
    search_seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
    settings: Mapping[str, Any] | None = None,
    baseline: Sequence[float] | None = None,
    **sampling: Any,
) -> dict[str, Any]:
    """Tune ``method`` (a label such as ``"syngen"``, or its loss specs) over ``space`` (dimensions,
    or ``{name: values}``) with ``engine`` (an ``attnguide.Engine``); return ``tune.json``'s dict.

    ``metric`` scores each image (a ``Metric`` or an ``(image, prompt) -> float``); higher is
    better. ``search="random"`` evaluates ``trials`` seeded random grid points instead of all.
    With ``out_dir``, scores go to ``out_dir/evaluations.jsonl`` (resumable; the folder is locked
    while the run lasts) and the result to ``out_dir/tune.json``. ``settings`` adds what else
    decides the scores (the model's name ...) to the log's settings hash; ``sampling`` goes to
    ``Engine.generate`` (``steps``, ``guidance_scale`` ...). ``baseline``: the held-out scores of
    ``none``, one per held-out sample in order, when they were already computed with the same
    engine, metric and sampling (``attnguide.tune.ablation`` shares them between methods).
    """
    registry = engine.pm.registry
    specs = method_specs(method, registry) if isinstance(method, str) else [dict(s) for s in method]
    dims = list(space) if not isinstance(space, Mapping) else [
        Dimension(str(k), tuple(v), f"space[{k!r}]") for k, v in space.items()]
    check_space(specs, dims, registry)
    points = _points(dims, search, trials, search_seed)
    scorer = _scorer(metric, batch_size)
    _check_disjoint(calibration, heldout)
    if baseline is not None and len(baseline) != len(heldout):
        raise ConfigError(f"baseline has {len(baseline)} scores for {len(heldout)} held-out samples")
    config = {"method": specs, "metric": scorer.name, "sampling": sampling, **dict(settings or {})}
    with _open_log(out_dir, config) as (folder, log):
        run = _Runner(engine, specs, scorer, log, batch_size, sampling)
        total = len(points) * len(calibration) + (2 if baseline is None else 1) * len(heldout)
        with _bar(progress, total) as bar:
            calib_scores = [run.scores(point, calibration, bar) for point in points]
            best = choose(calib_scores)
            held_chosen = run.scores(points[best], heldout, bar)
            held_none = run.scores(None, heldout, bar) if baseline is None else [float(v) for v in baseline]
        result = summarise(points, calib_scores, best, held_chosen, held_none, heldout,
                           method=specs, metric=scorer.name, search={"kind": search, "seed": search_seed,
                                                                       "trials": trials, "dimensions": dims},
                           sampling=sampling, calibration=calibration)
        if folder is not None:
            write_json(folder, result)
        return result


def baseline_scores(
    engine: Any,
    metric: Metric | Callable[[Any, str], float],
    heldout: Sequence[Sample],
    *,
    out_dir: str | Path | None = None,
    batch_size: int = 8,
    progress: bool = True,
    settings: Mapping[str, Any] | None = None,
    **sampling: Any,
) -> list[float]:
    """The scores of ``none`` (no guidance) on ``heldout``, in order: what ``tune`` compares every
    chosen point with, computed once here when several methods share one held-out split. With
    ``out_dir``, logged to ``out_dir/evaluations.jsonl`` (resumable, locked while it runs)."""
    scorer = _scorer(metric, batch_size)
    config = {"method": [], "metric": scorer.name, "sampling": sampling, **dict(settings or {})}
    with _open_log(out_dir, config) as (_, log), _bar(progress, len(heldout)) as bar:
        return _Runner(engine, [], scorer, log, batch_size, sampling).scores(None, heldout, bar)


def _scorer(metric: Metric | Callable[[Any, str], float], batch_size: int) -> Metric:
    """``metric`` as a ``Metric``, once ``batch_size`` is known to be usable."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    return metric if isinstance(metric, Metric) else metric_from_callable(metric)


@contextlib.contextmanager
def _open_log(out_dir: str | Path | None, config: Mapping[str, Any]) -> Iterator[tuple[Path | None, EvaluationLog]]:
    """``(folder, the evaluation log of config's settings)``; with ``out_dir``, the folder is
    created and holds the run lock until the block ends (also on an error)."""
    folder = Path(out_dir) if out_dir is not None else None
    lock = None
    if folder is not None:
        from ..runs.lock import RunLock

        folder.mkdir(parents=True, exist_ok=True)
        lock = RunLock.acquire(folder)
    try:
        yield folder, EvaluationLog(folder, settings_hash(config))
    finally:
        if lock is not None:
            lock.release()


def choose(scores: Sequence[Sequence[float]]) -> int:
    """The index of the point with the highest mean score; the first such point on a tie."""
    means = [sum(s) / len(s) if s else float("-inf") for s in scores]
    return max(range(len(means)), key=lambda i: (means[i], -i))


def _points(dims: Sequence[Dimension], search: str, trials: int | None, seed: int) -> list[Point]:
    if search == "grid":
        return grid_points(dims)
    if search == "random":
        if trials is None:
            raise ConfigError("--search random needs --trials N (how many grid points to evaluate)")
        return random_points(dims, trials, seed)
    raise ConfigError(f"unknown --search {search!r}; choose grid or random")


def _check_disjoint(calibration: Sequence[Sample], heldout: Sequence[Sample]) -> None:
    if not calibration or not heldout:
        raise ConfigError("tune needs at least one calibration and one held-out sample")
    shared_prompts = {s.prompt for s in calibration} & {s.prompt for s in heldout}
    shared_seeds = {s.seed for s in calibration} & {s.seed for s in heldout}
    if shared_prompts or shared_seeds:
        what = f"prompt {min(shared_prompts)!r}" if shared_prompts else f"seed {min(shared_seeds)}"
        raise ConfigError(f"the calibration and held-out splits share {what}; they must be disjoint")


class _Runner:
    """Generates and scores the samples a point still lacks, in batches, logging each batch."""

    def __init__(self, engine: Any, specs: list[dict[str, Any]], metric: Metric, log: EvaluationLog,
                 batch_size: int, sampling: Mapping[str, Any]) -> None:
        self.engine, self.specs, self.metric, self.log = engine, specs, metric, log
        self.batch_size, self.sampling = batch_size, dict(sampling)

    def scores(self, point: Point | None, samples: Sequence[Sample], bar: Any) -> list[float]:
        """The score of every sample at ``point`` (None: no guidance), in sample order."""
        todo = [s for s in samples if self.log.score(point, s) is None]
        bar.update(len(samples) - len(todo))
        losses = [] if point is None else with_point(self.specs, point)
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            result = self.engine.generate([s.prompt for s in batch], [s.seed for s in batch], losses=losses,
                                          progress=False, **self.sampling)
            self.log.add(point, batch, self.metric.score(result.images, [s.prompt for s in batch]))
            bar.update(len(batch))
        found = [self.log.score(point, s) for s in samples]
        return [float(v) for v in found if v is not None]


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _bar(progress: bool, total: int) -> Any:
    """A tqdm bar over the evaluations (one per image), or a silent stand-in."""
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="tune", unit="image")

