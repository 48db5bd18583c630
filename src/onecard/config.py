"""Process configuration: ``config.toml`` (or ``ONECARD_CONFIG``) plus ``ONECARD_<SECTION>__<KEY>``.

One frozen :class:`Settings` object is built at start-up and passed explicitly; nothing reads the
environment later. Validation errors name the key (``database.url``) and the problem. Secrets are
never printed: their ``repr`` is masked and :meth:`Settings.redacted` masks them for display.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "ONECARD_"
DEFAULT_CONFIG_PATH = Path("config.toml")


class ConfigError(ValueError):
    """A configuration key is unknown, missing or of the wrong type; the message names the key."""


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the platform keeps its data."""

    url: str = "sqlite:///var/onecard.db"
    echo: bool = False
    pool_size: int = 10

    def __repr__(self) -> str:
        return (
            f"DatabaseSettings(url={redact_url(self.url)!r}, echo={self.echo}, "
            f"pool_size={self.pool_size})"
        )


@dataclass(frozen=True)
class MqttSettings:
    """The broker the bridge and agents use; ``embedded`` starts a private broker."""

    embedded: bool = True
    host: str = "127.0.0.1"
    port: int = 18830
    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class WebSettings:
    """The HTTP server of ``onecard serve`` / ``onecard run``."""

    host: str = "127.0.0.1"
    port: int = 8000
    token_ttl_minutes: int = 720
    trust_proxy: bool = False
    # Socket.IO message queue ("redis://host:6379/0") shared by several web processes; empty:
    # one process, events stay in it (docs/operations.md, "Several web processes"). Masked
    # like a secret: the URL may carry the Redis password.
    message_queue: str = field(default="", repr=False)


@dataclass(frozen=True)
class SecuritySettings:
    """Operator authentication and secret material; secrets are masked in every repr."""

    secret_key: str = field(default="", repr=False)
    login_max_failures: int = 5
    lockout_minutes: int = 15
    password_min_length: int = 10


@dataclass(frozen=True)
class KeysSettings:
    """The key service: where the software HSM keeps its encrypted store, and its KEK.

    The key-encryption key comes from a file (``kek_file``) or an environment variable
    (``kek_env``), never from this file. ``development`` allows clear-text development key
    files (emulators, demos); production deployments leave it off.
    """

    backend: str = "softhsm"
    store: str = "var/keys.store"
    kek_file: str = ""
    kek_env: str = "ONECARD_KEK"
    development: bool = False


@dataclass(frozen=True)
class DemoSettings:
    """What ``onecard run`` seeds on a fresh database."""

    seed: bool = True
    tenant: str = "demo"
    username: str = "admin"
    password: str = field(default="", repr=False)
    people: int = 200


@dataclass(frozen=True)
class LoggingSettings:
    """Operational logs (audit is separate and lives in the database)."""

    level: str = "INFO"
    json: bool = True


@dataclass(frozen=True)
class Settings:
    """Everything a OneCard process needs to start; built by :func:`load_settings`."""

    database: DatabaseSettings = DatabaseSettings()
    mqtt: MqttSettings = MqttSettings()
    web: WebSettings = WebSettings()
    security: SecuritySettings = SecuritySettings()
    keys: KeysSettings = KeysSettings()
    demo: DemoSettings = DemoSettings()
    logging: LoggingSettings = LoggingSettings()

    def redacted(self) -> dict[str, dict[str, Any]]:
        """Return the settings as nested dicts with every secret replaced by ``"***"``."""
        out: dict[str, dict[str, Any]] = {}
        for section in fields(self):
            sub = getattr(self, section.name)
            out[section.name] = {
                f.name: ("***" if not f.repr and getattr(sub, f.name) else getattr(sub, f.name))
                for f in fields(sub)
            }
        out["database"]["url"] = redact_url(self.database.url)
        return out


def redact_url(url: str) -> str:
    """Hide the password of a database or broker URL (``scheme://user:***@host``)."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build settings from defaults, then the TOML file, then ``ONECARD_*`` variables.

    ``path`` defaults to ``$ONECARD_CONFIG`` or ``./config.toml`` when that exists. Raises
    :class:`ConfigError` naming the offending key for unknown sections/keys and wrong types.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, dict[str, Any]] = {}
    chosen = path or env.get("ONECARD_CONFIG")
    if chosen is None and DEFAULT_CONFIG_PATH.exists():
        chosen = DEFAULT_CONFIG_PATH
    if chosen is not None:
        raw = _read_toml(Path(chosen))
    _merge_environment(raw, env)
    return _build(raw)


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    for name, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a [section] table, got {type(value).__name__}")
    return data


def _merge_environment(raw: dict[str, dict[str, Any]], env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == "ONECARD_CONFIG" or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        raw.setdefault(section, {})[key] = _EnvText(value)


class _EnvText(str):
    """A value that came from the environment: text that is converted to the field's type."""

    __slots__ = ()


def _build(raw: dict[str, dict[str, Any]]) -> Settings:
    sections: dict[str, Any] = {}
    hints = get_type_hints(Settings)
    for section, values in raw.items():
        if section not in hints:
            raise ConfigError(f"{section}: unknown section (known: {', '.join(sorted(hints))})")
        cls = hints[section]
        sections[section] = _build_section(section, cls, values)
    settings = replace(Settings(), **sections)
    _validate(settings)
    return settings


def _build_section(section: str, cls: type, values: dict[str, Any]) -> Any:
    assert is_dataclass(cls)
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"{section}.{key}: unknown key (known: {known})")
        kwargs[key] = _coerce(f"{section}.{key}", hints[key], value)
    return cls(**kwargs)


def _coerce(key: str, typ: type, value: Any) -> Any:
    if isinstance(value, _EnvText):
        return _parse_env(key, typ, str(value))
    if typ is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got a boolean")
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, typ):
        raise ConfigError(f"{key}: expected {typ.__name__}, got {type(value).__name__}")
    return value


def _parse_env(key: str, typ: type, text: str) -> Any:
    if typ is bool:
        lowered = text.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{key}: expected a boolean (true/false), got {text!r}")
    if typ is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {text!r}") from None
    return text


def _validate(settings: Settings) -> None:
    url = settings.database.url
    if not url.startswith(("sqlite:", "postgresql")):
        raise ConfigError("database.url: only sqlite:/// and postgresql+psycopg:// are supported")
    for key, value in (("web.port", settings.web.port), ("mqtt.port", settings.mqtt.port)):
        if not 0 < value < 65536:
            raise ConfigError(f"{key}: {value} is not a TCP port (1-65535)")
    if settings.logging.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"logging.level: {settings.logging.level!r} is not a log level")
    if settings.keys.backend not in {"softhsm"}:
        raise ConfigError(
            f"keys.backend: {settings.keys.backend!r} is not a known backend (softhsm)"
        )
    if settings.security.login_max_failures < 1:
        raise ConfigError("security.login_max_failures: must be at least 1")
    if settings.web.token_ttl_minutes < 1:
        raise ConfigError("web.token_ttl_minutes: must be at least 1")
