"""``attnguide toyworld sample --n 16 --seed 0 --out DIR``: a grid of toy-world scenes with their
captions, to look at the world the toy model will be trained on; ``attnguide toyworld train --out DIR``:
train that model (docs/toyworld.md)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from PIL import Image

from attnguide.errors import ConfigError


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
    t.add_argument("--vae-steps", type=int, default=1500, help="VAE optimiser steps (default 1500)")
    t.add_argument("--unet-steps", type=int, default=4000, help="UNet optimiser steps (default 4000)")
    t.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    t.add_argument("--seed", type=int, default=0, help="run seed: weights and training scenes (default 0)")
    t.add_argument("--accelerator", choices=["cpu", "cuda", "auto"], default="auto",
                   help="Lightning accelerator (default auto)")
    t.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes (default 0)")
    t.add_argument("--train-text-encoder", action="store_true",
                   help="train the text encoder too (default: frozen at its random initialisation)")
    t.add_argument("--max-objects", type=int, default=2, choices=[1, 2, 3],
                   help="scenes of 1..N objects, cycled evenly (default 2)")
    t.set_defaults(func=run_train)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_sample(args: argparse.Namespace) -> int:
    from attnguide.toyworld import detect, sample

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
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


def run_train(args: argparse.Namespace) -> int:
    from attnguide.toyworld.training import train

    if min(args.vae_steps, args.unet_steps, args.batch_size) < 1:
        raise ConfigError("--vae-steps, --unet-steps and --batch-size must be at least 1")
    pipeline_dir = train(args.out, args.vae_steps, args.unet_steps, args.batch_size, args.seed, args.accelerator,
                         num_workers=args.num_workers, train_text_encoder=args.train_text_encoder,
                         objects=(1, args.max_objects),
                         command=train_command(args))
    print(f"wrote {pipeline_dir} (load with --model {pipeline_dir})")
    return 0


def train_command(args: argparse.Namespace) -> list[str]:
    """The ``attnguide toyworld train`` command line that reproduces ``args`` (for TRAINED_WITH.json)."""
    command = ["attnguide", "toyworld", "train", "--out", str(args.out), "--vae-steps", str(args.vae_steps),
               "--unet-steps", str(args.unet_steps), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
               "--accelerator", args.accelerator, "--num-workers", str(args.num_workers),
               "--max-objects", str(args.max_objects)]
    return command + (["--train-text-encoder"] if args.train_text_encoder else [])


def grid_image(images: list[Image.Image], pad: int = 2) -> Image.Image:
    """Images (all the same size) tiled row-major in a near-square grid with ``pad`` pixel gaps."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for k, im in enumerate(images):
        grid.paste(im, (pad + (k % cols) * (w + pad), pad + (k // cols) * (h + pad)))
    return grid
