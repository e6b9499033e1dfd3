"""Composition root: the stage's environment → a :class:`~chalicelib.service.Service`.

Read at call time (Lambda configuration comes from the stage's environment, and
Chalice's test client sets it only during a call); one service is kept per
distinct configuration so connections are reused across invocations.

Variables:

- ``SKYMESH_TABLE`` (default ``skymesh``), ``SKYMESH_DYNAMODB_ENDPOINT`` (local only),
  ``AWS_REGION`` / ``AWS_DEFAULT_REGION``
- ``SKYMESH_PUBLISHER``: ``mqtt`` (local broker), ``iot`` (AWS IoT Data) or ``memory`` (tests)
- ``SKYMESH_IDENTITY``: ``local`` (local CA + Mosquitto ACLs), ``iot`` (AWS IoT registry)
  or ``memory`` (tests)
- ``SKYMESH_OFFLINE_AFTER``: seconds without a status report before a host is offline
- ``SKYMESH_ORPHAN_AFTER``: seconds after which an unfinished registration's certificate
  is removed by ``sweep_orphans``
- adapter-specific variables: see ``adapters/local_env.py`` and ``adapters/aws_env.py``
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from .clock import SystemClock
from .errors import SkymeshError
from .service import Deps, Service, Settings

__all__ = ["build_service", "ConfigurationError"]

_lock = threading.Lock()
_cache: dict[tuple[tuple[str, str], ...], Service] = {}


class ConfigurationError(SkymeshError):
    status = 500
    code = "misconfigured"


def _region(env: Mapping[str, str]) -> str:
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"


def _signature(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    keys = [k for k in env if k.startswith("SKYMESH_")] + ["AWS_REGION", "AWS_DEFAULT_REGION"]
    return tuple(sorted((k, env[k]) for k in keys if k in env))


def build_service(env: Mapping[str, str] | None = None) -> Service:
    """The service for this configuration (cached per distinct configuration)."""
    env = os.environ if env is None else env
    sig = _signature(env)
    with _lock:
        service = _cache.get(sig)
        if service is None:
            service = _cache[sig] = _build(env)
        return service


def _build(env: Mapping[str, str]) -> Service:
    from .adapters.dynamodb import DynamoStore

    store = DynamoStore(env.get("SKYMESH_TABLE", "skymesh"),
                        endpoint_url=env.get("SKYMESH_DYNAMODB_ENDPOINT") or None,
                        region=_region(env))
    publisher_kind = env.get("SKYMESH_PUBLISHER", "iot")
    identity_kind = env.get("SKYMESH_IDENTITY", "iot")
    if (publisher_kind, identity_kind) == ("memory", "memory"):  # tests and dry runs
        from .adapters.memory import MemoryIdentity, RecordingPublisher
        publisher, identity = RecordingPublisher(), MemoryIdentity()
    elif (publisher_kind, identity_kind) == ("mqtt", "local"):
        from .adapters.local_env import local_adapters_from_env
        publisher, identity = local_adapters_from_env(env)
    elif (publisher_kind, identity_kind) == ("iot", "iot"):
        from .adapters.aws_env import aws_adapters_from_env
        publisher, identity = aws_adapters_from_env(env)
    else:
        raise ConfigurationError(
            f"unsupported SKYMESH_PUBLISHER={publisher_kind!r} with SKYMESH_IDENTITY="
            f"{identity_kind!r}; use mqtt+local (local stack), iot+iot (AWS) or memory+memory (tests)")
    settings = Settings(offline_after=int(env.get("SKYMESH_OFFLINE_AFTER", Settings.offline_after)),
                        orphan_after=int(env.get("SKYMESH_ORPHAN_AFTER", Settings.orphan_after)))
    return Service(Deps(store=store, publisher=publisher, identity=identity,
                        clock=SystemClock(), settings=settings))
