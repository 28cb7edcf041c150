"""``attnguide generate``: one prompt (or a few), one method, images + metadata on disk."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .verbosity import add_output_flags, library_output


def register(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate images with or without guidance")
    p.add_argument("--model", default="tiny", help="'tiny', 'tiny-sdxl', 'tiny-sd3', 'tiny-flux', 'toyworld', a hub id (SD 1.x/2.x, SDXL, SD3, Flux), a local diffusers dir or a .safetensors/.ckpt file")
    p.add_argument("--prompt", action="append", required=True, help="prompt text (repeat for several)")
    p.add_argument("--seed", type=int, action="append",
                   help="seed, 0 to 2**64-1 (repeat: one per image; one seed S: image k of a prompt gets S+k); default 0")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--images-per-prompt", type=int, default=1)
    p.add_argument("--scheduler", default=None, help="ddim, pndm, euler, euler_a, dpm, ... (default: the model's)")
    p.add_argument("--method", action="append", default=[], metavar="NAME[:KEY=VALUE...]",
                   help="'none' (default) or a registered loss or intervention plugin (see `attnguide plugins`); "
                        "repeat to combine (--method syngen --method predicated:scale_factor=10)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the method, e.g. --param step_size=10 (YAML values)")
    p.add_argument("--parser", default="spacy", help="prompt parser for bindings (spacy, stanza, manual)")
    p.add_argument("--parser-param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--heatmaps", action="store_true", help="save attention heat-map sheets next to the images")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--save-latents", action="store_true", help="also write <name>.latents.safetensors")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--precision", default="32-true", help="32-true (CPU), 16-mixed or bf16-mixed (CUDA)")
    add_output_flags(p)
    p.set_defaults(func=run)


def _sampling(args: argparse.Namespace) -> Any:
    import pydantic

    from ..engine.sampling import SamplingConfig

    fields = {
        "steps": ("--steps", args.steps), "guidance_scale": ("--guidance-scale", args.guidance_scale),
        "height": ("--height", args.height), "width": ("--width", args.width),
        "negative_prompt": ("--negative-prompt", args.negative_prompt),
        "images_per_prompt": ("--images-per-prompt", args.images_per_prompt),
    }
    try:
        return SamplingConfig(**{k: v for k, (_, v) in fields.items()})
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        flag = fields[str(err["loc"][0])][0]
        hint = {"--height": "use a multiple of 8", "--width": "use a multiple of 8",
                "--steps": "use 1 or more", "--guidance-scale": "use 0 or more"}.get(flag, "")
        raise ConfigError(f"{flag} {err['input']!r}: {err['msg']}{'; ' + hint if hint else ''}") from None


def run(args: argparse.Namespace) -> int:
    from ..keyvalue import parse_key_values
    from ..plugin.manager import make_plugin_manager
    from ..plugin.specs import Kind, spec_problems, to_spec
    from ..results.files import ensure_writable_dir

    sampling = _sampling(args)
    prompts = [p for p in args.prompt]
    for p in prompts:
        if not p.strip():
            raise ConfigError("--prompt is empty: give the text to generate")
    seeds = _seeds(args, prompts, sampling.images_per_prompt)
    out_dir = ensure_writable_dir(Path(args.out))
    pm = make_plugin_manager()
    losses, callbacks = method_specs(args.method, args.param, pm.registry)
    from_param = set(parse_key_values(args.param, "--param"))
    # the heat maps are artifacts of each image: the writer puts them next to it in --out
    extra = [{"name": "heatmaps"}] if args.heatmaps else []
    kinds: tuple[tuple[Kind, list[dict[str, Any]]], ...] = (("loss", losses), ("callback", [*callbacks, *extra]))
    for kind, specs in kinds:
        for raw in specs:
            spec = to_spec(kind, raw, "--method")
            for key, message in spec_problems(spec, pm.registry) if spec else []:
                # checked before loading weights; the first problem, named by the flag that caused it
                if key == "name":
                    raise ConfigError(message)
                flag = "--param" if key in from_param else f"--method {raw['name']}:"
                raise ConfigError(f"{flag} {key}: {message}")
    return _generate(args, sampling, prompts, seeds, out_dir, pm, losses, callbacks)


def _seeds(args: argparse.Namespace, prompts: list[str], images_per_prompt: int) -> list[int]:
    """``--seed`` values (default 0), checked before any weights load: each in the generator's
    range, and one per image or a single first seed."""
    from ..engine.sampling import check_seed, expand_prompts

    seeds = [check_seed(s, "--seed") for s in (args.seed or [0])]
    first: int | list[int] = seeds[0] if len(seeds) == 1 else seeds
    try:
        return expand_prompts(prompts, first, images_per_prompt)[1]
    except ConfigError as exc:
        raise ConfigError(f"--seed: {exc}") from None


def method_specs(methods: list[str], params: list[str], registry: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``--method`` labels (``name`` or ``name:key=value:...``) and ``--param`` pairs as loss and
    callback specs: a registered callback (an intervention such as ``structure_diffusion``) goes
    to the callbacks, anything else is a loss. ``--param`` sets parameters of a single method."""
    from ..keyvalue import parse_key_values
    from ..toyworld.evaluate import parse_method

    labels = [m for m in methods if m != "none"] if methods else []
    if params and len(labels) != 1:
        raise ConfigError("--param sets the parameters of one --method; with several, write them into each: "
                          "--method syngen:step_size=10 --method predicated")
    losses: list[dict[str, Any]] = []
    callbacks: list[dict[str, Any]] = []
    for label in labels:
        name, overrides = parse_method(label)
        spec = {"name": name, **overrides, **parse_key_values(params, "--param")}
        is_callback = name in registry.classes["callback"] and name not in registry.classes["loss"]
        (callbacks if is_callback else losses).append(spec)
    return losses, callbacks


def _generate(args: argparse.Namespace, sampling: Any, prompts: list[str], seeds: list[int], out_dir: Path,
              pm: Any, loss_spec: list[dict[str, Any]], method_callbacks: list[dict[str, Any]]) -> int:
    from ..engine.engine import Engine
    from ..engine.runtime import RuntimeConfig
    from ..keyvalue import parse_key_values
    from ..models.loading import load_pipeline
    from ..results.images import image_name, save_image

    started = time.perf_counter()
    library_output(args.verbose)
    pipe = load_pipeline(args.model, scheduler=args.scheduler)
    engine = Engine(
        pipe, runtime=RuntimeConfig(accelerator=args.accelerator, precision=args.precision),
        parser=args.parser, parser_params=parse_key_values(args.parser_param, "--parser-param"), plugin_manager=pm,
    )
    callbacks = [*method_callbacks, *([{"name": "heatmaps"}] if args.heatmaps else [])]
    result = engine.generate(prompts, seeds, losses=loss_spec, callbacks=callbacks, sampling=sampling,
                             progress=not args.quiet)
    method = "+".join(spec["name"] for spec in [*loss_spec, *method_callbacks]) or "none"
    extra = {"model": args.model, "scheduler": args.scheduler or type(pipe.scheduler).__name__,
             "method": method, "method_params": result.config["losses"]}
    for i, record in enumerate(result.records):
        name = image_name(record.prompt, record.seed, method if method != "none" else "")
        extra["wall_time_s"] = time.perf_counter() - started
        paths = save_image(result, i, out_dir, name, extra=extra, save_latents=args.save_latents)
        print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0
