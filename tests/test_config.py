"""Configuration: defaults, env interpolation and overrides, errors with file and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ingest import config
from ingest.yamlsource import SourceError
from tests.support import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ingestd.yaml"
    path.write_text(text)
    return path


def test_shipped_config_is_valid_and_matches_the_documented_defaults() -> None:
    conf = config.load(REPO / "config" / "ingestd.yaml", env={})
    assert conf.database.url == "sqlite:///var/ingestd.db"
    assert (conf.smtp.host, conf.smtp.port) == ("127.0.0.1", 2525)
    assert conf.smtp.addresses == ["support@example.com"]
    assert (conf.http.host, conf.http.port) == ("127.0.0.1", 8080)
    assert conf.default_queue == "General Support"


def test_an_empty_file_means_all_defaults(tmp_path: Path) -> None:
    conf = config.load(write(tmp_path, ""), env={})
    assert conf.database.url == "sqlite:///var/ingestd.db"
    assert conf.database.sqlite_synchronous == "full"
    assert conf.smtp.port == 2525
    assert conf.http.port == 8080


def test_env_interpolation_for_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "database:\n  url: postgresql://ingestd:${DB_PASSWORD}@db/${DB_NAME:-ingestd}\n",
    )
    conf = config.load(path, env={"DB_PASSWORD": "s3cret"})
    assert conf.database.url == "postgresql://ingestd:s3cret@db/ingestd"


def test_missing_env_variable_is_named_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "http:\n  port: 8081\ndatabase:\n  url: postgresql://u:${DB_PASSWORD}@db/x\n"
    )
    with pytest.raises(SourceError) as error:
        config.load(path, env={})
    [problem] = error.value.problems
    assert problem.line == 4
    assert problem.field == "database.url"
    assert "DB_PASSWORD" in problem.message


def test_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "smtp:\n  port: 2600\n")
    env = {
        "INGESTD_DATABASE_URL": "postgresql://x@y/z",
        "INGESTD_SMTP_HOST": "0.0.0.0",
        "INGESTD_SMTP_PORT": "25",
        "INGESTD_HTTP_HOST": "::1",
        "INGESTD_HTTP_PORT": "9000",
    }
    conf = config.load(path, env=env)
    assert conf.database.url == "postgresql://x@y/z"
    assert (conf.smtp.host, conf.smtp.port) == ("0.0.0.0", 25)
    assert (conf.http.host, conf.http.port) == ("::1", 9000)


def test_bad_override_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as error:
        config.load(write(tmp_path, ""), env={"INGESTD_SMTP_PORT": "twenty-five"})
    [problem] = error.value.problems
    assert problem.file == "environment INGESTD_SMTP_PORT"
    assert problem.field == "smtp.port"


def test_every_error_is_reported_with_file_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "smtp:\n"
        "  port: lots\n"
        "  adresses: [help@example.com]\n"  # a typo
        "http:\n"
        "  port: 99999\n"
        "default_queue: Nowhere\n",
    )
    with pytest.raises(SourceError) as error:
        config.load(path, env={})
    found = {(p.line, p.field) for p in error.value.problems}
    assert (2, "smtp.port") in found
    assert (3, "smtp.adresses") in found
    assert (5, "http.port") in found
    assert all(p.file == str(path) for p in error.value.problems)
    typo = next(p for p in error.value.problems if p.field == "smtp.adresses")
    assert "unknown field" in typo.message


def test_unknown_default_queue_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as error:
        config.load(write(tmp_path, "default_queue: Nowhere\n"), env={})
    assert "Nowhere" in str(error.value)


def test_broken_yaml_gives_the_line(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as error:
        config.load(write(tmp_path, "smtp:\n  port: 2525\n  addresses: [a@b.c\n"), env={})
    assert error.value.problems[0].line is not None
    assert "not valid YAML" in error.value.problems[0].message


def test_the_daemon_refuses_to_start_on_a_bad_config(tmp_path: Path) -> None:
    path = write(tmp_path, "smtp:\n  port: -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "ingest", "--config", str(path), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{path}:2: smtp.port:" in result.stderr


def test_config_command_redacts_the_database_password(tmp_path: Path) -> None:
    path = write(tmp_path, "database:\n  url: postgresql://ingestd:hunter2@db/ingestd\n")
    result = subprocess.run(
        [sys.executable, "-m", "ingest", "--config", str(path), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "hunter2" not in result.stdout
    assert "postgresql://ingestd:***@db/ingestd" in result.stdout
