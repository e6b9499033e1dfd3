"""What every use case is given: the ports, a clock, randomness and settings."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..errors import UnavailableError
from .ports import AddressMover, Clock, HostIdentity, Publisher, StaleWriteError, Store

log = logging.getLogger("skymesh")
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    offline_after: int = 660  # seconds without a report before a host shows offline
    publish_lease_ttl: int = 30
    max_delta_hosts: int = 200  # hosts per broadcast; larger bursts go out in several
    # Deltas kept per network for agents that catch up (GET /config?known=…); an agent
    # further behind gets a full snapshot of that network.
    delta_log_keep: int = 64
    delta_log_ttl: int = 24 * 3600
    max_key_networks: int = 16  # a registration is one transaction of <= 100 items
    # A registration's pending identity older than this is an orphan: far above the
    # longest registration (a Lambda runs at most 30 s).
    orphan_after: int = 300
    # issue 11: how long a report or a failover pass waits for an Elastic IP move (a claim never moves
    # it); the request to EC2 is on its way by then and the scheduled pass confirms it.
    address_move_wait: float = 0.5
    # issue 11: a member's group rows count for election.correct while its report is at most this old
    # (agents report when their view changes; a dead agent's last rows age out)
    group_report_fresh: int = 90


@dataclass
class Deps:
    store: Store
    publisher: Publisher
    identity: HostIdentity
    clock: Clock
    rng: random.Random = field(default_factory=random.SystemRandom)
    settings: Settings = field(default_factory=Settings)
    sleep: Callable[[float], None] = time.sleep
    mover: AddressMover | None = None  # issue 11: None: no stage adapter moves addresses (tests)


def retrying(deps: Deps, what: str, attempt: Callable[[], T], *, attempts: int = 12,
             on: tuple[type[Exception], ...] = (StaleWriteError,)) -> T:
    """Run ``attempt`` until it does not raise one of ``on``; jittered exponential backoff.

    Used for optimistic writes that lost a race. Gives up with
    :class:`UnavailableError` after ``attempts`` tries.
    """
    delay = 0.005
    for _ in range(attempts):
        try:
            return attempt()
        except on:
            deps.sleep(deps.rng.uniform(0, delay))
            delay = min(delay * 2, 0.5)
    raise UnavailableError(f"{what}: too many concurrent changes; try again")
