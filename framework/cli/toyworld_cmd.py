"""``attnguide toyworld sample --n 16 --seed 0 --out DIR``: a grid of toy-world scenes with their
captions, to look at the world the toy model is trained on; ``attnguide toyworld train --out DIR``:
train that model; ``attnguide toyworld evaluate --samples N --methods none,syngen --json``: binding
accuracy of guidance methods on it, judged by the toy world's detector; ``attnguide toyworld
attention``: whether its cross-attention localises tokens, as guidance needs (docs/toyworld.md)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .verbosity import add_output_flags, library_output

if TYPE_CHECKING:
    from PIL import Image


class _DefaultMethods:
    """``--methods``'s default, read from ``attnguide.toyworld.methods`` only when the help shows
    it or a run uses it, so that building the parser imports neither numpy nor PIL."""

    def __str__(self) -> str:
        from ..toyworld.methods import DEFAULT_METHODS

        return ",".join(DEFAULT_METHODS)


def register(sub: Any) -> None:
    p = sub.add_parser("toyworld", help="the toy world: sample captioned scenes, train the toy model")
    toy = p.add_subparsers(dest="toyworld_command", metavar="ACTION")
    s = toy.add_parser("sample", help="write a PNG grid of scenes and their captions")
    s.add_argument("--n", type=int, default=16, help="number of scenes (default 16)")
    s.add_argument("--seed", type=int, default=0, help="first seed; scene i uses seed + i (default 0)")
    s.add_argument("--objects", type=int, default=None, choices=[1, 2, 3],
                   help="objects per scene (default: cycle 1, 2, 3)")
    s.add_argument("--out", required=True, help="output folder (grid.png, captions.txt, scenes.jsonl)")
    s.set_defaults(func=run_sample)
    t = toy.add_parser("train", help="train the toy text-to-image model (VAE, then UNet) with Lightning")
    t.add_argument("--out", required=True, help="output folder (checkpoints/, logs/, pipeline/, TRAINED_WITH.json)")
    t.add_argument("--vae-steps", type=int, default=2500, help="VAE optimiser steps (default 2500)")
    t.add_argument("--unet-steps", type=int, default=3500, help="UNet optimiser steps (default 3500)")
    t.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    t.add_argument("--seed", type=int, default=0, help="run seed: weights and training scenes (default 0)")
    t.add_argument("--accelerator", choices=["cpu", "cuda", "auto"], default="auto",
                   help="Lightning accelerator (default auto)")
    t.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes (default 0)")
    t.add_argument("--train-text-encoder", action="store_true",
                   help="train the text encoder too (default: frozen at its random initialisation)")
    t.add_argument("--text-layers", type=int, default=1,
                   help="causal layers of a new text encoder (default 1, as toy world v1; the v2 attempt "
                        "used 3 with --train-text-encoder; ignored with --init-from)")
    t.add_argument("--max-objects", type=int, default=2, choices=[1, 2, 3],
                   help="scenes of 1..N objects, cycled evenly (default 2)")
    t.add_argument("--lr", type=float, default=6e-4, help="peak UNet learning rate (default 6e-4)")
    t.add_argument("--init-from", default=None,
                   help="continue from a trained pipeline: 'toyworld' or 'toyworld-v1' (shipped) or a "
                        "folder; --vae-steps 0 keeps its VAE")
    t.add_argument("--grounding-weight", type=float, default=0.1,
                   help="weight of the token-grounding loss on the 16x16 cross-attention maps (default 0.1; 0: off)")
    t.set_defaults(func=run_train)
    e = toy.add_parser("evaluate", help="binding accuracy of guidance methods on the toy model, judged by the detector")
    e.add_argument("--model", default="toyworld",
                   help="'toyworld' or 'toyworld-v1' (shipped) or a trained pipeline folder")
    e.add_argument("--methods", default=_DefaultMethods(),
                   help="comma-separated methods or loss plugins, each optionally with parameter overrides "
                        "as NAME:KEY=VALUE[:KEY=VALUE], e.g. syngen:step_size=5 (default: %(default)s)")
    e.add_argument("--samples", type=int, default=200,
                   help="two-object prompt x seed samples per method (default 200; 0: none, while single-object "
                        "samples still follow --single-samples)")
    e.add_argument("--single-samples", type=int, default=100,
                   help="single-object samples for each of --single-methods (default 100)")
    e.add_argument("--single-methods", default="none", help="methods also run on single-object prompts (default none)")
    e.add_argument("--seed", type=int, default=0, help="prompt list seed; sample i uses generation seed S+i (default 0)")
    e.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    e.add_argument("--guidance-scale", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    e.add_argument("--scheduler", default=None, help="scheduler short name (default: the model's, PNDM)")
    e.add_argument("--batch-size", type=int, default=8, help="images per engine call (default 8)")
    e.add_argument("--parser", default="spacy", help="prompt parser for bindings (default spacy)")
    e.add_argument("--out", default=None, help="folder for samples.jsonl (resumable), summary.json and example PNGs")
    e.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    e.add_argument("--accelerator", default="auto")
    add_output_flags(e)
    e.set_defaults(func=run_evaluate)
    a = toy.add_parser("attention", help="do the model's cross-attention maps put each token on its own object?")
    a.add_argument("--model", default="toyworld",
                   help="'toyworld' or 'toyworld-v1' (shipped) or a trained pipeline folder")
    a.add_argument("--scenes", type=int, default=8, help="two-object scenes to measure (default 8)")
    a.add_argument("--seed", type=int, default=0, help="scene and noise seed (default 0)")
    a.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_output_flags(a)
    a.set_defaults(func=run_attention)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_sample(args: argparse.Namespace) -> int:
    from ..toyworld import detect, sample

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
    _check_seeds(args.seed, args.n)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, lines, records = [], [], []
    for i in range(args.n):
        seed = args.seed + i
        image, text, scene = sample(seed, args.objects or 1 + i % 3)
        images.append(image)
        lines.append(f"{seed}\t{text}")
        records.append({"seed": seed, "caption": text,
                        "objects": [[o.colour, o.shape, o.size, list(o.centre)] for o in scene.objects],
                        "judge": [[d.colour, d.shape] for d in detect(image)]})
    grid_image(images).save(out / "grid.png")
    (out / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "scenes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    print(f"wrote {args.n} scenes to {out}/grid.png, captions.txt, scenes.jsonl")
    return 0


def _check_seeds(first: int, count: int) -> None:
    """``--seed S`` for ``count`` scenes or samples ``S .. S+count-1``: all in the generator's range."""
    from ..engine.sampling import check_seed

    check_seed(first, "--seed")
    if count > 1:
        check_seed(first + count - 1, f"--seed {first} + {count - 1} samples: last seed")


