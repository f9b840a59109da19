"""Named crash points for fault-injection tests.

`INGESTD_FAILPOINTS=imap.after_commit` makes the process die (as a SIGKILL
would: no cleanup, no flush) the first time code passes `hit("imap.after_commit")`;
`name:3` dies on the third pass. Several are separated by commas. With the
variable unset, `hit` is one set lookup: cheap enough for hot paths.

`INGESTD_FAULTS=pipeline.parse:2` makes `fault("pipeline.parse")` raise
`InjectedFault` on its first two passes instead: an error the code must
survive (a dead letter, a retry), not a crash.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

EXIT_CODE = 137  # what a shell reports for SIGKILL, so tests read it the same way


def _parse(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition(":")
        points[name] = int(count) if count else 1
    return points


_armed = _parse(os.environ.get("INGESTD_FAILPOINTS", ""))
_faults = _parse(os.environ.get("INGESTD_FAULTS", ""))
_lock = threading.Lock()


class InjectedFault(RuntimeError):
    """Raised where INGESTD_FAULTS asks for it."""


def fault(name: str) -> None:
    """Raise InjectedFault while the fault `name` has passes left."""
    if name not in _faults:
        return
    with _lock:
        if _faults[name] <= 0:
            return
        _faults[name] -= 1
    raise InjectedFault(f"injected fault {name!r} (INGESTD_FAULTS)")


def arm_faults(spec: str) -> None:
    """Arm faults in this process (tests that run the code in-process)."""
    with _lock:
        _faults.clear()
        _faults.update(_parse(spec))


def hit(name: str) -> None:
    """Die here if the failpoint `name` is armed and its count is reached."""
    if name not in _armed:
        return
    with _lock:
        _armed[name] -= 1
        if _armed[name] > 0:
            return
    # Logged through the handler directly: the process will not live to flush a queue.
    log.critical("failpoint hit: exiting", extra={"failpoint": name})
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_CODE)


def arm(spec: str) -> None:
    """Arm failpoints in this process (tests that run the code in-process)."""
    with _lock:
        _armed.clear()
        _armed.update(_parse(spec))
