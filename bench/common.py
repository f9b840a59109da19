"""What the benchmarks share: the machine, a daemon in a subprocess, RSS, percentiles."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


class BenchDaemon:
    """`ingestd run` in a subprocess on its own store, with the shipped rules and templates."""

    def __init__(self, workdir: Path, database_url: str, **overrides: Any) -> None:
        self.workdir = workdir
        self.smtp_port = free_port()
        self.http_port = free_port()
        self.config_path = workdir / "ingestd.yaml"
        self.log_path = workdir / "daemon.log"
        config: dict[str, Any] = {
            "database": {"url": database_url},
            "smtp": {"host": "127.0.0.1", "port": self.smtp_port},
            "http": {"host": "127.0.0.1", "port": self.http_port},
            "rules_dir": str(ROOT / "rules"),
            "templates_dir": str(ROOT / "templates"),
            "logging": {"format": "json", "level": "WARNING"},
        }
        main = yaml.safe_load((ROOT / "config" / "ingestd.yaml").read_text()) or {}
        for key in ("queues", "default_queue", "calendars"):
            if key in main:
                config[key] = main[key]
        for section, values in overrides.items():
            if isinstance(values, dict):
                config.setdefault(section, {}).update(values)
            else:
                config[section] = values
        self.config_path.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> BenchDaemon:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ingest", "--config", str(self.config_path), "run"],
            cwd=self.workdir,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited:\n{self.log_path.read_text()[-4000:]}")
            if self.health().get("status") == "ok":
                return self
            time.sleep(0.1)
        raise RuntimeError("daemon did not become healthy")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/healthz", timeout=10
            ) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read() or b"{}"))
        except OSError:
            return {}

    def backlog(self) -> int | None:
        value = self.health().get("journal", {}).get("backlog")
        return int(value) if value is not None else None

    def wait_settled(self, timeout: float = 600.0) -> float:
        """Wait until the journal backlog is empty; return the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.backlog() == 0:
                return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError("backlog not drained in time")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