def run_train(args: argparse.Namespace) -> int:
    from ..toyworld.training import train

    init_from = None
    if args.init_from is not None:
        from ..models.toy_names import is_toy_model
        from ..toyworld.model import toy_weights_dir

        init_from = toy_weights_dir(args.init_from) if is_toy_model(args.init_from) else Path(args.init_from)
        if not (init_from / "model_index.json").is_file():
            raise ConfigError(f"--init-from {args.init_from}: no trained pipeline there (model_index.json missing); "
                              "pass 'toyworld' or the pipeline/ folder written by `attnguide toyworld train`")
    least_vae = 0 if init_from is not None else 1
    if args.vae_steps < least_vae or min(args.unet_steps, args.batch_size, args.text_layers) < 1:
        raise ConfigError(f"--vae-steps must be at least {least_vae} (0 only with --init-from), "
                          "--unet-steps, --batch-size and --text-layers at least 1")
    if not args.lr > 0:
        raise ConfigError(f"--lr must be positive, got {args.lr}")
    if not args.grounding_weight >= 0:
        raise ConfigError(f"--grounding-weight must be 0 or more, got {args.grounding_weight}")
    pipeline_dir = train(args.out, args.vae_steps, args.unet_steps, args.batch_size, args.seed, args.accelerator,
                         num_workers=args.num_workers, train_text_encoder=args.train_text_encoder,
                         objects=(1, args.max_objects), lr=args.lr, init_from=init_from,
                         grounding_weight=args.grounding_weight, text_layers=args.text_layers,
                         command=train_command(args))
    print(f"wrote {pipeline_dir} (load with --model {pipeline_dir})")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..engine.engine import Engine
    from ..engine.runtime import RuntimeConfig
    from ..models.loading import load_pipeline
    from ..plugin.manager import make_plugin_manager
    from ..toyworld.evaluate import evaluate, markdown_table, resolve_methods
    from .plugins_cmd import run_hooks

    args.methods = str(args.methods)  # the default is a _DefaultMethods until here
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    single = [m.strip() for m in args.single_methods.split(",") if m.strip()]
    if not methods:
        raise ConfigError("--methods is empty: name at least one method, e.g. none,syngen")
    for flag, value in (("--samples", args.samples), ("--single-samples", args.single_samples),
                        ("--steps", args.steps), ("--batch-size", args.batch_size)):
        least = 1 if flag in ("--steps", "--batch-size") else 0
        if value < least:
            raise ConfigError(f"{flag} must be at least {least}, got {value}")
    if args.samples == 0 and (args.single_samples == 0 or not set(single) & set(methods)):
        raise ConfigError("nothing to evaluate: --samples 0 asks for no two-object samples and no method of "
                          "--methods is in --single-methods with --single-samples above 0")
    _check_seeds(args.seed, max(args.samples, args.single_samples))
    pm = make_plugin_manager()
    # methods: the loss plugins and the callbacks that intervene (structure_diffusion)
    loss_plugins = pm.registry.names("loss") + [
        name for name, cls in sorted(pm.registry.classes["callback"].items())
        if set(run_hooks(cls)) & {"attnguide_initial_latents", "attnguide_edit_embeddings", "attnguide_modulate_attention"}
    ]
    # fail on a misspelt method or parameter, or a bad value, before loading weights
    resolve_methods(methods + single, loss_plugins, pm.registry)
    out = Path(args.out) if args.out else None
    library_output(args.verbose)
    engine = Engine(load_pipeline(args.model, scheduler=args.scheduler), parser=args.parser, plugin_manager=pm,
                    runtime=RuntimeConfig(accelerator=args.accelerator))
    summary = evaluate(engine, methods, samples=args.samples, single_samples=args.single_samples,
                       single_methods=single, seed=args.seed, batch_size=args.batch_size, out_dir=out,
                       progress=None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True),
                       step_progress=not args.quiet, loss_plugins=loss_plugins,
                       steps=args.steps, guidance_scale=args.guidance_scale)
    if out is not None:
        config = {k: v for k, v in vars(args).items() if k != "func"}
        (out / "summary.json").write_text(json.dumps({"config": config, "summary": summary}, indent=2) + "\n",
                                          encoding="utf-8")
    print(json.dumps(summary, indent=2) if args.json else markdown_table(summary))
    return 0


