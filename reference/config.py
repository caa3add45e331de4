"""Settings of the reference server, and the duties an instance takes on."""

from __future__ import annotations

import base64
import json
import os
import socket
import tomllib
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

MAX_WORKERS = 256
MAX_DRAIN_SECONDS = 3600
MAX_SHOWN = 80  # characters of a bad value quoted back
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}

# The TOML file is chosen at load time (--config or CLUSTERPROOF_CONFIG), but
# pydantic-settings builds its sources in a classmethod; the path travels here.
_config_file: ContextVar[Path | None] = ContextVar("config_file", default=None)


class ConfigError(Exception):
    """A setting is missing or invalid; the message is one line for people."""


def _whole_number_in(value: Any, low: int, high: int) -> int | None:
    """value as an int if it is a whole number from low to high, else None.

    _whole_number_in("4", 0, 256) -> 4; _whole_number_in(1.5, 0, 256) -> None
    """
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or not low <= number <= high:
        return None
    return number


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClusterSettings(_Section):
    enabled: bool = False
    workers: int = 0
    # How long in-flight requests, cron executions and deliveries get to
    # finish after SIGTERM before what is left is killed.
    drain_seconds: int = 30

    @field_validator("enabled", mode="before")
    @classmethod
    def _real_boolean(cls, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"server.cluster.enabled must be true or false, got {value!r}")

    @field_validator("workers", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> int:
        number = _whole_number_in(value, 0, MAX_WORKERS)
        if number is None:
            raise ValueError(
                "server.cluster.workers must be a whole number from 0 to "
                f"{MAX_WORKERS}, got {value!r}"
            )
        return number

    @field_validator("drain_seconds", mode="before")
    @classmethod
    def _whole_seconds(cls, value: Any) -> int:
        number = _whole_number_in(value, 0, MAX_DRAIN_SECONDS)
        if number is None:
            raise ValueError(
                "server.cluster.drain_seconds must be a whole number of seconds "
                f"from 0 to {MAX_DRAIN_SECONDS}, got {value!r}"
            )
        return number


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=1337, ge=0, le=65535)
    # "content-api" serves /api and health only: no admin API, uploads,
    # migrations, cron or webhook delivery, so /api scales on its own.
    role: Literal["full", "content-api"] = "full"
    cluster: ClusterSettings = ClusterSettings()


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class InstanceSettings(_Section):
    id: str = Field(default_factory=_default_instance_id, min_length=1)
    type: Literal["primary", "worker"] | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> str | None:
        if value is None or value == "":
            return None
        if value in ("primary", "worker"):
            return value
        raise ValueError(
            f"INSTANCE_TYPE must be primary or worker (or unset), got {value!r}"
        )


class DatabaseSettings(_Section):
    url: str = "sqlite:///./data/clusterproof.db"

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql")):
            raise ValueError(
                f"database.url must be a sqlite:/// or postgresql:// url, got {value!r}"
            )
        return value


class AdminSettings(_Section):
    token: str | None = None


class UploadSettings(_Section):
    dir: Path = Path("./data/uploads")
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1)


class MailSettings(_Section):
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    from_address: str = "clusterproof@localhost"
    digest_to: str = "editors@localhost"


class WebhookSettings(_Section):
    secret: str | None = None
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_seconds: float = Field(default=0.5, ge=0)
    # A claim on an event not renewed for this long is taken to belong to a
    # dead process, and another runner may claim the event again.
    claim_lease_seconds: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("secret")
    @classmethod
    def _standard_secret(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ok = value.startswith("whsec_") and bool(base64.b64decode(value[6:]))
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                "webhooks.secret must be 'whsec_' followed by base64, got "
                f"{value[:10]!r}..."
            )
        return value


class ClockSettings(_Section):
    pin: datetime | None = None
    anchor: float | None = None

    @field_validator("pin")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class FaultSettings(_Section):
    # Exists only to prove the regression gate can fail: in cluster mode,
    # every worker also runs cron, as the proposal's naive implementation
    # would, so each occurrence executes once per worker plus once in the
    # primary. Never turn it on outside a test of the gate.
    cron_on_workers: bool = False


