"""The stage's configuration: every variable the control plane reads, read once into a frozen
:class:`StageConfig`.

This module is the one list of the stage's variables (:data:`VARIABLES`). The places
that set them take the names and the fixed values from here: ``infra/stack.py`` (the
AWS stage, :data:`AWS_STAGE_ENV`), ``skymesh/local/stack.py`` (each child of the local
stack, :func:`local_stage_env`); ``.chalice/config.json`` is checked against both by
``tests/unit/test_stage_config.py``. A stage that is set up wrongly raises one error,
:class:`ConfigError` (HTTP 500, code ``misconfigured``), whose message names the
variable, what is wrong with it and what to set.

>>> cfg = StageConfig.from_env({"SKYMESH_PUBLISHER": "memory", "SKYMESH_IDENTITY": "memory"})
>>> (cfg.adapters, cfg.table, cfg.region)
('memory', 'skymesh', 'us-east-1')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import SkymeshError
from .service.deps import Settings

__all__ = [
    "AWS_STAGE_ENV", "AwsConfig", "ConfigError", "LocalConfig", "StageConfig", "VARIABLES", "Variable",
    "local_stage_env", "LOCAL_TABLE", "LOCAL_REGION",
    "TABLE", "DYNAMODB_ENDPOINT", "REGION", "DEFAULT_REGION", "PUBLISHER", "IDENTITY", "OFFLINE_AFTER",
    "ORPHAN_AFTER", "IOT_POLICY", "IOT_ENDPOINT", "IOT_THING_PREFIX", "IOT_NETWORK_PREFIX",
    "IOT_STATUS_RULE", "HOME", "MQTT_HOST", "MQTT_PORT", "MQTT_ENDPOINT", "MQTT_CA", "MQTT_CLIENT_CERT",
    "MQTT_CLIENT_KEY", "MQTT_CLIENT_NAME", "MQTT_TIMEOUT",
]

Adapters = Literal["aws", "local", "memory"]


@dataclass(frozen=True)
class Variable:
    """One environment variable of a stage: its name, default (``None``: none), meaning, and
    which stages read it (``all``, ``aws`` or ``local``)."""

    name: str
    default: str | None
    meaning: str
    section: Literal["all", "aws", "local"]


_variables: list[Variable] = []
_section: Literal["all", "aws", "local"] = "all"


def _v(name: str, default: str | None, meaning: str) -> str:
    _variables.append(Variable(name, default, meaning, _section))
    return name


# --- every stage -----------------------------------------------------------------------------
TABLE = _v("SKYMESH_TABLE", "skymesh", "the DynamoDB table")
DYNAMODB_ENDPOINT = _v("SKYMESH_DYNAMODB_ENDPOINT", None, "DynamoDB endpoint URL (local only)")
REGION = _v("AWS_REGION", None, "AWS region (set by Lambda)")
DEFAULT_REGION = _v("AWS_DEFAULT_REGION", None, "AWS region when AWS_REGION is unset")
PUBLISHER = _v("SKYMESH_PUBLISHER", "iot", "iot (AWS IoT Data), mqtt (local broker) or memory (tests)")
IDENTITY = _v("SKYMESH_IDENTITY", "iot", "iot (AWS IoT registry), local (local CA) or memory (tests)")
OFFLINE_AFTER = _v("SKYMESH_OFFLINE_AFTER", str(Settings.offline_after),
                   "seconds without a status report before a host shows offline")
ORPHAN_AFTER = _v("SKYMESH_ORPHAN_AFTER", str(Settings.orphan_after),
                  "seconds after which sweep_orphans removes an unfinished registration's certificate")
# --- AWS (SKYMESH_PUBLISHER=iot, SKYMESH_IDENTITY=iot) ----------------------------------------
_section = "aws"
IOT_POLICY = _v("SKYMESH_IOT_POLICY", None, "IoT policy attached to host certificates (required)")
IOT_ENDPOINT = _v("SKYMESH_IOT_ENDPOINT", None,
                  "the account's ATS data endpoint host; unset: looked up with iot:DescribeEndpoint")
IOT_THING_PREFIX = _v("SKYMESH_IOT_THING_PREFIX", "",
                      "prefix of thing names; unset on a deployed stack (thing name = host id)")
IOT_NETWORK_PREFIX = _v("SKYMESH_IOT_NETWORK_PREFIX", None,
                        "prefix of each network's thing group and policy (default <thing prefix>net-)")
IOT_STATUS_RULE = _v("SKYMESH_IOT_STATUS_RULE", None,
                     "topic rule for status reports: hosts report through Basic Ingest")
# --- the local stack (SKYMESH_PUBLISHER=mqtt, SKYMESH_IDENTITY=local) -------------------------
_section = "local"
HOME = _v("SKYMESH_HOME", None, "the local home (CA, broker files); relative: to the working directory")
MQTT_HOST = _v("SKYMESH_MQTT_HOST", None, "broker address the control plane dials (the bind address)")
MQTT_PORT = _v("SKYMESH_MQTT_PORT", "8883", "broker port")
MQTT_ENDPOINT = _v("SKYMESH_MQTT_ENDPOINT", None, "address hosts are told to dial (default: the host)")
MQTT_CA = _v("SKYMESH_MQTT_CA", None, "CA bundle (default $SKYMESH_HOME/ca/ca.pem)")
MQTT_CLIENT_CERT = _v("SKYMESH_MQTT_CLIENT_CERT", None, "this process's control client certificate …")
MQTT_CLIENT_KEY = _v("SKYMESH_MQTT_CLIENT_KEY", None, "… and its key (mode 0600)")
MQTT_CLIENT_NAME = _v("SKYMESH_MQTT_CLIENT_NAME", None,
                      "instead of the two above: a control component name; its certificate is made "
                      "or reused under $SKYMESH_HOME/control/")
MQTT_TIMEOUT = _v("SKYMESH_MQTT_TIMEOUT", "5", "seconds a publish may take in all")

VARIABLES: tuple[Variable, ...] = tuple(_variables)
"""Every variable the control plane reads, in the order above."""

LOCAL_TABLE = "skymesh"
LOCAL_REGION = "us-east-1"

AWS_STAGE_ENV: Mapping[str, str] = {PUBLISHER: "iot", IDENTITY: "iot"}
"""What every AWS stage sets alike; the stack adds the per-stack names (table, policy, ...)."""

_ADAPTERS: dict[tuple[str, str], Adapters] = {
    ("iot", "iot"): "aws", ("mqtt", "local"): "local", ("memory", "memory"): "memory"}


def local_stage_env(home: str, *, mqtt_host: str = "127.0.0.1", mqtt_port: int = 8883,
                    dynamodb_port: int = 8000) -> dict[str, str]:
    """The variables every process of a local stack shares (``skymesh local up`` adds each
    child's own control certificate and the broker address hosts are told)."""
    return {
        TABLE: LOCAL_TABLE,
        DYNAMODB_ENDPOINT: f"http://127.0.0.1:{dynamodb_port}",
        DEFAULT_REGION: LOCAL_REGION,
        PUBLISHER: "mqtt",
        IDENTITY: "local",
        HOME: home,
        MQTT_HOST: mqtt_host,
        MQTT_PORT: str(mqtt_port),
    }


class ConfigError(SkymeshError):
    """The stage is set up wrongly; the message names the variable and what to set.

    The one error for a misconfigured stage, wherever it is found (reading the
    environment or making an adapter from it).
    """

    status = 500
    code = "misconfigured"


@dataclass(frozen=True)
class AwsConfig:
    """The AWS IoT side of a deployed stage."""

    region: str
    policy: str
    endpoint: str | None = None  # None: looked up once, when the service is built
    thing_prefix: str = ""
    network_prefix: str | None = None
    status_rule: str | None = None


@dataclass(frozen=True)
class LocalConfig:
    """The local broker and CA of ``skymesh local up``."""

    home: Path  # absolute
    mqtt_host: str
    mqtt_port: int = 8883
    mqtt_endpoint: str = ""  # what hosts dial; "" means mqtt_host
    mqtt_ca: Path | None = None  # None: home/ca/ca.pem
    client_cert: Path | None = None
    client_key: Path | None = None
    client_name: str | None = None  # instead of cert + key
    mqtt_timeout: float = 5.0

    @property
    def ca_path(self) -> Path:
        return self.mqtt_ca or self.home / "ca" / "ca.pem"

    @property
    def endpoint(self) -> str:
        return self.mqtt_endpoint or self.mqtt_host


@dataclass(frozen=True)
class StageConfig:
    """Everything the control plane needs to know about its stage, read once per process.

    ``adapters`` says which publisher and identity it uses: ``aws`` (then ``aws`` is
    set), ``local`` (then ``local`` is set) or ``memory`` (tests and dry runs).
    """

    adapters: Adapters
    table: str = LOCAL_TABLE
    region: str = LOCAL_REGION
    dynamodb_endpoint: str | None = None
    settings: Settings = Settings()
    aws: AwsConfig | None = None
    local: LocalConfig | None = None

    def __post_init__(self) -> None:
        if (self.aws is not None) != (self.adapters == "aws") or (
                (self.local is not None) != (self.adapters == "local")):
            raise ConfigError(f"adapters={self.adapters!r} goes with its own section only "
                              f"(aws set: {self.aws is not None}, local set: {self.local is not None})")

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, cwd: Path | None = None) -> StageConfig:
        """The configuration ``env`` describes (see :data:`VARIABLES`).

        A relative ``SKYMESH_HOME`` is taken relative to ``cwd`` (default: the working
        directory), as ``skymesh local up --home`` does. Raises :class:`ConfigError`
        naming the first variable that is missing or wrong.
        """
        read = _Reader(env)
        kinds = (read.text(PUBLISHER), read.text(IDENTITY))
        adapters = _ADAPTERS.get(kinds)
        if adapters is None:
            raise ConfigError(
                f"unsupported {PUBLISHER}={kinds[0]!r} with {IDENTITY}={kinds[1]!r}; set them to "
                "mqtt+local (local stack), iot+iot (AWS) or memory+memory (tests)")
        region = read.optional(REGION) or read.optional(DEFAULT_REGION)
        if region is None and adapters == "aws":
            raise ConfigError(f"{REGION} (or {DEFAULT_REGION}) is not set; set it to the region "
                              "of the stack's AWS IoT resources")
        settings = Settings(offline_after=read.seconds(OFFLINE_AFTER),
                            orphan_after=read.seconds(ORPHAN_AFTER))
        return cls(
            adapters=adapters,
            table=read.text(TABLE),
            region=region or LOCAL_REGION,
            dynamodb_endpoint=read.optional(DYNAMODB_ENDPOINT),
            settings=settings,
            aws=_aws(read, region or "") if adapters == "aws" else None,
            local=_local(read, cwd) if adapters == "local" else None,
        )


