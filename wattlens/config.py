"""Settings resolution: flags > environment (WATTLENS_*) > TOML file (--config) > built-in defaults."""

from __future__ import annotations

import argparse
import math
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collector.errors import ConfigError

_DEFAULTS = "_wattlens_defaults"
_TYPES = "_wattlens_types"


def option(parser: argparse.ArgumentParser, *flags: str, default: Any = None,
           type: Callable[[str], Any] | None = None, **kwargs: Any) -> None:
    """Add an option whose value may also come from WATTLENS_<DEST> or the config file.

    The default is applied after the environment and the file were consulted,
    so the precedence is flags > environment > file > default.
    """
    if type is not None:
        kwargs["type"] = type
    action = parser.add_argument(*flags, default=None, **kwargs)
    defaults: dict[str, Any] = parser.__dict__.setdefault(_DEFAULTS, {})
    types: dict[str, Any] = parser.__dict__.setdefault(_TYPES, {})
    defaults[action.dest] = default
    types[action.dest] = parse_bool if kwargs.get("action") == "store_true" else type
    if default is not None and action.help and "%(default)" not in action.help:
        action.help += f" (default: {default}; env WATTLENS_{action.dest.upper()})"
    elif action.help:
        action.help += f" (env WATTLENS_{action.dest.upper()})"


def env_name(dest: str) -> str:
    return f"WATTLENS_{dest.upper()}"


def load_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--config: file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config: {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except IsADirectoryError:
        raise ConfigError(f"--config: {path!r} is a directory; give a TOML file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path}: expected a TOML table")
    return data


def resolve(parser: argparse.ArgumentParser, args: argparse.Namespace, section: str) -> None:
    """Fill every option left unset on the command line from env, then file, then default."""
    defaults: dict[str, Any] = parser.__dict__.get(_DEFAULTS, {})
    types: dict[str, Any] = parser.__dict__.get(_TYPES, {})
    file_data = load_file(getattr(args, "config", None) or os.environ.get("WATTLENS_CONFIG"))
    table = file_data.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"--config: [{section}] must be a table, got {table!r}")
    known = set(defaults)
    for key in table:
        if key.replace("-", "_") not in known:
            raise ConfigError(f"--config: [{section}] unknown setting {key!r}; "
                              f"known: {', '.join(sorted(known))}")
    for dest, default in defaults.items():
        if getattr(args, dest, None) is not None:
            continue
        convert = types.get(dest)
        env = os.environ.get(env_name(dest))
        if env is not None and env != "":
            setattr(args, dest, _convert(convert, env, env_name(dest)))
            continue
        for key in (dest, dest.replace("_", "-")):
            if key in table:
                setattr(args, dest, _from_file(convert, table[key], f"--config: [{section}] {key}"))
                break
        else:
            setattr(args, dest, default)


def _from_file(convert: Callable[[str], Any] | None, value: Any, where: str) -> Any:
    """A config-file value checked by the same converter as its flag (TOML numbers included)."""
    if convert is parse_bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _convert(convert, value, where)
        raise ConfigError(f"{where}: invalid value {value!r}: expected true or false")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        kind = "a string" if convert is None else "a number"
        raise ConfigError(f"{where}: invalid value {value!r}: expected {kind}")
    if convert is None:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: invalid value {value!r}: expected a string")
        return value
    return _convert(convert, value if isinstance(value, str) else repr(value), where)


def _convert(convert: Callable[[str], Any] | None, raw: str, where: str) -> Any:
    if convert is None:
        return raw
    try:
        return convert(raw)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{where}: invalid value {raw!r}: {exc}") from None


def default_store_url() -> str:
    """The embedded default store: a file under the user's data dir."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"sqlite:///{Path(base) / 'wattlens' / 'wattlens.db'}"


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def state_dir() -> Path:
    """Where the agent keeps its spool and audit log: $XDG_STATE_HOME/wattlens."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "wattlens"


def agent_token() -> str | None:
    """The agent's bearer token: WATTLENS_AGENT_TOKEN, or the file WATTLENS_AGENT_TOKEN_FILE names.

    Never a flag: a secret in argv shows in `ps` and shell history.
    """
    from collector.auth import TokenError, check_token

    token = os.environ.get("WATTLENS_AGENT_TOKEN", "").strip()
    where = "WATTLENS_AGENT_TOKEN"
    path = os.environ.get("WATTLENS_AGENT_TOKEN_FILE", "").strip()
    if not token and path:
        where = f"WATTLENS_AGENT_TOKEN_FILE ({path})"
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"WATTLENS_AGENT_TOKEN_FILE: cannot read {path!r}: "
                              f"{exc.strerror}") from None
    try:
        return check_token(token or None, where)
    except TokenError as exc:
        raise ConfigError(str(exc)) from None


def positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text!r}")
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


MIN_INTERVAL_S = 0.05


def interval_seconds(text: str) -> float:
    """A sampling interval: a finite number of seconds, at least MIN_INTERVAL_S."""
    value = positive_float(text)
    if value < MIN_INTERVAL_S:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_INTERVAL_S:g} s, got {text!r}")
    return value


def port_number(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port 0..65535 (0 disables), got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value
