"""Binding accuracy of guidance methods on the toy model, judged by ``detect``.

Every method sees the same samples: sample ``i`` is prompt ``i`` of a seeded prompt list with
generation seed ``seed + i``, so methods are compared image for image. Two-object prompts are
"a {c1} {s1} and a {c2} {s2}" (distinct colours, distinct shapes, no size words; "an" before
"orange", as in the training captions); single-object prompts are "a {c} {s}". ``attnguide toyworld evaluate`` is the command-line front end.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..keyvalue import parse_key_values
from ..metrics.stats import bootstrap_ci
from ..plugin.manager import Registry
from ..plugin.specs import Kind, build_plugin, to_spec
from .judge import binding_outcome, detect
from .methods import DEFAULT_METHODS as DEFAULT_METHODS  # explicit re-exports (mypy): both names were
from .methods import METHODS as METHODS  # defined here before methods.py kept them out of torch's way
from .render import article
from .scene import COLOURS, SHAPES

BASELINE = "none"  # the method every other one is paired with
PROMPT_SEED_OFFSET = 7919  # prompts and generation seeds come from different streams


@dataclass(frozen=True)
class Sample:
    """One evaluated image: ``kind`` is ``"two"`` or ``"single"``; ``pairs`` are the asked-for
    ``(colour, shape)`` objects; ``detected`` what the judge saw; ``outcome`` ``binding_outcome``."""

    method: str
    kind: str
    index: int
    prompt: str
    seed: int
    pairs: list[list[str]]
    detected: list[list[str]]
    outcome: dict[str, bool]

    def key(self) -> tuple[str, str, int]:
        return (self.method, self.kind, self.index)


def two_object_prompt(c1: str, s1: str, c2: str, s2: str) -> str:
    """The evaluation's two-object phrasing: "a {c1} {s1} and a {c2} {s2}" ("an" before vowels)."""
    return f"{article(c1)} {c1} {s1} and {article(c2)} {c2} {s2}"


