"""``attnguide`` command line: one module per subcommand, each with ``register(subparsers)``."""

from __future__ import annotations