def _aws(read: _Reader, region: str) -> AwsConfig:
    policy = read.optional(IOT_POLICY)
    if policy is None:
        raise ConfigError(f"{IOT_POLICY} is not set; set it to the name of the IoT policy the "
                          "stack made for host certificates")
    return AwsConfig(region=region, policy=policy, endpoint=_clean_endpoint(read.optional(IOT_ENDPOINT)),
                     thing_prefix=read.text(IOT_THING_PREFIX),
                     network_prefix=read.optional(IOT_NETWORK_PREFIX),
                     status_rule=read.optional(IOT_STATUS_RULE))


def _local(read: _Reader, cwd: Path | None) -> LocalConfig:
    hint = "start the stack with `skymesh local up`"
    home = read.required(HOME, hint)
    base = cwd if cwd is not None else Path.cwd()
    cert, key, name = (read.optional(MQTT_CLIENT_CERT), read.optional(MQTT_CLIENT_KEY),
                       read.optional(MQTT_CLIENT_NAME))
    if not (cert and key) and not name:
        raise ConfigError(f"set {MQTT_CLIENT_CERT} and {MQTT_CLIENT_KEY} (or {MQTT_CLIENT_NAME}) to "
                          "this process's control client certificate")
    ca = read.optional(MQTT_CA)
    return LocalConfig(
        home=(base / home).absolute(), mqtt_host=read.required(MQTT_HOST, hint),
        mqtt_port=read.port(MQTT_PORT), mqtt_endpoint=read.optional(MQTT_ENDPOINT) or "",
        mqtt_ca=Path(ca) if ca else None,
        client_cert=Path(cert) if cert and key else None, client_key=Path(key) if cert and key else None,
        client_name=None if cert and key else name, mqtt_timeout=read.positive(MQTT_TIMEOUT))


