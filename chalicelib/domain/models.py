"""The records of the control plane, as frozen dataclasses.

A *member* is one host's WireGuard view inside one network: everything another
host needs to make it a peer. It is what the update stream carries and what the
topology function reads, so it is deliberately small.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .ids import ClientId, EnrollmentKeyId, GroupId, HostId, NetworkId

__all__ = [
    "Network",
    "Member",
    "Gateway",
    "MemberRole",
    "Client",
    "GatewayGroup",
    "MAX_GROUP_MEMBERS",
    "is_group_gateway",
    "Host",
    "HostStatus",
    "PeerStatus",
    "LatencyRow",
    "EnrollmentKey",
    "AdminKey",
    "DEFAULT_LISTEN_PORT",
    "DEFAULT_KEEPALIVE",
    "DEFAULT_MTU",
    "AUTO",
]

DEFAULT_LISTEN_PORT = 51820
DEFAULT_KEEPALIVE = 25
DEFAULT_MTU = 1420
# MemberRole.internet_gateway: any internet gateway of the network (HA, like Tailscale's
# ``--exit-node=auto:any``); the plan ranks them for the host like a shared egress range.
# No host id looks like it (ids are ``host_…``).
AUTO = "auto"
# issue 11: a gateway group has 1 to 4 members (the election is tested up to 4).
MAX_GROUP_MEMBERS = 4


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
class Gateway:
    """A member's gateway role in one network: what it serves beyond its own addresses.

    - ``remote_access``: devices without an agent (:class:`Client`) connect to it with a
      wg-quick file; every member routes their addresses through it, and it forwards.
    - ``egress``: ranges behind it (an office LAN, a VPC); every member routes them through
      it, and it forwards and masquerades them out of the interface that reaches them.
    - ``internet``: members that opt in (:attr:`MemberRole.internet_gateway`, full tunnel)
      send all their traffic through it; it masquerades it out of its uplink.
    - ``endpoint``: where clients reach it (``HOST:PORT``); None: the host's first endpoint.
    - ``auto_relay``: it may relay pairs of hosts that cannot reach each other directly
      (:attr:`MemberRole.pair_relays`).
    """

    remote_access: bool = False
    egress: tuple[str, ...] = ()
    internet: bool = False
    endpoint: str | None = None
    auto_relay: bool = True


@dataclass(frozen=True)
class MemberRole:
    """What a host does in one network beyond being a peer: serve as a gateway, and/or use
    one member of it as its internet gateway (``full_tunnel``: all its traffic; else only
    the network's and egress ranges, which it routes through their gateways anyway), or any
    of them (``internet_gateway`` :data:`AUTO`: the plan ranks the network's internet gateways
    for it like a shared range, whose key in ``pinned``/``placed`` is ``0.0.0.0/0``), and/or
    be reached only through another member, its relay (``relayed_by``: it peers with the
    relay alone, and every other member reaches it through the relay)."""

    gateway: Gateway | None = None
    internet_gateway: HostId | None = None  # a member, or AUTO
    full_tunnel: bool = False
    relayed_by: HostId | None = None
    # Ranges several gateways serve (HA; internet access with AUTO: "0.0.0.0/0"): which of them
    # this host sends each one to.
    # ``pinned`` is the operator's choice (only that gateway, even when it is down);
    # ``placed`` is the failover function's (first choice; the agent moves to the next
    # ranked one by itself while it is down). Sorted (range, gateway) pairs.
    pinned: tuple[tuple[str, HostId], ...] = ()
    placed: tuple[tuple[str, HostId], ...] = ()
    # Automatic relays: pairs of members whose direct path does not work, each relayed through an
    # auto-relay gateway. A pair is stored once, on the role of its member with the smaller host id
    # (so one decision is one member record in one broadcast): sorted (peer, via) pairs.
    pair_relays: tuple[tuple[HostId, HostId], ...] = ()

    def __bool__(self) -> bool:
        return self != _NO_ROLE

    def pin(self, prefix: str) -> HostId | None:
        """The gateway the operator pinned ``prefix`` to for this host (None: automatic)."""
        return next((g for p, g in self.pinned if p == prefix), None)

    def placement(self, prefix: str) -> HostId | None:
        """The gateway the failover function placed this host on for ``prefix`` (None: none yet)."""
        return next((g for p, g in self.placed if p == prefix), None)

    def pair_relay(self, peer: HostId) -> HostId | None:
        """The member this host's traffic with ``peer`` goes through, as recorded here (None: none)."""
        return next((v for p, v in self.pair_relays if p == peer), None)


_NO_ROLE = MemberRole()


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
    role: MemberRole = _NO_ROLE

    @property
    def allowed_ips(self) -> tuple[str, str]:
        return (f"{self.ipv4}/32", f"{self.ipv6}/128")

    @property
    def gateway(self) -> Gateway | None:
        return self.role.gateway


@dataclass(frozen=True)
class ElasticIp:
    """An AWS Elastic IP that follows a gateway group's active member (issue 11): its allocation id
    (``eipalloc-…``) and, for each member, where it goes when that member is active: a network
    interface (``eni-…``) or an instance (``i-…``, one with exactly one interface)."""

    allocation_id: str
    targets: tuple[tuple[HostId, str], ...]  # (member, eni-… | i-…), in the group's priority order

    def target(self, member: str) -> str | None:
        return dict(self.targets).get(HostId(member))


@dataclass(frozen=True)
class GatewayGroup:
    """An HA gateway group (issue 11): remote-access gateways of one network that share one
    WireGuard identity (``public_key``) and one floating address, of which one is active.

    - ``members``: host ids in priority order (first = preferred), 1 to :data:`MAX_GROUP_MEMBERS`.
    - ``floating_endpoint``: ``ADDR:PORT`` (an IPv4 or IPv6 literal), where its clients connect.
    - ``public_key``: the group's WireGuard public key (None until a member made the key);
      ``key_version``: its version (0: none yet). The private key is never here (it is sealed
      member to member: :mod:`.groupkey`).
    - ``active``/``epoch``: the control plane's election record (:class:`.election.Record`): the
      member that reported itself active at the highest epoch (or won a claim at the control plane).
    The control plane's voter promise (:class:`.election.Promise`) is stored beside it, and like
    ``key_rotation``, ``created_at`` and ``revision`` never on the wire.
    """

    id: GroupId
    network_id: NetworkId
    name: str
    members: tuple[HostId, ...]
    floating_endpoint: str
    public_key: str | None = None
    key_version: int = 0
    active: HostId | None = None
    epoch: int = 0
    created_at: int = 0
    revision: int = 0
    key_rotation: int = 0  # the key version a rotate-key asked for (0: none); not on the wire
    aws: ElasticIp | None = None  # issue 11: the Elastic IP that follows the active member; not on the wire

    @property
    def floating_port(self) -> int:
        return int(self.floating_endpoint.rpartition(":")[2])

    @property
    def floating_ip(self) -> str:
        return self.floating_endpoint.rpartition(":")[0].strip("[]")

    def with_changes(self, **changes: object) -> GatewayGroup:
        return replace(self, **changes)  # type: ignore[arg-type]


def is_group_gateway(gateway: str) -> bool:
    """Whether a client's ``gateway`` names a gateway group (``grp_…``) rather than a host."""
    return gateway.startswith("grp_")


@dataclass(frozen=True)
class Client:
    """A device without an agent (a phone, a laptop, a router) that joins a network through
    one remote-access gateway, or one gateway group (issue 11: ``gateway`` is then the group's
    id, ``grp_…``), with a wg-quick file.

    Its addresses come from the network's ranges (the hosts' allocator and guarantees); the
    private key of its file is never stored. What the hosts' plan needs of it is
    :meth:`record`; the rest (DNS, PostUp/PostDown, full tunnel, keepalive) is for its file only.
    """

    id: ClientId
    network_id: NetworkId
    name: str
    public_key: str
    ipv4: str
    ipv6: str
    gateway: HostId  # a member's host id, or a gateway group's id (``grp_…``)
    enabled: bool = True
    extra_addresses: tuple[str, ...] = ()  # routes behind the client (a router's LAN)
    dns: tuple[str, ...] = ()
    post_up: str | None = None
    post_down: str | None = None
    full_tunnel: bool = False
    keepalive: int = 25
    server_keyed: bool = False  # the key pair was made by the server (its private half returned once)
    created_at: int = 0
    revision: int = 0

    @property
    def allowed_ips(self) -> tuple[str, ...]:
        return (f"{self.ipv4}/32", f"{self.ipv6}/128", *self.extra_addresses)

    def with_changes(self, **changes: object) -> Client:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class PeerStatus:
    """What a host reports of one peer it has talked to (the agent reads it off a ``DevicePeer``)."""

    public_key: str
    latest_handshake_age: int | None  # seconds; None = never
    rx_bytes: int = 0
    tx_bytes: int = 0
    endpoint: str | None = None  # where the peer's packets come from now (a client's NAT address)


@dataclass(frozen=True)
class LatencyRow:
    """What a host's prober measured of one target (a gateway, a relay, a peer without a direct
    path) through the tunnel, as of its report (issue 10: probes).

    ``rtt_ms`` is smoothed and rounded to 0.1 ms (None: no reply yet); ``loss_pct`` is over
    the prober's recent window; ``up`` is the prober's verdict with hysteresis.
    """

    target: HostId
    rtt_ms: float | None
    loss_pct: int
    up: bool


@dataclass(frozen=True)
class GroupReport:
    """A member's view of one gateway group it belongs to (issue 11): its ``role`` in it, the
    ``epoch`` it holds, and the group's members its probes see ``down`` (sorted). A status report
    carries these (:mod:`.protocol`); the host's record keeps the latest ones (``HostStatus.groups``)
    for the failover functions' :func:`.election.correct`."""

    group_id: GroupId
    role: str  # "active" | "standby"
    epoch: int
    down: tuple[HostId, ...] = ()


@dataclass(frozen=True)
class HostStatus:
    online: bool = False
    last_seen: int | None = None  # the time of the latest report: also the age of ``latency``
    agent_version: str | None = None
    reported_endpoints: tuple[str, ...] = ()
    peers: tuple[PeerStatus, ...] = ()
    latency: tuple[LatencyRow, ...] = ()  # issue 10: the latest report's probe results
    direct: tuple[HostId, ...] = ()  # issue 10: peers of its relayed pairs whose underlay path answered
    groups: tuple[GroupReport, ...] = ()  # issue 11: the latest report's gateway-group rows (at most 16)


@dataclass(frozen=True)
class Host:
    id: HostId
    name: str
    public_key: str
    listen_port: int
    endpoints: tuple[str, ...]
    # network id -> (ipv4, ipv6)
    addresses: dict[NetworkId, tuple[str, str]] = field(default_factory=dict)
    # network id -> what the host does there beyond being a peer (absent: nothing)
    roles: dict[NetworkId, MemberRole] = field(default_factory=dict)
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

    def with_role(self, network_id: NetworkId, role: MemberRole) -> Host:
        """This host with ``role`` in ``network_id`` (an empty role is no entry: ``roles`` holds
        only what the host does), every other field as it is, one revision later."""
        roles = {n: r for n, r in self.roles.items() if n != network_id}
        if role:
            roles[network_id] = role
        return replace(self, roles=roles, revision=self.revision + 1)

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
            role=self.roles.get(network_id, _NO_ROLE),
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
    relay: HostId | None = None  # every host enrolled with it is relayed by this member

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
