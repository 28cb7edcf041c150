"""Serving the page: which hosts may be bound, and the uvicorn server itself."""

from __future__ import annotations

import ipaddress
import sys
import threading
from typing import TextIO

from ..errors import ConfigError
from .session import ExploreSession


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only ever means this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool, err: TextIO | None = None) -> list[str] | None:
    """The Host headers to serve on ``host``: ``None`` (loopback names only) for a loopback
    host; every host (``["*"]``) for another one, but only with ``allow_remote`` and after a
    warning on ``err``; without it a ``ConfigError``."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise ConfigError(f"--host {host!r} is not a loopback address: the page runs generations and has no login, so "
                          "anyone who can reach it can use this machine; pass --allow-remote to serve it anyway")
    print(f"warning: serving on {host!r}: anyone who can reach this address can run generations here "
          "(no login, no encryption)", file=err or sys.stderr)
    return ["*"]


def check_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: use 0 to 65535 (0: any free port)")
    return port


def check_threads(threads: int) -> int:
    if threads < 1:
        raise ConfigError(f"--threads {threads}: use 1 or more")
    return threads


def serve(model: str, host: str, port: int, allowed_hosts: list[str] | None = None, threads: int = 1,
          warm: bool = True) -> None:
    """Run the page for ``model`` on ``host:port`` until interrupted (``allowed_hosts`` from
    ``check_host``; generations at ``threads`` torch threads)."""
    import uvicorn

    from .app import create_app

    session = ExploreSession(model, threads=threads)
    if warm:  # load the model while the browser opens the page
        threading.Thread(target=session.warm, name="explore-warm", daemon=True).start()
    shown = f"[{host}]" if ":" in host else host
    print(f"attnguide explore: {model} on http://{shown}:{port}/  (Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(session, allowed_hosts), host=host.strip("[]"), port=port, log_level="warning")