def _clean_endpoint(raw: str | None) -> str | None:
    """``host`` from ``host``, ``https://host`` or ``https://host/``."""
    if raw is None:
        return None
    value = raw
    for scheme in ("https://", "http://"):
        if value.lower().startswith(scheme):
            value = value[len(scheme):]
    return value.rstrip("/") or None


_DEFAULTS = {v.name: v.default for v in VARIABLES}


class _Reader:
    """Reads variables of ``env`` (whitespace stripped; empty counts as unset)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def optional(self, name: str) -> str | None:
        value = (self._env.get(name) or "").strip()
        return value or _DEFAULTS[name]

    def text(self, name: str) -> str:
        value = self.optional(name)
        assert value is not None, f"{name} has no default"
        return value

    def required(self, name: str, hint: str) -> str:
        value = self.optional(name)
        if value is None:
            raise ConfigError(f"{name} is not set; {hint}")
        return value

    def seconds(self, name: str) -> int:
        raw = self.text(name)
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number of seconds; set it to one, "
                              f"or unset it for the default ({_DEFAULTS[name]})") from None

    def port(self, name: str) -> int:
        raw = self.text(name)
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ConfigError(f"{name}={raw!r} is not a port number; set it to 1-65535 "
                              f"(default {_DEFAULTS[name]})")
        return int(raw)

    def positive(self, name: str) -> float:
        raw = self.text(name)
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name}={raw!r} is not a positive number of seconds; set it to one "
                              f"(default {_DEFAULTS[name]})")
        return value
