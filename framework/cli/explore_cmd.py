"""``attnguide explore``: a local web page to see why guidance worked or failed on a prompt.

    attnguide explore --model toyworld            # then open http://127.0.0.1:7860/

It shows the prompt's parse, bindings and token positions, generates with any set of
registered methods on one seed side by side, and steps through each method's attention maps
and loss terms; what is on screen exports as a recipe YAML and as PNGs (docs/explore.md).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("explore", help="a local web page: parse, bindings, attention maps and losses step by step")
    p.add_argument("--model", default="toyworld",
                   help="'toyworld' (default: the shipped toy model, CPU), 'tiny', a hub id or a local model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free port)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than a loopback address (anyone who reaches it can run generations)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per generation (default 1, as `attnguide run`; the exported recipe's "
                        "runtime.threads: they decide an image's last bits on a CPU)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..explore.serve import check_host, check_port, check_threads, serve

    check_port(args.port)
    check_threads(args.threads)
    allowed_hosts = check_host(args.host, args.allow_remote)  # refused before anything loads
    serve(args.model, args.host, args.port, allowed_hosts, threads=args.threads)
    return 0
