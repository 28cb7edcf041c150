"""The run folder's lock: one ``attnguide run`` at a time writes into a run directory.

``<run_dir>/.attnguide.lock`` is created with ``O_CREAT | O_EXCL``, so of two runs started
together exactly one gets it, and holds its holder's pid, host and start time (JSON). The run
removes it when it ends, also on an error or Ctrl-C. A lock left by a run that was killed (same
host, no process with its pid) is taken over; any other lock refuses the run with an error that
names the holder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from ..errors import RunLockedError

log = logging.getLogger(__name__)
LOCK_NAME = ".attnguide.lock"
_READ_TRIES, _READ_WAIT_S = 20, 0.05  # a lock seen between its creation and its first write


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run folder: ``token`` tells this lock from an earlier one of the same pid."""

    pid: int
    host: str
    since: str  # ISO 8601, local time with its UTC offset
    token: str

    @classmethod
    def me(cls) -> LockHolder:
        since = datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), since, secrets.token_hex(8))

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.since}"

    def is_gone(self) -> bool:
        """True only when provably dead: this host, and no process has the pid. A pid on another
        host, or one this process may not signal (another user's), counts as alive."""
        if self.host != socket.gethostname() or os.name == "nt":  # Windows' os.kill terminates
            return False
        try:
            os.kill(self.pid, 0)  # signal 0: nothing is sent, only whether the pid exists
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class RunLock:
    """A held lock on ``path``: ``RunLock.acquire(run_dir)`` takes it, ``release()`` removes it."""

    def __init__(self, path: Path, holder: LockHolder) -> None:
        self.path, self.holder = path, holder
        self._held = True

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        """Take ``run_dir``'s lock, taking over a killed run's; ``RunLockedError`` naming the holder
        when a live process has it, ``OSError`` when the folder cannot be written."""
        path, mine = run_dir / LOCK_NAME, LockHolder.me()
        for _ in range(3):  # a takeover lost to another process is retried
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_holder(path)
                if holder is None or holder.is_gone():
                    if holder is not None:
                        _remove_stale(path, holder)
                    continue  # released, or a killed run's lock: try again
                raise RunLockedError(
                    f"{run_dir} is in use by another attnguide run ({holder.describe()}); wait for it to end, "
                    f"or delete {path} if that process is not an attnguide run") from None
            _write_holder(fd, path, mine)
            return cls(path, mine)
        raise RunLockedError(f"{run_dir}: other runs keep taking its lock {path}; try again")

    def release(self) -> None:
        """Remove the lock if it is still this run's. Never raises: a lock that cannot be removed
        (a file system gone read-only) is taken over by the next run, as its pid is gone."""
        if not self._held:
            return
        self._held = False
        try:
            if _read_holder(self.path) == self.holder:
                self.path.unlink()
        except (OSError, RunLockedError) as exc:
            log.debug("run lock %s left in place: %s", self.path, exc)


def _write_holder(fd: int, path: Path, holder: LockHolder) -> None:
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(holder)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:  # a full disk can refuse even these few bytes
        with contextlib.suppress(OSError):
            path.unlink()
        exc.filename = exc.filename or str(path)
        raise


def _read_holder(path: Path) -> LockHolder | None:
    """The lock's holder; ``None`` when there is no lock file. A file that stays unreadable (not
    the moment between its creation and its first write) raises ``RunLockedError``."""
    for _ in range(_READ_TRIES):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            holder = LockHolder(int(data["pid"]), str(data["host"]), str(data["since"]), str(data["token"]))
            if holder.pid > 0:
                return holder
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError):
            pass
        time.sleep(_READ_WAIT_S)
    raise RunLockedError(f"{path.parent} has a lock file {path} that cannot be read; "
                         "delete it if no attnguide run is using this folder")


def _remove_stale(path: Path, stale: LockHolder) -> None:
    """Remove ``stale``'s lock. It is first renamed aside (atomic), so when another process has
    meanwhile replaced it with a live lock, that lock is what gets moved, and it is put back."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another process removed it first
    try:
        moved = _read_holder(aside)
    except RunLockedError:
        moved = None  # unreadable: a lock being written right now, not the stale one
    if moved != stale:
        with contextlib.suppress(FileExistsError, FileNotFoundError):
            os.link(aside, path)  # never over a lock created since
    else:
        log.info("took over the lock of a run that is gone (%s)", stale.describe())
    aside.unlink(missing_ok=True)
