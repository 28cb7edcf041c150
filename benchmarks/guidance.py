"""Guidance benchmark: optimised engine vs reference-style mode, in one process and one run.

    python -m benchmarks.guidance --quick --json bench.json
    python -m benchmarks.guidance --models tiny,mid --methods none,syngen,attend_excite --repeats 3
    python -m benchmarks.guidance --models sdxl,sd3,flux --methods none,syngen --steps 10 --repeats 1  # CUDA
    python -m benchmarks.guidance --models mid --methods none,syngen,attend_excite --steps 50 --batches 1,4

Each model's rows include diffusers' own pipeline call (``diffusers_pipeline``, unguided), so
the engine's unguided cost is measured against it in every run; guided methods at batch > 1
are timed batched (``optimized``) and one image at a time (``per_image``).

Every configuration (model x method x mode x batch) runs once as warm-up, then the repeats are
interleaved (repeat 1 of every configuration, then repeat 2 backwards ...) so drift, and what a
run leaves behind for the next (a guided run's freed memory), hit all alike.
Reported figures are medians; ratios compare configurations measured in this same run.
Random weights: timings do not depend on weight values, so they are honest here; the images
are noise. CI never asserts on these numbers. ``sd15``, ``sdxl``, ``sd3`` and ``flux`` are the
full-size architectures and need CUDA; ``sdxl``, ``sd3`` and ``flux`` are built with bf16 weights
on the GPU and run under ``bf16-mixed`` unless ``--precision`` says otherwise.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from attnguide.engine.engine import Engine
from attnguide.errors import ModelLoadError
from benchmarks.models import CUDA_ONLY, FULL_SIZE_MODELS, MODELS, build, require_cuda

PROMPT = "a pink sunflower and a yellow flamingo"
BINDINGS = {"sunflower": ["pink"], "flamingo": ["yellow"]}
SIZES = {"tiny": 256, "mid": 256, "sd15": 512, "tiny-sdxl": 512, "tiny-sd3": 256, "tiny-flux": 256,
         "sdxl": 1024, "sd3": 1024, "flux": 1024}
DEFAULT_STEPS = {"sd15": 50, "sdxl": 50, "sd3": 28, "flux": 28}  # the published pipelines' defaults; else 10
QUICK_MODELS = ["tiny", "mid", "tiny-sdxl", "tiny-sd3", "tiny-flux"]
DTYPES = {"32": torch.float32, "16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Sample:
    seconds: float
    guided: list[float] = field(default_factory=list)
    plain: list[float] = field(default_factory=list)
    peak_mb: float = 0.0
    latents: torch.Tensor | None = None


class StepTimer:
    """Per-step wall time without a plugin (a plugin would make the unguided run install its
    capture): the time between the ends of consecutive ``scheduler.step`` calls. Step 0 also
    holds text encoding and noise set-up and is not reported."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.ends: list[float] = []

    def __enter__(self) -> StepTimer:
        original = self.scheduler.step

        def step(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            _sync()
            self.ends.append(time.perf_counter())
            return out

        self.scheduler.step = step
        return self

    def __exit__(self, *exc: object) -> None:
        del self.scheduler.step

    def durations(self) -> dict[int, float]:
        return {i: self.ends[i] - self.ends[i - 1] for i in range(1, len(self.ends))}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class PeakMemory:
    """Peak CUDA allocation, or peak process RSS sampled every 2 ms on the CPU."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak = _rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        if torch.cuda.is_available():
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def run_once(engine: Engine, method: str, steps: int, size: int, analysis: Any = None, batch: int = 1) -> Sample:
    """One call of ``batch`` images (the prompt, seeds 0..batch-1) through ``engine``."""
    specs = [] if method == "none" else _loss_spec(method)
    registry = engine.pm.registry
    interventions = [s for s in specs if s["name"] in registry.classes["callback"]
                     and s["name"] not in registry.classes["loss"]]  # structure_diffusion
    losses = [s for s in specs if s not in interventions]
    with PeakMemory() as mem, StepTimer(engine.pipe.scheduler) as timer:
        _sync()
        start = time.perf_counter()
        result = engine.generate([PROMPT] * batch, list(range(batch)), steps=steps, height=size, width=size,
                                 losses=losses, callbacks=interventions,
                                 analyses=[analysis] if analysis else None, progress=False, output_type="latent")
        _sync()
        seconds = time.perf_counter() - start
    guided_steps = {r.step for r in result.records[0].losses}
    sample = Sample(seconds, peak_mb=mem.peak / 2**20, latents=result.latents)
    for step, dur in timer.durations().items():
        (sample.guided if step in guided_steps else sample.plain).append(dur)
    return sample


def run_pipeline(pipe: Any, steps: int, size: int, batch: int = 1) -> Sample:
    """The same images through diffusers' own pipeline call (the unguided baseline)."""
    pipe.set_progress_bar_config(disable=True)
    with PeakMemory() as mem, StepTimer(pipe.scheduler) as timer:
        _sync()
        start = time.perf_counter()
        latents = pipe([PROMPT] * batch, num_inference_steps=steps, height=size, width=size,
                       generator=[torch.Generator("cpu").manual_seed(s) for s in range(batch)],
                       output_type="latent").images
        _sync()
        seconds = time.perf_counter() - start
    return Sample(seconds, plain=list(timer.durations().values()), peak_mb=mem.peak / 2**20,
                  latents=latents.float().cpu())


def _loss_spec(method: str) -> list[Any]:
    """A method label as loss specs: a name, ``syngen+attend_excite``, or a name with parameter
    overrides (``divide_bind:attribute_resolutions=[32]``, as ``attnguide toyworld evaluate``)."""
    if method == "syngen+attend_excite":
        return [{"name": "syngen"}, {"name": "attend_excite"}]
    from attnguide.toyworld.evaluate import parse_method

    name, overrides = parse_method(method)
    return [{"name": name, **overrides}]


def _engines(pipe: Any, precision: str, compiled: bool = False) -> dict[str, Engine]:
    from attnguide.engine.runtime import RuntimeConfig

    runtime = RuntimeConfig(precision=precision)
    parser = {"parser": "manual", "parser_params": {"bindings": BINDINGS}}  # no parser model needed
    engines = {"optimized": Engine(pipe, runtime=runtime, **parser),
               "per_image": Engine(pipe, runtime=runtime, batch_guidance=False, **parser)}
    if engines["optimized"].family in ("sd", "sdxl"):  # SD3/Flux joint attention has no classic processor
        engines["reference"] = Engine(pipe, runtime=runtime, reference_style=True, **parser)
    if compiled:
        fast = runtime.model_copy(update={"compile": True, "channels_last": True})
        engines["compiled"] = Engine(pipe, runtime=fast, **parser)
    return engines


def default_precision(model: str, cuda: bool) -> str:
    """``32-true`` on CPU; on CUDA ``bf16-mixed`` for the full-size SDXL, SD3 and Flux (bf16
    weights: T5-XXL and Flux overflow in fp16), ``16-mixed`` otherwise."""
    if not cuda:
        return "32-true"
    return "bf16-mixed" if model in FULL_SIZE_MODELS else "16-mixed"


def configurations(methods: list[str], modes: list[str], batches: list[int]) -> list[tuple[str, str, int]]:
    """``(method, mode, batch)`` to time. ``optimized`` everywhere; ``per_image`` (guidance one
    image at a time) for guided methods at batch > 1; ``reference`` at batch 1; ``compiled`` and
    ``diffusers_pipeline`` (diffusers' own call) for ``none``."""
    out = []
    for batch in batches:
        for method in methods:
            for mode in modes:
                if mode == "per_image" and (batch == 1 or method == "none"):
                    continue
                if mode == "reference" and batch != 1:
                    continue
                if mode in ("compiled", "diffusers_pipeline") and method != "none":
                    continue
                out.append((method, mode, batch))
    return out


def bench_model(name: str, methods: list[str], steps: int, repeats: int, precision: str,
                reference: bool = True, batches: tuple[int, ...] = (1,), compiled: bool = False) -> list[dict[str, Any]]:
    pipe = build(name)
    dtype = DTYPES.get(precision.split("-")[0])
    if dtype is not None and torch.cuda.is_available():  # weights in the precision's dtype (full size: built in bf16)
        pipe.to(dtype)
    engines = _engines(pipe, precision, compiled)
    if not reference:
        engines.pop("reference", None)
    analysis = engines["optimized"].analyse(PROMPT)
    size = SIZES[name]
    configs = configurations(methods, [*engines, "diffusers_pipeline"], list(batches))

    def once(method: str, mode: str, batch: int) -> Sample:
        if mode == "diffusers_pipeline":
            return run_pipeline(pipe, steps, size, batch)
        return run_once(engines[mode], method, steps, size, analysis, batch)

    samples: dict[tuple[str, str, int], list[Sample]] = {c: [] for c in configs}
    for config in configs:  # warm-up
        once(*config)
        print(f"  {name} {' '.join(map(str, config))} warm-up done", file=sys.stderr, flush=True)
    for r in range(repeats):  # odd repeats run the list backwards: no configuration always follows the same one
        for config in configs if r % 2 == 0 else configs[::-1]:
            samples[config].append(once(*config))
            print(f"  {name} {' '.join(map(str, config))} repeat {r + 1}: {samples[config][-1].seconds:.2f} s",
                  file=sys.stderr, flush=True)
    return _rows(name, samples, steps, precision)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _rows(model: str, samples: dict[tuple[str, str, int], list[Sample]], steps: int,
          precision: str) -> list[dict[str, Any]]:
    rows = []
    for (method, mode, batch), runs in samples.items():
        # latents compared with the optimised engine's (for the optimised rows: with the reference)
        other = samples.get((method, "reference", batch) if mode == "optimized" else (method, "optimized", batch))
        diff = max(
            (float((a.latents - b.latents).abs().max()) for a, b in zip(runs, other or []) if a.latents is not None),
            default=None,
        )
        seconds = _median([s.seconds for s in runs])
        rows.append({
            "model": model, "method": method, "mode": mode, "batch": batch, "steps": steps, "precision": precision,
            "s_per_image": seconds / batch if seconds else None,
            "images_per_s": batch / seconds if seconds else None,
            "s_per_guided_step": _median([d for s in runs for d in s.guided]),
            "s_per_plain_step": _median([d for s in runs for d in s.plain]),
            "peak_mem_mb": _median([s.peak_mb for s in runs]),
            "max_latent_diff": diff,
            "repeats": len(runs),
        })
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, method, batch) of the optimised engine: speed-up over the reference style,
    over guidance one image at a time, guided/plain step time, peak memory over unguided, and
    for ``none`` the cost over diffusers' own pipeline (and the compiled engine's speed-up)."""
    out = []
    by = {(r["model"], r["method"], r["mode"], r.get("batch", 1)): r for r in rows}
    for (model, method, mode, batch), row in by.items():
        if mode != "optimized":
            continue
        plain = by.get((model, "none", "optimized", batch))
        entry: dict[str, Any] = {"model": model, "method": method, "batch": batch}
        for label, other in (("speedup_vs_reference", "reference"), ("speedup_vs_per_image", "per_image")):
            ref = by.get((model, method, other, batch))
            if ref and row["s_per_image"] and ref["s_per_image"]:
                entry[label] = ref["s_per_image"] / row["s_per_image"]
        if plain and row["s_per_guided_step"] and plain["s_per_plain_step"]:
            entry["guided_step_over_plain_step"] = row["s_per_guided_step"] / plain["s_per_plain_step"]
        if plain and row["peak_mem_mb"] and plain["peak_mem_mb"]:
            entry["peak_mem_over_plain"] = row["peak_mem_mb"] / plain["peak_mem_mb"]
        pipeline = by.get((model, method, "diffusers_pipeline", batch))
        if pipeline and row["s_per_image"] and pipeline["s_per_image"]:
            entry["engine_over_diffusers_pipeline"] = row["s_per_image"] / pipeline["s_per_image"]
        compiled = by.get((model, method, "compiled", batch))
        if compiled and pipeline and compiled["s_per_image"]:
            entry["compiled_speedup_vs_diffusers_pipeline"] = pipeline["s_per_image"] / compiled["s_per_image"]
        out.append(entry)
    return out


def environment() -> dict[str, Any]:
    import diffusers

    import attnguide

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or platform.machine()
    return {
        "device": device, "cuda": torch.cuda.is_available(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "diffusers": diffusers.__version__, "attnguide": attnguide.__version__,
        "python": platform.python_version(), "command": " ".join(["python -m benchmarks.guidance", *sys.argv[1:]]),
        "note": "random weights: timings do not depend on weight values; images are noise",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.guidance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None,
                        help=f"comma list of {', '.join(MODELS)} ({', '.join(CUDA_ONLY)}: full size, CUDA only); "
                             "default: tiny,mid (CPU), tiny,mid,sd15 (CUDA)")
    parser.add_argument("--methods", default="none,syngen,entropy_syngen,attend_excite,astar,predicated,conform,initno,tome,structure_diffusion",
                        help="method labels: registered plugins, syngen+attend_excite, or name:key=value (divide_bind needs its grids at the size: divide_bind:attribute_resolutions=[32] on tiny)")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps per image; default: 10, sd15/sdxl 50, sd3/flux 28 (4 with --quick)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default=None,
                        help="default: 32-true on CPU; on CUDA bf16-mixed for sdxl, sd3, flux, 16-mixed otherwise")
    parser.add_argument("--quick", action="store_true",
                        help=f"{','.join(QUICK_MODELS)}, methods none,syngen,attend_excite, 4 steps, 1 repeat: "
                             "a few minutes on a 2-core CPU")
    parser.add_argument("--json", default=None, help="write rows, ratios and environment to this file")
    parser.add_argument("--no-reference", action="store_true",
                        help="time the optimised engine only (no reference-style runs): the cost of each method")
    parser.add_argument("--batches", default="1",
                        help="comma list of batch sizes (images per call), e.g. 1,4,8; guided methods at batch > 1 "
                             "are also timed one image at a time (per_image)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the unguided engine with torch.compile and channels-last (mode compiled)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    models = (args.models or ("tiny,mid,sd15" if cuda else "tiny,mid")).split(",")
    methods = args.methods.split(",")
    steps, repeats = args.steps, args.repeats
    try:
        batches = tuple(int(b) for b in args.batches.split(","))
    except ValueError:
        parser.error(f"--batches: comma list of positive integers, got {args.batches!r}")
    if any(b < 1 for b in batches):
        parser.error(f"--batches: comma list of positive integers, got {args.batches!r}")
    if args.quick:
        models, methods = list(QUICK_MODELS), ["none", "syngen", "attend_excite"]
        steps, repeats = steps or 4, 1
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(MODELS)}")
    for model in models:  # before anything runs, not after the CPU models
        try:
            require_cuda(model)
        except ModelLoadError as exc:
            parser.error(str(exc))
    rows: list[dict[str, Any]] = []
    text = _write(args.json, rows)
    for model in models:
        model_steps = steps or DEFAULT_STEPS.get(model, 10)
        precision = args.precision or default_precision(model, cuda)
        rows += bench_model(model, methods, model_steps, repeats, precision, reference=not args.no_reference,
                            batches=batches, compiled=args.compile)
        text = _write(args.json, rows)  # after every model, so a cut-short run keeps its results
        _release()
    print(text)
    return 0


def _release() -> None:
    """Free the last model before the next is built (its weights would count in the next peak)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _write(path: str | None, rows: list[dict[str, Any]]) -> str:
    report = {"environment": environment(), "rows": rows, "ratios": ratios(rows)}
    text = json.dumps(report, indent=2)
    if path:
        with open(path, "w") as handle:
            handle.write(text + "\n")
    return text


if __name__ == "__main__":
    sys.exit(main())
