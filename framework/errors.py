"""Errors with messages a user can act on. The CLI prints them as one line and exits with the
error's ``exit_code``: 2 for bad input, 3 when a run stopped on a disk error, 4 when another run
holds the run folder (1 is a run that finished with failed images)."""

from __future__ import annotations


class AttnguideError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 2


class ConfigError(AttnguideError, ValueError):
    """A bad argument, recipe key or parameter value."""


class PluginError(AttnguideError):
    """A plugin is unknown, invalid, or failed while running a hook."""


class ParserError(AttnguideError):
    """A prompt cannot be parsed or a parser model is missing."""


class ModelLoadError(AttnguideError):
    """A model id, path or checkpoint cannot be loaded."""


class RecipeError(ConfigError):
    """Problems with one recipe: ``problems`` holds ``(dotted key, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]], context: str = "") -> None:
        self.source, self.problems, self.context = source, problems, context
        where = f"recipe {source}" + (f" ({context})" if context else "")
        super().__init__(f"{where}: " + "; ".join(f"{key}: {msg}" if key else msg for key, msg in problems))


class RunIOError(AttnguideError):
    """A run stopped because its files cannot be written: a full disk, a read-only file system,
    no permission in the run folder. Finished images stay valid; rerunning resumes."""

    exit_code = 3


class RunLockedError(AttnguideError):
    """Another live ``attnguide run`` holds the run folder's lock."""

    exit_code = 4
