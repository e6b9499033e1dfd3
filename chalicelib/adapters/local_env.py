"""The local stack's adapters from the environment: the one place of that contract.

``skymesh local up`` sets these for every child process; ``chalicelib.wiring``
calls :func:`local_adapters_from_env` when ``SKYMESH_PUBLISHER=mqtt`` and
``SKYMESH_IDENTITY=local``.

=============================  ==========================================================
``SKYMESH_HOME``               absolute path of the local home (CA, broker files)
``SKYMESH_MQTT_HOST``          broker address the control plane dials (the bind address)
``SKYMESH_MQTT_PORT``          broker port (default 8883)
``SKYMESH_MQTT_ENDPOINT``      address hosts are told to dial (default: SKYMESH_MQTT_HOST)
``SKYMESH_MQTT_CA``            CA bundle (default ``$SKYMESH_HOME/ca/ca.pem``)
``SKYMESH_MQTT_CLIENT_CERT``   this process's control client certificate (PEM) …
``SKYMESH_MQTT_CLIENT_KEY``    … and its key (mode 0600)
``SKYMESH_MQTT_CLIENT_NAME``   instead of the two above: a control component name; its
                               certificate (CN ``skymesh-control-<name>``) is made or
                               reused under ``$SKYMESH_HOME/control/``
``SKYMESH_MQTT_TIMEOUT``       seconds a publish may take in all (default 5)
=============================  ==========================================================

Each concurrently running process needs its own control certificate (the
broker forces the client id to the CN), which is why the stack gives each
child its own pair.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from ..errors import SkymeshError
from ..service.ports import HostIdentity, Publisher
from .local_identity import LocalCaIdentity
from .mqtt_publisher import MqttPublisher

__all__ = [
    "ENV_HOME",
    "ENV_MQTT_HOST",
    "ENV_MQTT_PORT",
    "ENV_MQTT_ENDPOINT",
    "ENV_MQTT_CA",
    "ENV_MQTT_CLIENT_CERT",
    "ENV_MQTT_CLIENT_KEY",
    "ENV_MQTT_CLIENT_NAME",
    "ENV_MQTT_TIMEOUT",
    "LOCAL_ENV_VARS",
    "LocalConfigError",
    "local_adapters_from_env",
]

ENV_HOME = "SKYMESH_HOME"
ENV_MQTT_HOST = "SKYMESH_MQTT_HOST"
ENV_MQTT_PORT = "SKYMESH_MQTT_PORT"
ENV_MQTT_ENDPOINT = "SKYMESH_MQTT_ENDPOINT"
ENV_MQTT_CA = "SKYMESH_MQTT_CA"
ENV_MQTT_CLIENT_CERT = "SKYMESH_MQTT_CLIENT_CERT"
ENV_MQTT_CLIENT_KEY = "SKYMESH_MQTT_CLIENT_KEY"
ENV_MQTT_CLIENT_NAME = "SKYMESH_MQTT_CLIENT_NAME"
ENV_MQTT_TIMEOUT = "SKYMESH_MQTT_TIMEOUT"

LOCAL_ENV_VARS = (
    ENV_HOME, ENV_MQTT_HOST, ENV_MQTT_PORT, ENV_MQTT_ENDPOINT, ENV_MQTT_CA,
    ENV_MQTT_CLIENT_CERT, ENV_MQTT_CLIENT_KEY, ENV_MQTT_CLIENT_NAME, ENV_MQTT_TIMEOUT,
)
"""Every variable this module reads (the stack passes them to its children)."""

_lock = threading.Lock()
_cache: dict[tuple[str, ...], tuple[MqttPublisher, LocalCaIdentity]] = {}


class LocalConfigError(SkymeshError):
    """The local-stack environment is incomplete or wrong; the message names the variable."""

    status = 500
    code = "misconfigured"


def _need(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if not value:
        raise LocalConfigError(f"{name} is not set; start the stack with `skymesh local up`")
    return value


def local_adapters_from_env(env: Mapping[str, str]) -> tuple[Publisher, HostIdentity]:
    """The MQTT publisher and local-CA identity this environment describes.

    One pair per distinct configuration and process, so every caller shares one
    broker connection. Raises :class:`LocalConfigError` naming a missing or bad
    variable.
    """
    home = Path(_need(env, ENV_HOME))
    if not home.is_absolute():
        raise LocalConfigError(f"{ENV_HOME} must be an absolute path, not {str(home)!r}")
    host = _need(env, ENV_MQTT_HOST)
    try:
        port = int(env.get(ENV_MQTT_PORT, "8883"))
        timeout = float(env.get(ENV_MQTT_TIMEOUT, "5"))
    except ValueError as e:
        raise LocalConfigError(f"{ENV_MQTT_PORT}/{ENV_MQTT_TIMEOUT} must be numbers: {e}") from None
    endpoint = env.get(ENV_MQTT_ENDPOINT) or host
    ca = env.get(ENV_MQTT_CA) or str(home / "ca" / "ca.pem")
    cert, key, name = (env.get(ENV_MQTT_CLIENT_CERT), env.get(ENV_MQTT_CLIENT_KEY),
                       env.get(ENV_MQTT_CLIENT_NAME))
    if not (cert and key) and not name:
        raise LocalConfigError(
            f"set {ENV_MQTT_CLIENT_CERT} and {ENV_MQTT_CLIENT_KEY} (or {ENV_MQTT_CLIENT_NAME}) "
            "to this process's control client certificate"
        )
    sig = (str(home), host, str(port), endpoint, ca, cert or "", key or "", name or "",
           str(timeout))
    with _lock:
        pair = _cache.get(sig)
        if pair is None:
            identity = LocalCaIdentity(home, endpoint, port)
            if not (cert and key):
                assert name is not None
                creds = identity.issue_control_client(name)
                cert, key = str(creds.cert_path), str(creds.key_path)
            publisher = MqttPublisher(host, port, ca, cert, key, timeout=timeout)
            pair = _cache[sig] = (publisher, identity)
        return pair
