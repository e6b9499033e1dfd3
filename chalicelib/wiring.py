"""Composition root: a :class:`~chalicelib.config.StageConfig` → a :class:`~chalicelib.service.Service`.

The handlers (``app.py``, ``chalicelib/api``) get the process's service from
:func:`get_service`: made on first use from the environment, read once
(:meth:`StageConfig.from_env`), then kept for the life of the process so connections
are reused across invocations. Tests put their own service in place with
:func:`set_service`, as the Chalice todo sample does with ``get_app_db()``:

>>> set_service(build_service(StageConfig(adapters="memory", table="t")))  # doctest: +SKIP
>>> ...                                            # the handlers now use that service
>>> set_service(None)                              # back to the stage's environment
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass, field

from .clock import SystemClock
from .config import StageConfig
from .service import Deps, Service
from .service.auth import Auth
from .service.ports import AddressMover, Clock, HostIdentity, Publisher, Store

__all__ = ["build_service", "get_service", "set_service", "admin_keys"]

_lock = threading.Lock()
_service: Service | None = None


def get_service() -> Service:
    """The service of this process: the one :func:`set_service` put in place, or else the
    one the environment describes (read on first use; :class:`ConfigError` when the stage
    is set up wrongly, read again on the next call)."""
    global _service
    service = _service
    if service is not None:
        return service
    with _lock:
        if _service is None:
            _service = build_service(StageConfig.from_env(os.environ))
        return _service


def set_service(service: Service | None) -> None:
    """Make :func:`get_service` return ``service`` (tests); ``None``: build it from the
    environment again on the next use."""
    global _service
    with _lock:
        _service = service


def build_service(config: StageConfig) -> Service:
    """A new service with the adapters ``config`` names (no connection is made yet, except
    the AWS IoT endpoint lookup when the endpoint is not configured)."""
    publisher, identity = _adapters(config)
    store = _store(config.table, endpoint_url=config.dynamodb_endpoint, region=config.region)
    return Service(Deps(store=store, publisher=publisher, identity=identity, clock=SystemClock(),
                        settings=config.settings, mover=_mover(config)))


def _mover(config: StageConfig) -> AddressMover | None:
    """Who moves a gateway group's floating address: EC2 on AWS (its Elastic IP); locally the active
    member announces the address itself; the memory stage (tests, dry runs) moves nothing."""
    if config.adapters == "aws":
        import boto3  # only here: nothing AWS happens at import time

        from .adapters.aws_addresses import EC2_CONFIG, Ec2AddressMover

        return Ec2AddressMover(boto3.session.Session(region_name=config.region).client(
            "ec2", region_name=config.region, config=EC2_CONFIG))
    if config.adapters == "local":
        from .adapters.aws_addresses import LocalAddressMover

        return LocalAddressMover()
    return None


def _store(table: str, *, endpoint_url: str | None, region: str) -> Store:
    from .adapters.dynamodb import DynamoStore

    return DynamoStore(table, endpoint_url=endpoint_url, region=region)


def _adapters(config: StageConfig) -> tuple[Publisher, HostIdentity]:
    if config.adapters == "aws":
        from .adapters.aws_env import aws_adapters

        assert config.aws is not None
        return aws_adapters(config.aws)
    if config.adapters == "local":
        from .adapters.local_env import local_adapters

        assert config.local is not None
        return local_adapters(config.local)
    from .adapters.memory import MemoryIdentity, RecordingPublisher  # tests and dry runs

    return RecordingPublisher(), MemoryIdentity()


@dataclass(frozen=True)
class _AuthDeps:
    """What admin keys need, and nothing more (no publisher, no identity)."""

    store: Store
    clock: Clock = field(default_factory=SystemClock)
    rng: random.Random = field(default_factory=random.SystemRandom)


def admin_keys(table: str, *, region: str, endpoint_url: str | None = None) -> Auth:
    """Admin keys of ``table`` alone, for the deploy-time and local bootstraps: only the table
    is opened (no broker connection, no certificate authority)."""
    return Auth(_AuthDeps(_store(table, endpoint_url=endpoint_url, region=region)))
