"""The records of the control plane, as frozen dataclasses.

A *member* is one host's WireGuard view inside one network: everything another
host needs to make it a peer. It is what the update stream carries and what the
topology function reads, so it is deliberately small.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .ids import EnrollmentKeyId, HostId, NetworkId

__all__ = [
    "Network",
    "Member",
    "Host",
    "HostStatus",
    "PeerStatus",
    "EnrollmentKey",
    "AdminKey",
    "DEFAULT_LISTEN_PORT",
    "DEFAULT_KEEPALIVE",
    "DEFAULT_MTU",
]

DEFAULT_LISTEN_PORT = 51820
DEFAULT_KEEPALIVE = 25
DEFAULT_MTU = 1420


@dataclass(frozen=True)
class Network:
    id: NetworkId
    name: str
    ipv4_cidr: str
    ipv6_cidr: str
    listen_port: int = DEFAULT_LISTEN_PORT
    keepalive: int = DEFAULT_KEEPALIVE
    mtu: int = DEFAULT_MTU
    seq: int = 0
    created_at: int = 0

    def with_changes(self, **changes: object) -> Network:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Member:
    """A host as a peer of one network."""

    network_id: NetworkId
    host_id: HostId
    name: str
    public_key: str
    ipv4: str
    ipv6: str
    listen_port: int
    endpoints: tuple[str, ...] = ()

    @property
    def allowed_ips(self) -> tuple[str, str]:
        return (f"{self.ipv4}/32", f"{self.ipv6}/128")


@dataclass(frozen=True)
class PeerStatus:
    """What a host reports of one peer it has talked to (the agent reads it off a ``DevicePeer``)."""

    public_key: str
    latest_handshake_age: int | None  # seconds; None = never
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(frozen=True)
class HostStatus:
    online: bool = False
    last_seen: int | None = None
    agent_version: str | None = None
    reported_endpoints: tuple[str, ...] = ()
    peers: tuple[PeerStatus, ...] = ()


@dataclass(frozen=True)
class Host:
    id: HostId
    name: str
    public_key: str
    listen_port: int
    endpoints: tuple[str, ...]
    # network id -> (ipv4, ipv6)
    addresses: dict[NetworkId, tuple[str, str]] = field(default_factory=dict)
    certificate_id: str = ""
    token_hash: str = ""
    enrollment_key_id: EnrollmentKeyId | None = None
    observed_endpoint: str | None = None
    tags: tuple[str, ...] = ()
    created_at: int = 0
    revision: int = 0  # bumped by every change of the fields above; optimistic writes
    status: HostStatus = field(default_factory=HostStatus)

    @property
    def network_ids(self) -> tuple[NetworkId, ...]:
        return tuple(sorted(self.addresses))

    def member_of(self, network_id: NetworkId) -> Member:
        ipv4, ipv6 = self.addresses[network_id]
        return Member(
            network_id=network_id,
            host_id=self.id,
            name=self.name,
            public_key=self.public_key,
            ipv4=ipv4,
            ipv6=ipv6,
            listen_port=self.listen_port,
            endpoints=self.all_endpoints,
        )

    @property
    def all_endpoints(self) -> tuple[str, ...]:
        """Declared endpoints first, then the address the API saw requests come from."""
        out = list(self.endpoints)
        if self.observed_endpoint and self.observed_endpoint not in out:
            out.append(self.observed_endpoint)
        return tuple(out)


@dataclass(frozen=True)
class EnrollmentKey:
    id: EnrollmentKeyId
    networks: tuple[NetworkId, ...]
    token_hash: str
    uses_total: int | None  # None: unlimited or time-bound only
    uses_left: int | None
    expires_at: int | None
    unlimited: bool
    tags: tuple[str, ...] = ()
    revoked: bool = False
    created_at: int = 0

    def refusal(self, now: int) -> str | None:
        """Why this key cannot enroll a host now, or ``None`` when it can."""
        if self.revoked:
            return "this enrollment key was revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "this enrollment key has expired"
        if self.uses_left is not None and self.uses_left <= 0:
            return "this enrollment key has no uses left"
        return None


@dataclass(frozen=True)
class AdminKey:
    id: str
    token_hash: str
    name: str = "admin"
    created_at: int = 0