def two_object_prompts(n: int, seed: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """``n`` prompts "a {c1} {s1} and a {c2} {s2}" with their pairs; the same ``seed`` gives the same list."""
    rng = np.random.default_rng(seed + PROMPT_SEED_OFFSET)
    out = []
    for _ in range(n):
        c1, c2 = (str(c) for c in rng.choice(list(COLOURS), size=2, replace=False))
        s1, s2 = (str(s) for s in rng.choice(SHAPES, size=2, replace=False))
        out.append((two_object_prompt(c1, s1, c2, s2), [(c1, s1), (c2, s2)]))
    return out


def single_object_prompts(n: int, seed: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """``n`` prompts "a {c} {s}" cycling through all 48 colour-shape pairs in a seeded order."""
    rng = np.random.default_rng(seed + 2 * PROMPT_SEED_OFFSET)
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    order = [pairs[k] for k in rng.permutation(len(pairs))]
    return [(f"{article(c)} {c} {s}", [(c, s)]) for c, s in (order[i % len(order)] for i in range(n))]


def parse_method(label: str) -> tuple[str, dict[str, Any]]:
    """``"syngen:step_size=5:weight=2"`` -> ``("syngen", {"step_size": 5, "weight": 2})``: a method
    name and parameter overrides for its losses (values read as YAML scalars); ``ConfigError`` on a
    malformed pair."""
    name, *pairs = label.split(":")
    return name.strip(), parse_key_values(pairs, f"method {label!r}:", "syngen:step_size=5")


def resolve_methods(names: Sequence[str], loss_plugins: Sequence[str],
                    registry: Registry | None = None) -> dict[str, list[dict[str, Any]]]:
    """Method labels -> loss specs. A label is a method name, optionally with overrides applied
    to each of its losses (``parse_method``: ``"syngen:step_size=5"``); an unknown name raises
    ``ConfigError`` with the closest match. With ``registry``, every resulting spec is checked
    as any loss spec is (``attnguide.plugin.specs``): a misspelt parameter or a bad value is a
    ``ConfigError`` naming the label, before any weights are loaded."""
    known = {**METHODS, **{p: [{"name": p}] for p in loss_plugins if p not in METHODS}}
    out = {}
    for label in names:
        name, overrides = parse_method(label)
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown method {name!r}{hint}; choose from {', '.join(known)}")
        if overrides and not known[name]:
            raise ConfigError(f"method {label!r}: {name!r} runs no loss, so it has no parameters to set")
        out[label] = [{**spec, **overrides} for spec in known[name]]
        if registry is not None:
            for raw in out[label]:
                kind: Kind = "callback" if _is_callback(registry, raw["name"]) else "loss"
                spec = to_spec(kind, raw, f"method {label!r}")
                if spec is not None:
                    build_plugin(spec, registry, f"method {label!r}")
    return out


def _is_callback(registry: Registry, name: str) -> bool:
    """Whether a method name is a registered callback (an intervention such as Structured
    Diffusion Guidance) rather than a loss."""
    return name in registry.classes["callback"] and name not in registry.classes["loss"]


RATES = {"both_present": "both objects' shapes drawn, in any colour (not neglect)", "neglect": "an asked-for "
         "shape missing in every colour", "swap": "the two colours exchanged", "leak": "a shape drawn in the other "
         "object's colour instead of its own (swaps included)"}
"""The two-object rates ``summarise`` reports beside binding accuracy, each with its interval."""


def summarise(samples: Sequence[Sample], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{method: {binding_accuracy, ci95, n, R_rate, R_ci95 for R in RATES, single_object_accuracy,
    single_object_ci95, single_object_n}}``; intervals are seeded percentile bootstraps. Outcomes
    are recomputed from each sample's asked-for and detected pairs, so logs written before a rate
    existed are scored the same way."""
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        two = [binding_outcome([(c, s) for c, s in x.pairs], [(c, s) for c, s in x.detected])
               for x in samples if x.method == method and x.kind == "two"]
        single = [s.outcome["correct"] for s in samples if s.method == method and s.kind == "single"]
        acc = bootstrap_ci([o["correct"] for o in two])
        one = bootstrap_ci(single)
        out[method] = {
            "binding_accuracy": _num(acc.mean),
            "ci95": [_num(acc.low), _num(acc.high)],
            "n": len(two),
            "single_object_accuracy": _num(one.mean),
            "single_object_ci95": [_num(one.low), _num(one.high)],
            "single_object_n": len(single),
        }
        for rate in RATES:
            est = bootstrap_ci([not o["neglect"] if rate == "both_present" else o[rate] for o in two])
            out[method][f"{rate}_rate"] = _num(est.mean) if two else None
            out[method][f"{rate}_ci95"] = [_num(est.low), _num(est.high)]
        if method != BASELINE and BASELINE in methods:
            out[method]["vs_none"] = paired_difference(samples, method)
    return out


def paired_difference(samples: Sequence[Sample], method: str, baseline: str = BASELINE) -> dict[str, Any] | None:
    """``method``'s binding accuracy minus ``baseline``'s on the two-object samples both have
    (same prompt and seed): ``{"difference", "ci95", "wins", "losses", "n"}`` with a seeded
    percentile bootstrap over samples, ``wins`` = right only with ``method``, ``losses`` = right
    only with ``baseline``; None when they share no sample."""
    def correct(name: str) -> dict[int, bool]:
        return {s.index: bool(s.outcome["correct"]) for s in samples if s.method == name and s.kind == "two"}

    ours, theirs = correct(method), correct(baseline)
    shared = sorted(ours.keys() & theirs.keys())
    if not shared:
        return None
    diffs = [float(ours[i]) - float(theirs[i]) for i in shared]
    est = bootstrap_ci(diffs)
    return {"difference": _num(est.mean), "ci95": [_num(est.low), _num(est.high)],
            "wins": sum(ours[i] and not theirs[i] for i in shared),
            "losses": sum(theirs[i] and not ours[i] for i in shared), "n": len(shared)}


def _num(x: float) -> float | None:
    return None if x != x else round(float(x), 4)


class SampleLog:
    """``samples.jsonl`` in ``folder``: one line per judged image, appended as it finishes, so an
    interrupted evaluation resumes where it stopped. ``folder=None`` keeps samples in memory."""

    def __init__(self, folder: Path | None) -> None:
        self.path = None if folder is None else Path(folder) / "samples.jsonl"
        self.samples: dict[tuple[str, str, int], Sample] = {}
        if self.path is not None and self.path.exists():
            for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    sample = Sample(**json.loads(line))
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"{self.path}:{number}: not a sample record ({exc}); "
                                      "remove the line or choose another --out") from None
                self.samples[sample.key()] = sample

    def has(self, method: str, kind: str, index: int, prompt: str, seed: int) -> bool:
        """Whether the log holds this sample, judged on this prompt and seed (an earlier run
        with another ``--seed`` has other prompts and seeds under the same indices)."""
        sample = self.samples.get((method, kind, index))
        return sample is not None and sample.prompt == prompt and sample.seed == seed

    def add(self, sample: Sample) -> None:
        self.samples[sample.key()] = sample
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(sample)) + "\n")


def evaluate(
    engine: Any,
    methods: Sequence[str],
    *,
    samples: int = 200,
    single_samples: int = 100,
    single_methods: Sequence[str] = ("none",),
    seed: int = 0,
    batch_size: int = 8,
    out_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    loss_plugins: Sequence[str] = (),
    step_progress: bool = False,
    **sampling: Any,
) -> dict[str, dict[str, Any]]:
    """Generate and judge ``samples`` two-object images per method (and ``single_samples``
    single-object images for each method in ``single_methods``); return ``summarise``'s table.

    ``engine`` is an ``attnguide.Engine`` over the toy model; ``sampling`` goes to
    ``Engine.generate`` (``steps``, ``guidance_scale`` ...). With ``out_dir``, samples already in
    its ``samples.jsonl`` (same method, kind, index, prompt and seed) are not generated again, and
    the first image of each method and kind is saved as PNG for a look. The summary counts only
    the samples asked for: ``samples=0`` gives no two-object row data even when the log holds
    some from an earlier, larger run. ``progress`` gets a line after each batch;
    ``step_progress`` shows the engine's bar of denoising steps while a batch is made.
    """
    specs = resolve_methods(methods, loss_plugins)
    log = SampleLog(Path(out_dir) if out_dir is not None else None)
    say = progress or (lambda _line: None)
    work = [("two", two_object_prompts(samples, seed), list(methods)),
            ("single", single_object_prompts(single_samples, seed), [m for m in methods if m in single_methods])]
    for kind, prompts, kind_methods in work:
        for method in kind_methods:
            todo = [i for i in range(len(prompts)) if not log.has(method, kind, i, prompts[i][0], seed + i)]
            for batch in _chunks(todo, batch_size):
                registry = getattr(getattr(engine, "pm", None), "registry", None)
                callbacks = [s for s in specs[method] if registry is not None and _is_callback(registry, s["name"])]
                losses = [s for s in specs[method] if s not in callbacks]
                extra = {"callbacks": callbacks} if callbacks else {}  # interventions such as structure_diffusion
                result = engine.generate([prompts[i][0] for i in batch], [seed + i for i in batch],
                                         losses=losses, progress=step_progress, **extra, **sampling)
                for i, image in zip(batch, result.images):
                    prompt, pairs = prompts[i]
                    found = detect(image)
                    log.add(Sample(method, kind, i, prompt, seed + i, [list(p) for p in pairs],
                                   [list(d.pair) for d in found], binding_outcome(pairs, found)))
                    if i == 0 and out_dir is not None:
                        image.save(Path(out_dir) / f"{method}-{kind}-0.png")
                done = sum(log.has(method, kind, i, prompts[i][0], seed + i) for i in range(len(prompts)))
                say(f"[{method}] {kind}-object {done}/{len(prompts)}")
    asked = [log.samples[(method, kind, i)] for kind, prompts, kind_methods in work for method in kind_methods
             for i in range(len(prompts))]
    return summarise(asked, list(methods))


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def markdown_table(summary: dict[str, dict[str, Any]]) -> str:
    """The summary as a Markdown table (percentages), one row per method; the last column is the
    paired difference from ``none`` in points (95% CI; wins/losses) where there is one."""
    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.1f}"

    def rate(row: dict[str, Any], name: str) -> str:
        lo, hi = row[f"{name}_ci95"]
        return "—" if row[f"{name}_rate"] is None else f"{pct(row[f'{name}_rate'])} ({pct(lo)}–{pct(hi)})"

    def paired(row: dict[str, Any]) -> str:
        vs = row.get("vs_none")
        if not vs:
            return "—"
        lo, hi = vs["ci95"]
        return f"{100 * vs['difference']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f}; {vs['wins']}/{vs['losses']})"

    lines = ["| method | binding accuracy % | 95% CI | both present % | neglect % | swap % | leak % | n "
             "| single-object % (n; 95% CI) | vs none, paired (95% CI; wins/losses) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method, row in summary.items():
        lo, hi = row["ci95"]
        s_lo, s_hi = row["single_object_ci95"]
        single = "—" if not row["single_object_n"] else \
            f"{pct(row['single_object_accuracy'])} ({row['single_object_n']}; {pct(s_lo)}–{pct(s_hi)})"
        cells = " | ".join(rate(row, name) for name in RATES)
        lines.append(f"| {method} | {pct(row['binding_accuracy'])} | {pct(lo)}–{pct(hi)} | {cells} | {row['n']} | "
                     f"{single} | {paired(row)} |")
    return "\n".join(lines)
