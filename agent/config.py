"""kevolve.toml: per-role LLM settings (server, key variable, model, limits) and price overrides.

    [llm]                      # defaults for every role
    base_url = "http://localhost:8000/v1"
    api_key_env = "OPENAI_API_KEY"
    timeout_s = 300
    max_retries = 4

    [coder]                    # a role may name its own server and key variable
    model = "gpt-4.1"
    temperature = 0.4

    [judge]
    base_url = "https://api.openai.com/v1"
    api_key_env = "JUDGE_OPENAI_KEY"
    model = "o4-mini"

    [prices]                   # USD per 1M tokens, added to / replacing the built-in table
    "my-local-model" = { input = 0.0, output = 0.0 }
    "gpt-4.1" = [2.0, 8.0]

The key itself never lives in the file or in this object: only the name of the environment variable.
Unknown top-level tables are kept in `extra` for other parts of kevolve; unknown keys inside the
sections above are errors (they are almost always typos).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

ROLES = ("coder", "judge")
CONFIG_NAME = "kevolve.toml"


@dataclass
class RoleConfig:
    """How one role talks to its server. None means: not set here, take the default."""

    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    model: str | None = None
    temperature: float | None = None  # None: not sent (reasoning models refuse anything but their default)
    max_tokens: int | None = None  # None: the server decides (and the budget check assumes 4096)
    timeout_s: float = 300.0
    max_retries: int = 4
    backoff_s: float = 1.0  # first retry waits about this long, doubling each time (with jitter)
    backoff_max_s: float = 60.0  # also caps a server's Retry-After
    poll_s: float = 1.0  # manual backend: how often to look for the answer file
    manual_wait_s: float | None = None  # manual backend: give up after this long (None: wait forever)

    def resolved_base_url(self) -> str | None:
        # Env is read at use time, so tests and shells can change it after loading the file.
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or None


@dataclass
class KevolveConfig:
    defaults: RoleConfig = field(default_factory=RoleConfig)
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)  # only the keys each section sets
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)  # model -> (input, output) USD / 1M
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def role(self, name: str) -> RoleConfig:
        """The defaults with this role's own section laid over them."""
        return replace(self.defaults, **self.roles.get(name, {}))


_FIELDS = {f.name: f for f in fields(RoleConfig)}
_FLOATS = {"temperature", "timeout_s", "backoff_s", "backoff_max_s", "poll_s", "manual_wait_s"}
_INTS = {"max_tokens", "max_retries"}
_STRS = {"base_url", "api_key_env", "model"}
_POSITIVE = {"timeout_s", "max_tokens", "poll_s", "manual_wait_s"}


def load_config(path: Path | None = None) -> KevolveConfig:
    """Read kevolve.toml: the given path, else ./kevolve.toml, else ~/.config/kevolve/kevolve.toml, else defaults."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ValueError(f"config file {path} not found")
    else:
        path = next((p for p in _search_paths() if p.is_file()), None)
        if path is None:
            return KevolveConfig()
    if tomllib is None:
        raise ValueError(f"{path}: reading TOML needs Python 3.11+ or the tomli package")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    return config_from_dict(data, path=path)


def config_from_dict(data: dict, path: Path | None = None) -> KevolveConfig:
    where = str(path) if path else "config"
    cfg = KevolveConfig(path=path)
    for name, value in data.items():
        if name == "llm":
            cfg.defaults = replace(cfg.defaults, **_role_section(value, f"{where} [llm]"))
        elif name in ROLES:
            cfg.roles[name] = _role_section(value, f"{where} [{name}]")
        elif name == "prices":
            cfg.prices = _prices(value, f"{where} [prices]")
        elif name in _FIELDS:
            raise ValueError(f"{where}: {name} = ... belongs in a section ([llm], [coder] or [judge])")
        else:
            cfg.extra[name] = value
    return cfg


def _search_paths() -> list[Path]:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Path.cwd() / CONFIG_NAME, Path(base) / "kevolve" / CONFIG_NAME]


def _role_section(section: Any, where: str) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise ValueError(f"{where} must be a table")
    out: dict[str, Any] = {}
    for key, value in section.items():
        if key == "api_key":  # keys stay in the environment, never in files that get copied around
            raise ValueError(f"{where}: do not put api_key in the file; set api_key_env to the name of a variable")
        if key not in _FIELDS:
            raise ValueError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(_FIELDS))})")
        out[key] = _check_value(key, value, where)
    return out


def _check_value(key: str, value: Any, where: str) -> Any:
    if key in _STRS:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: {key} must be a non-empty string")
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {key} must be a number, not {value!r}")
    if key in _INTS and not isinstance(value, int):
        raise ValueError(f"{where}: {key} must be an integer, not {value!r}")
    if value < 0 or (key in _POSITIVE and value == 0):
        raise ValueError(f"{where}: {key} must be {'positive' if key in _POSITIVE else 'at least 0'}, not {value!r}")
    return float(value) if key in _FLOATS else value


def _prices(section: Any, where: str) -> dict[str, tuple[float, float]]:
    if not isinstance(section, dict):
        raise ValueError(f"{where} must be a table of model = {{ input = X, output = Y }}")
    out = {}
    for model, value in section.items():
        if isinstance(value, dict) and set(value) <= {"input", "output"} and "input" in value:
            pair = (value["input"], value.get("output", value["input"]))
        elif isinstance(value, list) and len(value) == 2:
            pair = (value[0], value[1])
        else:
            raise ValueError(f"{where}: {model!r} must be {{ input = X, output = Y }} (USD per 1M tokens)")
        if any(isinstance(p, bool) or not isinstance(p, (int, float)) or p < 0 for p in pair):
            raise ValueError(f"{where}: {model!r} prices must be numbers >= 0")
        out[str(model)] = (float(pair[0]), float(pair[1]))
    return out
