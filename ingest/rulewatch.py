"""Hot reload: the rules in force, replaced whole when a valid edit lands.

The directories are polled (no inotify dependency, and it works on network
and container file systems). An edit is loaded once the files have stopped
changing for one interval, so a half-saved file or a rename in progress is
never read; a set that fails validation is reported and the old one stays.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest import ruleset
from ingest.config import Config
from ingest.ruleset import RuleBook, Settings
from ingest.templating import Templates
from ingest.yamlsource import Problem, SourceError

log = logging.getLogger(__name__)

Snapshot = tuple[tuple[str, int, int], ...]


def settings_for(config: Config) -> Settings:
    return Settings(
        queues=[q.name for q in config.queues],
        calendars=sorted(config.calendars),
        unmatched=config.rules_unmatched,
    )


def load_book(config: Config, rules_dir: Path | None = None) -> RuleBook:
    """Load and validate the configured rules; SourceError with every problem."""
    directory = rules_dir or config.rules_dir
    try:
        return ruleset.load(directory, config.templates_dir, settings_for(config))
    except SourceError:
        raise
    except Exception as exc:  # e.g. RecursionError on absurdly nested YAML
        # Whatever the files do to the loader, it is a refused edit, never a
        # daemon that cannot start.
        problem = Problem(str(directory), None, "", f"the rules could not be loaded: {exc!r}")
        raise SourceError([problem]) from exc


def fallback_book(config: Config) -> RuleBook:
    """No rules at all: every message becomes a case in the default queue.

    Used only when the daemon starts with rules that do not validate: mail is
    still taken and kept, and nothing is skipped on the strength of a typo.
    """
    settings = Settings(
        queues=[q.name for q in config.queues], calendars=(), unmatched="create_case"
    )
    templates = Templates(config.templates_dir, {}, "")
    return RuleBook((), (), templates, settings, "fallback", (), datetime.now(UTC))


@dataclass
class ReloadStatus:
    ok: bool = True
    last_attempt_at: datetime | None = None
    failures: int = 0
    problems: list[Problem] | None = None


class RuleWatcher:
    """Holds the RuleBook in force; `poll()` swaps in a valid edit."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.dirs = (config.rules_dir, config.templates_dir)
        self.status = ReloadStatus()
        self._loaded: Snapshot = self._snapshot()
        self._seen: Snapshot = self._loaded
        self.current = fallback_book(config)
        try:
            self.current = load_book(config)
        except SourceError as exc:
            self._failed(exc)
        else:
            log.info("rules loaded", extra=self.current.summary())

    def poll(self) -> bool:
        """Look for an edit; return True when new rules came into force."""
        now = self._snapshot()
        if now == self._loaded:
            self._seen = now
            return False
        if now != self._seen:
            # Still changing: wait until it has been still for one interval.
            self._seen = now
            return False
        self.status.last_attempt_at = datetime.now(UTC)
        try:
            book = load_book(self.config)
        except SourceError as exc:
            self._loaded = now  # report this edit once, not on every poll
            self._failed(exc)
            return False
        if self._snapshot() != now:
            return False  # edited while we read it: the next poll reads the settled files
        self._loaded = now
        self.current = book  # one reference swap: a message sees the old or the new book
        self.status.ok, self.status.problems = True, None
        log.info("rules reloaded", extra=book.summary())
        return True

    def report(self) -> dict[str, Any]:
        book = self.current
        out: dict[str, Any] = {
            "ok": self.status.ok,
            "version": book.version,
            "loaded_at": book.loaded_at.isoformat(),
            "record_creation_items": len(book.record_creation),
            "routing_items": len(book.routing),
            "reload_failures": self.status.failures,
        }
        if self.status.problems:
            what = (
                "the rules could not be loaded at start; every message becomes a case"
                " in the default queue until they are fixed"
                if book.version == "fallback"
                else "the last edit was not loaded; the rules in force stay"
            )
            out["error"] = what + ": " + "; ".join(str(p) for p in self.status.problems[:10])
        return out

    def _failed(self, exc: SourceError) -> None:
        self.status.ok = False
        self.status.failures += 1
        self.status.problems = exc.problems
        log.error(
            "rules not loaded: the rules in force stay",
            extra={
                "version_in_force": self.current.version,
                "problems": [p.as_dict() for p in exc.problems],
                "report": str(exc),
            },
        )

    def _snapshot(self) -> Snapshot:
        entries = []
        for directory in self.dirs:
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                continue
            for name in names:
                path = os.path.join(directory, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                entries.append((path, st.st_mtime_ns, st.st_size))
        return tuple(entries)
