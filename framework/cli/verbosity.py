"""How much a command that loads a model prints: ``--quiet`` and ``--verbose``.

By default a command shows its own progress (images, and the denoising steps of the image being
made) and hides what the libraries print while a model loads: diffusers' and transformers'
loading bars ("Loading pipeline components...", "Loading weights"), the hub's download bars and
their info and warning logs. ``--verbose`` shows those too, for when a load is slow or fails
oddly; ``--quiet`` shows no progress at all.
"""

from __future__ import annotations

import argparse


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` (no progress bars) and ``--verbose`` (the libraries' loading bars and logs)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    group.add_argument("--verbose", action="store_true",
                       help="also show diffusers' and transformers' loading bars and info logs")


def library_output(verbose: bool) -> None:
    """Show (``verbose``) or hide the loading bars and the info and warning logs of diffusers and
    transformers (whose switch turns the hub's download bars on and off too); errors always show.
    Call it before loading a model: it imports those libraries (and torch)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity(library.INFO if verbose else library.ERROR)
        if verbose:
            library.enable_progress_bar()
        else:
            library.disable_progress_bar()
