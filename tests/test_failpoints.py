"""Failpoints kill the process where a fault test needs it, and nowhere else."""

from __future__ import annotations

import subprocess
import sys

from ingest import failpoints

PROGRAM = """
from ingest import failpoints
for i in range(5):
    print(i, flush=True)
    failpoints.hit("demo.point")
print("survived", flush=True)
"""


def _run(spec: str | None) -> subprocess.CompletedProcess[str]:
    env = {"INGESTD_FAILPOINTS": spec} if spec is not None else {}
    return subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True,
        text=True,
        env={**env, "PATH": "/usr/bin:/bin"},
        timeout=30,
        check=False,
    )


def test_unarmed_failpoint_does_nothing() -> None:
    result = _run(None)
    assert result.returncode == 0
    assert result.stdout.split() == ["0", "1", "2", "3", "4", "survived"]


def test_armed_failpoint_kills_on_the_given_pass() -> None:
    result = _run("other.point,demo.point:3")
    assert result.returncode == failpoints.EXIT_CODE
    assert result.stdout.split() == ["0", "1", "2"]


def test_arm_in_process_counts_down() -> None:
    failpoints.arm("in.process:2")
    try:
        failpoints.hit("not.armed")
        assert failpoints._armed == {"in.process": 2}
    finally:
        failpoints.arm("")