class _AliasSource(PydanticBaseSettingsSource):
    """Plain DATABASE_URL and INSTANCE_TYPE, the names operators already use."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if "DATABASE_URL" in os.environ:
            found["database"] = {"url": os.environ["DATABASE_URL"]}
        if "INSTANCE_TYPE" in os.environ:
            found["instance"] = {"type": os.environ["INSTANCE_TYPE"]}
        return found


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLUSTERPROOF_", env_nested_delimiter="__", extra="ignore"
    )

    server: ServerSettings = ServerSettings()
    instance: InstanceSettings = Field(default_factory=InstanceSettings)
    database: DatabaseSettings = DatabaseSettings()
    admin: AdminSettings = AdminSettings()
    uploads: UploadSettings = UploadSettings()
    mail: MailSettings = MailSettings()
    webhooks: WebhookSettings = WebhookSettings()
    clock: ClockSettings = ClockSettings()
    faults: FaultSettings = FaultSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings, _AliasSource(settings_cls)]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, config_file))
        return tuple(sources)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from overrides (CLI), env, the TOML file and defaults.

    Raises ConfigError with one line naming the setting, the value and the rule.
    """
    path = config_file or os.environ.get("CLUSTERPROOF_CONFIG")
    if path:
        _check_config_file(Path(path))
    _check_sections_in_env()
    token = _config_file.set(Path(path) if path else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not valid TOML: {exc}"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"config file {str(path)!r} cannot be read ({exc.strerror}); "
            "make it readable or pass another with --config or CLUSTERPROOF_CONFIG"
        ) from None
    finally:
        _config_file.reset(token)


def _check_config_file(path: Path) -> None:
    """Raise ConfigError unless path names a file a TOML reader can open."""
    if path.is_dir():
        problem = "is a directory"
    elif not path.exists():
        problem = "does not exist"
    elif not path.is_file():
        problem = "is not a regular file"
    else:
        return
    raise ConfigError(
        f"config file {str(path)!r} {problem}; pass a TOML file with --config "
        "or CLUSTERPROOF_CONFIG"
    )


def _check_sections_in_env() -> None:
    """Raise ConfigError naming the variable that gives a section as bad JSON.

    CLUSTERPROOF_SERVER (or CLUSTERPROOF_SERVER__CLUSTER) holds a whole section
    as JSON; pydantic-settings names only the field when it cannot parse one.
    """
    prefix = Settings.model_config["env_prefix"]
    delimiter = Settings.model_config["env_nested_delimiter"]
    assert prefix and delimiter
    for name, value in os.environ.items():
        if not name.upper().startswith(prefix):
            continue
        section: type[BaseModel] = Settings
        for part in name[len(prefix) :].lower().split(delimiter):
            inner = section.model_fields.get(part)
            if inner is None or not _is_section(inner.annotation):
                break  # one value, or not a setting: validation judges it
            section = inner.annotation
        else:
            try:
                json.loads(value)
            except ValueError:
                raise ConfigError(
                    f"{name} gives a whole section, so it must be a JSON object, "
                    f"got {value[:MAX_SHOWN]!r}; or set one value, as "
                    f"{name}{delimiter}<setting>"
                ) from None


def _is_section(annotation: object) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _one_line(exc: ValidationError) -> str:
    """First problem of a ValidationError as one line for people."""
    error = exc.errors()[0]
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg'].lower()}, got {error.get('input')!r}"


@dataclass(frozen=True)
class Duties:
    """What an instance does besides existing: derived, never configured."""

    runs_migrations: bool
    runs_cron: bool
    delivers_webhooks: bool
    serves_http: bool
    # The admin API and uploads; off for a content-api instance.
    serves_admin: bool = True
    # Today's webhook runner lives in the memory of the process that raised
    # the event; a primary delivers for every instance (see webhooks.py).
    delivers_all_events: bool = False

    @property
    def runs_services(self) -> bool:
        return self.runs_cron or self.delivers_webhooks


def duties_for(settings: Settings) -> Duties:
    """Duties of the process started with these settings.

    Cluster off and no INSTANCE_TYPE is today's behaviour: everything.
    """
    if settings.server.role == "content-api":
        return Duties(
            runs_migrations=False,
            runs_cron=False,
            delivers_webhooks=False,
            serves_http=not settings.server.cluster.enabled,
            serves_admin=False,
        )
    if settings.instance.type == "worker":
        return worker_child_duties()
    primary = settings.instance.type == "primary" or settings.server.cluster.enabled
    return Duties(
        runs_migrations=True,
        runs_cron=True,
        delivers_webhooks=True,
        # In cluster mode the forked workers serve HTTP, not the primary.
        serves_http=not settings.server.cluster.enabled,
        delivers_all_events=primary,
    )


def worker_child_duties(role: str = "full") -> Duties:
    """Duties of a worker: serve HTTP (all of it, or only /api), nothing else."""
    return Duties(
        runs_migrations=False,
        runs_cron=False,
        delivers_webhooks=False,
        serves_http=True,
        serves_admin=role == "full",
    )


def role_of(settings: Settings) -> str:
    """Name used in log lines: primary, worker, or instance (today's mode)."""
    if settings.server.cluster.enabled:
        return "primary"
    return settings.instance.type or "instance"
