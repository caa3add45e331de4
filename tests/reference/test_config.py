from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reference.config import (
    ConfigError,
    duties_for,
    load_settings,
    role_of,
    worker_child_duties,
)
from reference.exits import EXIT_CONFIG


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "INSTANCE_TYPE", "CLUSTERPROOF_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("value", "shown"), [(-1, "-1"), ("abc", "'abc'"), (10000, "10000"), (1.5, "1.5")]
)
def test_workers_must_be_a_whole_number_in_range(value: object, shown: str) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"^server\.cluster\.workers must be a whole number from 0 to 256, "
        rf"got {shown}$",
    ):
        load_settings(server={"cluster": {"workers": value}})


def test_workers_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTERPROOF_SERVER__CLUSTER__WORKERS", "4")
    monkeypatch.setenv("CLUSTERPROOF_SERVER__CLUSTER__ENABLED", "TRUE")
    cluster = load_settings().server.cluster
    assert (cluster.workers, cluster.enabled) == (4, True)


def test_enabled_must_be_a_real_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTERPROOF_SERVER__CLUSTER__ENABLED", "maybe")
    with pytest.raises(
        ConfigError, match="server.cluster.enabled must be true or false, got 'maybe'"
    ):
        load_settings()


def test_instance_type_is_primary_or_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTANCE_TYPE", "boss")
    with pytest.raises(ConfigError, match="INSTANCE_TYPE must be primary or worker"):
        load_settings()


@pytest.mark.parametrize(
    "name", ["CLUSTERPROOF_SERVER", "clusterproof_server__cluster"]
)
def test_a_section_in_env_must_be_json(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, "{port: 2}")
    with pytest.raises(
        ConfigError,
        match=rf"^{name} gives a whole section, so it must be a JSON object, "
        rf"got '{{port: 2}}'; or set one value, as {name}__<setting>$",
    ):
        load_settings()


def test_a_section_in_env_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CLUSTERPROOF_SERVER", '{"port": 2000, "cluster": {"workers": 3}}'
    )
    server = load_settings().server
    assert (server.port, server.cluster.workers) == (2000, 3)


def test_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        '[server]\nport = 2000\nhost = "0.0.0.0"\n'
        '[database]\nurl = "sqlite:///from-file.db"\n[admin]\ntoken = "file"\n'
    )
    monkeypatch.setenv("CLUSTERPROOF_CONFIG", str(config))
    monkeypatch.setenv("CLUSTERPROOF_SERVER__PORT", "3000")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/cms")
    settings = load_settings(server={"host": "10.0.0.1"})
    assert settings.server.host == "10.0.0.1"  # CLI beats all
    assert settings.server.port == 3000  # env beats the file
    assert settings.database.url == "postgresql://db/cms"  # alias beats the file
    assert settings.admin.token == "file"
    assert settings.uploads.max_bytes == 10 * 1024 * 1024  # default


def test_missing_config_file() -> None:
    with pytest.raises(
        ConfigError,
        match="^config file '/nope.toml' does not exist; pass a TOML file with "
        "--config or CLUSTERPROOF_CONFIG$",
    ):
        load_settings("/nope.toml")


def test_config_file_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d.toml").mkdir()
    with pytest.raises(
        ConfigError, match=r"^config file '.*/d\.toml' is a directory; pass a TOML"
    ):
        load_settings(tmp_path / "d.toml")


def test_config_file_that_is_not_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.toml")
    with pytest.raises(ConfigError, match=r"'.*/pipe\.toml' is not a regular file"):
        load_settings(tmp_path / "pipe.toml")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[server\nport = 1\n", "Expected ']' at the end of a table declaration"),
        (b"\xff\xfe", "'utf-8' codec can't decode byte 0xff"),
    ],
    ids=["syntax", "not utf-8"],
)
def test_malformed_config_file_is_named(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert str(raised.value).startswith(
        f"config file {str(config)!r} is not valid TOML: {problem}"
    )


def test_unreadable_config_file() -> None:
    # A regular file to stat, but reading it fails, even for root.
    with pytest.raises(
        ConfigError,
        match=r"^config file '/proc/self/mem' cannot be read \(Input/output error\)",
    ):
        load_settings("/proc/self/mem")


def test_duties_today_worker_and_primary(monkeypatch: pytest.MonkeyPatch) -> None:
    today = duties_for(load_settings())
    assert today.runs_migrations and today.runs_cron and today.delivers_webhooks
    assert today.serves_http and not today.delivers_all_events
    assert role_of(load_settings()) == "instance"

    monkeypatch.setenv("INSTANCE_TYPE", "worker")
    worker = duties_for(load_settings())
    assert worker == worker_child_duties()
    assert not (worker.runs_migrations or worker.runs_cron or worker.delivers_webhooks)
    assert worker.serves_http

    monkeypatch.setenv("INSTANCE_TYPE", "primary")
    primary = duties_for(load_settings())
    assert primary.runs_migrations and primary.runs_cron and primary.delivers_webhooks
    assert primary.delivers_all_events and primary.serves_http


def test_config_error_exits_2_before_writing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reference"],
        env={
            "CLUSTERPROOF_SERVER__CLUSTER__WORKERS": "abc",
            "DATABASE_URL": f"sqlite:///{tmp_path}/data/cp.db",
            "PATH": "/usr/bin:/bin",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.strip().splitlines() == [
        "clusterproof-server: server.cluster.workers must be a whole number "
        "from 0 to 256, got 'abc'"
    ]
    assert list(tmp_path.iterdir()) == []
