"""Time comes from a clock the daemon is given, so tests move time instead of sleeping."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta


TEST_CLOCK_ENV = "INGESTD_TEST_CLOCK_FILE"


class FileClock:
    """For tests only: the time is whatever a file says, so a test can move a daemon's time.

    The file holds either an ISO 8601 instant with its offset (the clock stands
    there until the file changes) or `+SECONDS` / `-SECONDS` (the system clock
    shifted by that much). The file is parsed again only when it changes (one
    `stat` per reading), and a file that cannot be read or parsed keeps the
    last good reading. Replace it atomically (write, then rename).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._fixed: datetime | None = None
        self._offset = timedelta()
        self._read()

    def now(self) -> datetime:
        self._read()
        fixed = self._fixed
        return fixed if fixed is not None else datetime.now(UTC) + self._offset

    def _read(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            text = self.path.read_text().strip()
            if text[:1] in "+-":
                offset, fixed = timedelta(seconds=float(text)), None
            else:
                offset, fixed = timedelta(), datetime.fromisoformat(text)
                if fixed.tzinfo is None:
                    raise ValueError("the instant needs its UTC offset")
                fixed = fixed.astimezone(UTC)
        except (OSError, ValueError):
            return
        self._offset, self._fixed, self._stamp = offset, fixed, stamp


def from_environment(environ: Mapping[str, str] | None = None) -> Clock:
    """The system clock, or a FileClock when INGESTD_TEST_CLOCK_FILE names one (tests)."""
    path = (os.environ if environ is None else environ).get(TEST_CLOCK_ENV)
    return FileClock(path) if path else SystemClock()
