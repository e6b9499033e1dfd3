"""Where the admin CLI finds the API and its admin key: ``local.json`` < environment < flags."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import CliError

__all__ = ["CONFIG_NAME", "DEFAULT_HOME", "ENV_ADMIN_KEY", "ENV_API", "ENV_HOME", "Settings",
           "read_local_config", "resolve_settings"]

ENV_HOME, ENV_API, ENV_ADMIN_KEY = "SKYMESH_HOME", "SKYMESH_API", "SKYMESH_ADMIN_KEY"
DEFAULT_HOME = ".skymesh"
CONFIG_NAME = "local.json"


@dataclass(frozen=True)
class Settings:
    """Where the API is and the admin key to call it with."""

    api_url: str
    admin_key: str


def read_local_config(home: Path) -> dict[str, str]:
    """``api_url`` / ``admin_key`` from ``home/local.json``; ``{}`` when there is no such file.

    Raises :class:`CliError` naming the file when it exists but is not a JSON object.
    """
    path = home / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise CliError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise CliError(f"{path} is not a JSON object")
    return {k: data[k] for k in ("api_url", "admin_key") if isinstance(data.get(k), str) and data[k]}


def resolve_settings(api_flag: str | None, key_flag: str | None, env: Mapping[str, str]) -> Settings:
    """The API URL and admin key: ``local.json`` < environment < flags.

    Raises :class:`CliError` saying how to provide whichever is missing, or when
    the URL is not ``http(s)://host[:port][/path]``.
    """
    config = read_local_config(Path(env.get(ENV_HOME) or DEFAULT_HOME))
    api = api_flag or env.get(ENV_API) or config.get("api_url")
    key = key_flag or env.get(ENV_ADMIN_KEY) or config.get("admin_key")
    if not api:
        raise CliError(f"no API URL: pass --api URL, set {ENV_API}, or start `skymesh local up` "
                       f"(it writes $SKYMESH_HOME/{CONFIG_NAME})")
    parts = urllib.parse.urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"API URL {api!r} is not an http:// or https:// URL")
    if not key:
        raise CliError(f"no admin key: pass --key ADMIN_KEY, set {ENV_ADMIN_KEY}, or start "
                       f"`skymesh local up` (it writes $SKYMESH_HOME/{CONFIG_NAME})")
    return Settings(api.rstrip("/"), key)