def run_attention(args: argparse.Namespace) -> int:
    from ..models.loading import load_pipeline
    from ..toyworld.diagnose import token_localisation

    if args.scenes < 1:
        raise ConfigError(f"--scenes must be at least 1, got {args.scenes}")
    library_output(args.verbose)
    result = token_localisation(load_pipeline(args.model), scenes=args.scenes, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"colour and shape tokens of {args.scenes} two-object scenes; uniform entropy "
          f"{result['uniform_entropy']:.3f} nats, preference 1 = no preference for the token's own object, "
          "share = fraction of the map on it")
    print("| t | entropy (nats) | own/other object | own share |\n|---|---|---|---|")
    for t, row in result["timesteps"].items():
        print(f"| {t} | {row['entropy']:.3f} | {row['preference']:.2f} | {row['own_share']:.3f} |")
    return 0


def train_command(args: argparse.Namespace) -> list[str]:
    """The ``attnguide toyworld train`` command line that reproduces ``args`` (for TRAINED_WITH.json)."""
    command = ["attnguide", "toyworld", "train", "--out", str(args.out), "--vae-steps", str(args.vae_steps),
               "--unet-steps", str(args.unet_steps), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
               "--accelerator", args.accelerator, "--num-workers", str(args.num_workers),
               "--max-objects", str(args.max_objects), "--lr", str(args.lr)]
    command += ["--grounding-weight", str(args.grounding_weight)]
    if args.text_layers != 1:
        command += ["--text-layers", str(args.text_layers)]
    if args.init_from is not None:
        command += ["--init-from", str(args.init_from)]
    return command + (["--train-text-encoder"] if args.train_text_encoder else [])


def grid_image(images: list[Image.Image], pad: int = 2) -> Image.Image:
    """Images (all the same size) tiled row-major in a near-square grid with ``pad`` pixel gaps."""
    from PIL import Image

    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for k, im in enumerate(images):
        grid.paste(im, (pad + (k % cols) * (w + pad), pad + (k // cols) * (h + pad)))
    return grid
