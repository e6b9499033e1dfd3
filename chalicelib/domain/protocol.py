"""The wire protocol between the control plane and host agents: topics and messages.

One module, shared by the control plane and the agent. Topics are short because
AWS IoT allows at most 7 slashes and 256 bytes:

- ``sm/n/<network_id>``        broadcast of one network's changes (hosts read)
- ``sm/h/<host_id>/in``        commands to one host (that host reads)
- ``sm/h/<host_id>/status``    a host's status reports (that host publishes)

Every message is a JSON object with ``v`` (schema version) and ``type``. A
network's messages carry its sequence number: a ``delta`` at ``seq`` n applies
on top of state at n-1; anything else means the receiver missed a message and
fetches a full snapshot (``type: snapshot``, ``full: true``).

Schema versions: 1 carried members only; 2 adds members' roles (gateways, internet
use) and remote-access clients; 3 adds relays to roles (``relayed_by``: the member that
relays this one; a gateway's ``auto_relay``); 4 the automatic relays of pairs of members
(``pair_relays``), which only an agent of schema 4 routes by; 5 HA gateway groups (issue 11:
``groups``/``remove_groups`` in deltas, ``groups`` in snapshots; a client's ``gateway`` may name a
group), which an agent of schema 4 would not route (it is told to upgrade). A network message of another
version is refused as a whole (:class:`ProtocolError`): an agent never applies part of a
message it does not understand, it resyncs (and ``/config`` tells an agent of an older schema
to upgrade). Status reports of versions 1 to 4 are still read: their fields are a subset of
version 5's.
A status report may carry ``latency`` (issue 10: what the host's prober measured of its
gateways, relays and peers without a direct path); reports without it (every report of
versions 1 and 2) are read as before, and an agent leaves the field out when it has nothing
to say, so its report is then exactly what an older control plane reads. It may also carry
``direct`` (issue 10, automatic relays): the peers of its relayed pairs whose path over the
underlay answered for a while, so the pair may go direct again; left out when empty. And
``groups`` (issue 11, schema 5): for each gateway group the host is a member of, its role
(``active``/``standby``), the epoch it holds and the members its probes see down; left out when
the host is in no group.
And ``offline: true`` (issue 12): the host's last word, published by its agent before a clean stop
and set as its MQTT last will (the broker publishes it when the connection is lost), so the control
plane shows it offline within seconds, not after the silence rule. Only those two messages carry
it, so every other report is still exactly what an older control plane reads (which drops these).

A role's ``internet_gateway`` may be ``"auto"`` (issue 10: any internet gateway of the network,
ranked for the host like a shared range, whose key in ``pinned``/``placed`` is ``0.0.0.0/0``): new
in the schema after 3, in the same shape (a string). An agent of schema 3 reads it as a host that
is no member: no full tunnel (never a wrong peer).

>>> msg = Delta(network_id="net_a", seq=3, upsert=(), remove=("host_b",))
>>> decode(encode(msg)) == msg
True
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from . import validate
from .errors import InvalidInputError
from .ids import ClientId, GroupId, HostId, NetworkId, is_id
from .models import (
    MAX_GROUP_MEMBERS,
    Client,
    Gateway,
    GatewayGroup,
    GroupReport,
    LatencyRow,
    Member,
    MemberRole,
    Network,
    PeerStatus,
)

__all__ = [
    "VERSION",
    "ProtocolError",
    "UnsupportedVersionError",
    "network_topic",
    "host_inbox_topic",
    "host_status_topic",
    "HOST_STATUS_FILTER",
    "host_id_from_status_topic",
    "Delta",
    "Snapshot",
    "StatusReport",
    "Command",
    "encode",
    "decode",
    "decode_status",
    "short",
    "MAX_MESSAGE_BYTES",
    "MAX_REPORT_BYTES",
    "MAX_REPORT_PEERS",
    "MAX_STORED_REPORT_BYTES",
    "MAX_REPORT_LATENCY",
    "MAX_RTT_MS",
    "latency_to_wire",
    "member_to_wire",
    "member_from_wire",
    "client_to_wire",
    "client_from_wire",
    "group_to_wire",
    "group_from_wire",
    "GroupReport",
    "MAX_REPORT_GROUPS",
    "OLDEST_STATUS_VERSION",
    "network_to_wire",
    "network_from_wire",
]

VERSION = 5
OLDEST_STATUS_VERSION = 1  # agents that speak an older schema still report their status
ROOT = "sm"
HOST_STATUS_FILTER = f"{ROOT}/h/+/status"

MAX_MESSAGE_BYTES = 128 * 1024
# Networks an agent names in one catch-up (``GET /config?known=``); beyond these it gets full
# snapshots. A host in more networks than this is far outside what a mesh of ours looks like.
MAX_KNOWN_NETWORKS = 64
"""AWS IoT Core's limit for one MQTT message; the broker refuses anything larger."""

# Bounds of a status report. Any host can publish one, so each field has a limit and
# the stored record cannot outgrow them: at most MAX_REPORT_PEERS entries of a 44-byte
# key, three integers and an IP endpoint of at most 47 characters (about 165 bytes each as
# a DynamoDB item) plus 8 endpoints, MAX_REPORT_LATENCY probe results (issue 10: 2.2 KB,
# stored as one string) and as many ``direct`` host ids (1.5 KB, one string), i.e. under 46 KB
# (measured: 46,528 B; 44,985 B without direct, 42,801 B without latency), whatever a host sends.
# The agent reports only the peers it has talked to; a host talks to most of its peers
# only as a gateway or relay, and then 256 most recent handshakes are enough to see that it
# works (the agent keeps those).
# A list page of 50 such hosts stays far below API Gateway's and Lambda's 6 MB.
MAX_REPORT_PEERS = 256
MAX_STORED_REPORT_BYTES = 46 * 1024
"""The most a stored report adds to its host's record (measured by DynamoDB's item-size rules)."""
MAX_REPORT_BYTES = 64 * 1024  # the largest valid report (peers' endpoints included) encodes to ~48 KB
MAX_AGENT_VERSION = 64
MAX_HANDSHAKE_AGE = 2**32 - 1  # seconds (136 years): an age, never a timestamp
MAX_COUNTER = 2**64 - 1  # WireGuard's byte counters are unsigned 64-bit
_MAX_DEPTH = 8  # a status report is 3 deep (object → peers → peer); deltas 4
_MAX_ENDPOINT_CHARS = 261  # "[" 45-character IPv6 "]:65535", or a 253-character name ":65535"
_MAX_PEER_ENDPOINT_CHARS = 47  # "[" 39-character IPv6 (no zone) "]:65535"
_AGENT_VERSION = re.compile(rf"[A-Za-z0-9][A-Za-z0-9.+_-]{{0,{MAX_AGENT_VERSION - 1}}}")
_REPORT_KEYS = frozenset({"v", "type", "agent_version", "endpoints", "peers", "latency", "direct", "offline",
                          "groups"})
_PEER_KEYS = frozenset({"key", "handshake_age", "rx", "tx", "endpoint"})

# issue 10: the latency section of a status report. It lists what the host probes (its
# gateways, relays, peers without a direct path), never the whole mesh, so it is bounded by a
# count of its own: a report grows with the number of gateways, not with the network.
MAX_REPORT_LATENCY = 32
MAX_RTT_MS = 60_000.0  # a reply later than a minute is no reply
_LATENCY_KEYS = frozenset({"host", "rtt", "loss", "up"})
# issue 11: a report's ``groups``: one entry per gateway group the host is a member of (a host is
# rarely in more than one or two); each names at most MAX_GROUP_MEMBERS members down.
MAX_REPORT_GROUPS = 16
MAX_EPOCH = 2**63 - 1
_GROUP_REPORT_KEYS = frozenset({"id", "role", "epoch", "down"})


class ProtocolError(ValueError):
    """A message that is not valid JSON of a known schema version and type."""


class UnsupportedVersionError(ProtocolError):
    """A message of a schema version this side does not speak (``newer``: the other side is
    ahead, so this side should be upgraded)."""

    def __init__(self, version: object) -> None:
        self.newer = isinstance(version, int) and not isinstance(version, bool) and version > VERSION
        super().__init__(f"unsupported schema version {short(version)}; this side speaks {VERSION}"
                         + (": upgrade it" if self.newer else ""))


def network_topic(network_id: str) -> str:
    return f"{ROOT}/n/{network_id}"


def host_inbox_topic(host_id: str) -> str:
    return f"{ROOT}/h/{host_id}/in"


def host_status_topic(host_id: str) -> str:
    return f"{ROOT}/h/{host_id}/status"


def host_id_from_status_topic(topic: str) -> str | None:
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == ROOT and parts[1] == "h" and parts[3] == "status":
        return parts[2]
    return None


def role_to_wire(r: MemberRole) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.gateway is not None:
        g = r.gateway
        out["gateway"] = {"remote_access": g.remote_access, "egress": list(g.egress), "internet": g.internet,
                          "endpoint": g.endpoint, "auto_relay": g.auto_relay}
    if r.internet_gateway is not None:
        out["internet_gateway"] = r.internet_gateway
    if r.full_tunnel:
        out["full_tunnel"] = True
    if r.relayed_by is not None:
        out["relayed_by"] = r.relayed_by
    if r.pinned:
        out["pinned"] = dict(r.pinned)
    if r.placed:
        out["placed"] = dict(r.placed)
    if r.pair_relays:
        out["pair_relays"] = dict(r.pair_relays)
    return out


def _choices(d: Any) -> tuple[tuple[str, HostId], ...]:
    """A host's choices of gateway per shared range (range → gateway host id), sorted."""
    if not isinstance(d, dict):
        raise TypeError("gateway choices must be an object of range → host id")
    return tuple(sorted((str(p), HostId(str(g))) for p, g in d.items()))


def role_from_wire(d: Any) -> MemberRole:
    if not isinstance(d, dict):
        raise TypeError("a role must be an object")
    g = d.get("gateway")
    gateway = None
    if g is not None:
        if not isinstance(g, dict):
            raise TypeError("a gateway must be an object")
        endpoint = g.get("endpoint")
        gateway = Gateway(remote_access=_flag(g.get("remote_access", False)),
                          egress=tuple(str(e) for e in g.get("egress", ())),
                          internet=_flag(g.get("internet", False)),
                          endpoint=None if endpoint is None else str(endpoint),
                          auto_relay=_flag(g.get("auto_relay", True)))
    uses = d.get("internet_gateway")
    relay = d.get("relayed_by")
    return MemberRole(gateway=gateway, internet_gateway=None if uses is None else HostId(str(uses)),
                      full_tunnel=_flag(d.get("full_tunnel", False)),
                      relayed_by=None if relay is None else HostId(str(relay)),
                      pinned=_choices(d.get("pinned", {})), placed=_choices(d.get("placed", {})),
                      pair_relays=tuple((HostId(p), v) for p, v in _choices(d.get("pair_relays", {}))))


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, not {short(value)}")
    return value


def member_to_wire(m: Member) -> dict[str, Any]:
    """A member on the wire; its role only when it has one (most members: a few bytes less)."""
    d: dict[str, Any] = {
        "host": m.host_id,
        "name": m.name,
        "key": m.public_key,
        "ipv4": m.ipv4,
        "ipv6": m.ipv6,
        "port": m.listen_port,
        "endpoints": list(m.endpoints),
    }
    if m.role:
        d["role"] = role_to_wire(m.role)
    return d


def member_from_wire(network_id: str, d: dict[str, Any]) -> Member:
    try:
        return Member(
            network_id=NetworkId(network_id),
            host_id=HostId(str(d["host"])),
            name=str(d["name"]),
            public_key=str(d["key"]),
            ipv4=str(d["ipv4"]),
            ipv6=str(d["ipv6"]),
            listen_port=int(d["port"]),
            endpoints=tuple(str(e) for e in d.get("endpoints", ())),
            role=role_from_wire(d["role"]) if "role" in d else MemberRole(),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"bad member record: {e}") from None


def client_to_wire(c: Client) -> dict[str, Any]:
    """A client as hosts see it: only what the network plan reads (its file's DNS, scripts
    and keepalive stay with the control plane)."""
    d: dict[str, Any] = {"id": c.id, "name": c.name, "key": c.public_key, "ipv4": c.ipv4, "ipv6": c.ipv6,
                         "gateway": c.gateway, "enabled": c.enabled}
    if c.extra_addresses:
        d["extra"] = list(c.extra_addresses)
    return d


def client_from_wire(network_id: str, d: dict[str, Any]) -> Client:
    try:
        return Client(
            id=ClientId(str(d["id"])), network_id=NetworkId(network_id), name=str(d["name"]),
            public_key=str(d["key"]), ipv4=str(d["ipv4"]), ipv6=str(d["ipv6"]),
            gateway=HostId(str(d["gateway"])), enabled=_flag(d["enabled"]),
            extra_addresses=tuple(str(e) for e in d.get("extra", ())),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"bad client record: {e}") from None


def group_to_wire(g: GatewayGroup) -> dict[str, Any]:
    """A gateway group as hosts see it (issue 11); the control plane's voter promise stays home."""
    return {"id": g.id, "name": g.name, "members": list(g.members), "floating": g.floating_endpoint,
            "key": g.public_key, "key_version": g.key_version, "active": g.active, "epoch": g.epoch}


def group_from_wire(network_id: str, d: dict[str, Any]) -> GatewayGroup:
    try:
        key, active = d["key"], d["active"]
        return GatewayGroup(
            id=GroupId(str(d["id"])), network_id=NetworkId(network_id), name=str(d["name"]),
            members=tuple(HostId(str(h)) for h in d["members"]), floating_endpoint=str(d["floating"]),
            public_key=None if key is None else str(key), key_version=int(d["key_version"]),
            active=None if active is None else HostId(str(active)), epoch=int(d["epoch"]),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"bad group record: {e}") from None


def network_to_wire(n: Network) -> dict[str, Any]:
    return {
        "id": n.id,
        "name": n.name,
        "ipv4_cidr": n.ipv4_cidr,
        "ipv6_cidr": n.ipv6_cidr,
        "listen_port": n.listen_port,
        "keepalive": n.keepalive,
        "mtu": n.mtu,
        "seq": n.seq,
    }


def network_from_wire(d: dict[str, Any]) -> Network:
    try:
        return Network(
            id=NetworkId(str(d["id"])),
            name=str(d["name"]),
            ipv4_cidr=str(d["ipv4_cidr"]),
            ipv6_cidr=str(d["ipv6_cidr"]),
            listen_port=int(d["listen_port"]),
            keepalive=int(d["keepalive"]),
            mtu=int(d["mtu"]),
            seq=int(d["seq"]),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"bad network record: {e}") from None


@dataclass(frozen=True)
class Delta:
    """What changed in a network at ``seq``: members added or changed, hosts removed,
    clients added or changed, clients removed.

    ``network`` is set when the network's own settings changed (keepalive, MTU…).
    """

    network_id: str
    seq: int
    upsert: tuple[Member, ...] = ()
    remove: tuple[str, ...] = ()
    network: Network | None = None
    clients: tuple[Client, ...] = ()
    remove_clients: tuple[str, ...] = ()
    groups: tuple[GatewayGroup, ...] = ()  # schema 5: gateway groups added or changed
    remove_groups: tuple[str, ...] = ()

    type = "delta"


@dataclass(frozen=True)
class Snapshot:
    """A network's full state at ``network.seq``."""

    network: Network
    members: tuple[Member, ...]
    clients: tuple[Client, ...] = ()
    groups: tuple[GatewayGroup, ...] = ()  # schema 5

    type = "snapshot"

    @property
    def seq(self) -> int:
        return self.network.seq


@dataclass(frozen=True)
class CatchUp:
    """What a host at some seq of a network missed: the deltas up to ``seq``, in order.

    The answer ``GET /config?known=…`` gives for a network the agent named, when those
    deltas are still kept; no deltas: the agent is current.
    """

    network_id: str
    seq: int
    deltas: tuple[Delta, ...] = ()


@dataclass(frozen=True)
class StatusReport:
    """What a host says about itself; :func:`decode_status` holds any host's report to its bounds."""

    agent_version: str
    endpoints: tuple[str, ...] = ()
    peers: tuple[PeerStatus, ...] = ()
    latency: tuple[LatencyRow, ...] = ()  # issue 10: probe results, at most MAX_REPORT_LATENCY
    # issue 10: peers of relayed pairs whose underlay path answered (autorelay rule 4), sorted,
    # at most MAX_REPORT_LATENCY
    direct: tuple[HostId, ...] = ()
    offline: bool = False  # issue 12: its agent stopped, or its connection is lost (its last will)
    groups: tuple[GroupReport, ...] = ()  # issue 11 (schema 5): the gateway groups it is a member of

    type = "status"


@dataclass(frozen=True)
class Command:
    """A command for one host, e.g. ``resync`` (fetch full config now)."""

    name: str

    type = "command"


Message = Delta | Snapshot | StatusReport | Command


def _to_wire(msg: Message) -> dict[str, Any]:
    if isinstance(msg, Delta):
        d: dict[str, Any] = {
            "network": msg.network_id,
            "seq": msg.seq,
            "upsert": [member_to_wire(m) for m in msg.upsert],
            "remove": list(msg.remove),
        }
        if msg.network is not None:
            d["settings"] = network_to_wire(msg.network)
        if msg.clients:
            d["clients"] = [client_to_wire(c) for c in msg.clients]
        if msg.remove_clients:
            d["remove_clients"] = list(msg.remove_clients)
        if msg.groups:
            d["groups"] = [group_to_wire(g) for g in msg.groups]
        if msg.remove_groups:
            d["remove_groups"] = list(msg.remove_groups)
        return d
    if isinstance(msg, Snapshot):
        return {
            "full": True,
            "network": network_to_wire(msg.network),
            "members": [member_to_wire(m) for m in msg.members],
            "clients": [client_to_wire(c) for c in msg.clients],
            **({"groups": [group_to_wire(g) for g in msg.groups]} if msg.groups else {}),
        }
    if isinstance(msg, StatusReport):
        return {
            "agent_version": msg.agent_version,
            "endpoints": list(msg.endpoints),
            "peers": [
                {"key": p.public_key, "handshake_age": p.latest_handshake_age,
                 "rx": p.rx_bytes, "tx": p.tx_bytes, **({"endpoint": p.endpoint} if p.endpoint else {})}
                for p in msg.peers
            ],
            **({"latency": [latency_to_wire(r) for r in msg.latency]} if msg.latency else {}),
            **({"direct": list(msg.direct)} if msg.direct else {}),
            **({"offline": True} if msg.offline else {}),
            **({"groups": [group_report_to_wire(g) for g in msg.groups]} if msg.groups else {}),
        }
    return {"name": msg.name}


def to_wire(msg: Message) -> dict[str, Any]:
    """The JSON-ready dict of a message, with ``v`` and ``type``."""
    return {"v": VERSION, "type": msg.type, **_to_wire(msg)}


def encode(msg: Message) -> bytes:
    return json.dumps(to_wire(msg), separators=(",", ":")).encode()


def short(value: Any) -> str:
    """A value for an error message, cut short: a hostile field must not become a huge log line."""
    if isinstance(value, str):
        text = repr(value[:40])
    elif isinstance(value, int | float) or value is None:
        text = repr(value)  # json.loads refuses integers of more than 4300 digits already
    else:
        text = type(value).__name__  # the repr of a container could be huge or nested deep
    return text if len(text) <= 40 else text[:37] + "..."


def _check_bounds(doc: Any, max_bytes: int) -> None:
    """Raise :class:`ProtocolError` if parsed JSON nests deeper than ``_MAX_DEPTH`` or its
    strings and numbers add up to more than about ``max_bytes``.

    Iterative, so no nesting depth can exhaust the stack; it stops at the first excess,
    so its cost is bounded by ``max_bytes`` whatever it is given.
    """
    budget = max_bytes
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > _MAX_DEPTH:
                raise ProtocolError(f"nested deeper than {_MAX_DEPTH} levels")
            budget -= 2 + len(value)
            if budget < 0:  # before copying its children: a container's length is the cost
                raise ProtocolError(f"larger than {max_bytes} bytes")
            children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
            continue
        budget -= len(value) + 2 if isinstance(value, str) else 8  # 8: a number, boolean or null
        if budget < 0:
            raise ProtocolError(f"larger than {max_bytes} bytes")


def _load(payload: bytes | str) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ProtocolError(f"not JSON: {short(str(e))}") from None


def _bounded_int(value: Any, lo: int, hi: int, field: str) -> int:
    # bool is an int in Python, and JSON's true is not a count of bytes
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ProtocolError(f"{field} must be an integer from {lo} to {hi}, not {short(value)}")
    return value


def _entry(value: Any, what: str, known: frozenset[str]) -> dict[str, Any]:
    """``value`` as an entry of a report's list: an object of ``known`` fields only."""
    if not isinstance(value, dict):
        raise ProtocolError(f"a {what} must be an object, not {short(value)}")
    unknown = set(value) - known
    if unknown:
        raise ProtocolError(f"unknown {what} field {short(sorted(map(str, unknown))[0])}")
    return value


def _peer_from_wire(p: Any) -> PeerStatus:
    p = _entry(p, "peer", _PEER_KEYS)
    key = p.get("key")
    try:
        if not isinstance(key, str) or len(key) != 44:
            raise InvalidInputError("not 44 characters")
        validate.wireguard_key(key)
    except InvalidInputError:
        raise ProtocolError(f"peer key {short(key)} is not a WireGuard public key") from None
    age = p.get("handshake_age")
    endpoint = p.get("endpoint")
    if endpoint is not None:
        # WireGuard reports where a peer's packets come from: an address, never a name (and
        # so the stored report stays small: at most 47 characters per peer)
        try:
            if not isinstance(endpoint, str) or len(endpoint) > _MAX_PEER_ENDPOINT_CHARS:
                raise InvalidInputError("too long")
            endpoint = validate.endpoint(endpoint, "endpoint")
            ipaddress.ip_address(endpoint.rpartition(":")[0].strip("[]"))
        except (InvalidInputError, ValueError):
            raise ProtocolError(f"peer endpoint {short(endpoint)} is not an IP address and port") from None
    return PeerStatus(
        endpoint=endpoint,
        public_key=key,
        latest_handshake_age=None if age is None else _bounded_int(age, 0, MAX_HANDSHAKE_AGE,
                                                                   "handshake_age"),
        rx_bytes=_bounded_int(p.get("rx", 0), 0, MAX_COUNTER, "rx"),
        tx_bytes=_bounded_int(p.get("tx", 0), 0, MAX_COUNTER, "tx"),
    )


def latency_to_wire(r: LatencyRow) -> dict[str, Any]:
    """One probed target as a report carries it (short keys: it goes out at every heartbeat)."""
    return {"host": r.target, "rtt": r.rtt_ms, "loss": r.loss_pct, "up": r.up}


def _latency_from_wire(r: Any) -> LatencyRow:
    r = _entry(r, "latency entry", _LATENCY_KEYS)
    target = r.get("host")
    if not isinstance(target, str) or not is_id("host", target):
        raise ProtocolError(f"latency host {short(target)} is not a host id")
    rtt = r.get("rtt")
    if rtt is not None and (isinstance(rtt, bool) or not isinstance(rtt, int | float)
                            or not 0 <= rtt <= MAX_RTT_MS):
        raise ProtocolError(f"rtt must be a number of milliseconds from 0 to {MAX_RTT_MS:.0f} or null, "
                            f"not {short(rtt)}")
    return LatencyRow(target=HostId(target), rtt_ms=None if rtt is None else round(float(rtt), 1),
                      loss_pct=_bounded_int(r.get("loss", 0), 0, 100, "loss"), up=_flag_of(r.get("up"), "up"))


def _flag_of(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{field} must be true or false, not {short(value)}")
    return value


def _latency_rows(rows: Any) -> tuple[LatencyRow, ...]:
    if not isinstance(rows, list) or len(rows) > MAX_REPORT_LATENCY:
        raise ProtocolError(f"latency must be a list of at most {MAX_REPORT_LATENCY}")
    out = tuple(_latency_from_wire(r) for r in rows)
    if len({r.target for r in out}) != len(out):
        raise ProtocolError("latency names a host twice")
    return out


def _host_ids(ids: Any, field: str, most: int) -> list[HostId]:
    """A report's list of at most ``most`` host ids (``field`` names it in the error)."""
    if not isinstance(ids, list) or len(ids) > most:
        raise ProtocolError(f"{field} must be a list of at most {most} host ids")
    for h in ids:
        if not isinstance(h, str) or not is_id("host", h):
            raise ProtocolError(f"{field} host {short(h)} is not a host id")
    return [HostId(h) for h in ids]


def _direct(ids: Any) -> tuple[HostId, ...]:
    hosts = _host_ids(ids, "direct", MAX_REPORT_LATENCY)
    if len(set(hosts)) != len(hosts):
        raise ProtocolError("direct names a host twice")
    return tuple(sorted(hosts))


def group_report_to_wire(g: GroupReport) -> dict[str, Any]:
    return {"id": g.group_id, "role": g.role, "epoch": g.epoch, "down": list(g.down)}


def _group_report_from_wire(r: Any) -> GroupReport:
    r = _entry(r, "group entry", _GROUP_REPORT_KEYS)
    gid = r.get("id")
    if not isinstance(gid, str) or not is_id("group", gid):
        raise ProtocolError(f"group {short(gid)} is not a gateway group id")
    role = r.get("role")
    if role not in ("active", "standby"):
        raise ProtocolError(f"group role must be active or standby, not {short(role)}")
    down = _host_ids(r.get("down", []), "group down", MAX_GROUP_MEMBERS)
    return GroupReport(GroupId(gid), role, _bounded_int(r.get("epoch"), 0, MAX_EPOCH, "group epoch"),
                       tuple(sorted(set(down))))


def _group_reports(rows: Any) -> tuple[GroupReport, ...]:
    if not isinstance(rows, list) or len(rows) > MAX_REPORT_GROUPS:
        raise ProtocolError(f"groups must be a list of at most {MAX_REPORT_GROUPS}")
    out = tuple(_group_report_from_wire(r) for r in rows)
    if len({g.group_id for g in out}) != len(out):
        raise ProtocolError("groups names a group twice")
    return out


def _status_from_wire(d: dict[str, Any]) -> StatusReport:
    """The one schema of a status report; every field bounded, unknown fields refused
    (a new field is a new schema version ``v``)."""
    unknown = set(d) - _REPORT_KEYS
    if unknown:
        raise ProtocolError(f"unknown field {short(sorted(map(str, unknown))[0])}")
    version = d.get("agent_version")
    if not isinstance(version, str) or not _AGENT_VERSION.fullmatch(version):
        raise ProtocolError(f"agent_version {short(version)} must be 1-{MAX_AGENT_VERSION} "
                            "letters, digits, '.', '+', '_' or '-'")
    endpoints = d.get("endpoints", [])
    if not isinstance(endpoints, list) or len(endpoints) > validate.MAX_ENDPOINTS:
        raise ProtocolError(f"endpoints must be a list of at most {validate.MAX_ENDPOINTS}")
    if not all(isinstance(e, str) and len(e) <= _MAX_ENDPOINT_CHARS for e in endpoints):
        raise ProtocolError(f"each endpoint must be host:port of at most {_MAX_ENDPOINT_CHARS} characters")
    try:
        checked = validate.endpoints(endpoints)
    except InvalidInputError as e:
        raise ProtocolError(str(e)) from None
    peers = d.get("peers", [])
    if not isinstance(peers, list) or len(peers) > MAX_REPORT_PEERS:
        raise ProtocolError(f"peers must be a list of at most {MAX_REPORT_PEERS}")
    return StatusReport(agent_version=version, endpoints=checked,
                        peers=tuple(_peer_from_wire(p) for p in peers),
                        latency=_latency_rows(d.get("latency", [])),
                        direct=_direct(d.get("direct", [])),
                        offline=_flag_of(d.get("offline", False), "offline"),
                        groups=_group_reports(d.get("groups", [])))


def decode_status(payload: bytes | str | dict[str, Any]) -> StatusReport:
    """Parse a host's status report, which any host can send: refuse with
    :class:`ProtocolError` anything above :data:`MAX_REPORT_BYTES`, nested deeper than a
    report is, of another type, or outside the bounds of :class:`StatusReport`'s fields.

    Raises nothing else, whatever the payload (bytes from MQTT, or the JSON the IoT
    rule already parsed).
    """
    if isinstance(payload, dict):
        doc: Any = payload
    else:
        if len(payload) > MAX_REPORT_BYTES:
            raise ProtocolError(f"larger than {MAX_REPORT_BYTES} bytes")
        doc = _load(payload)
    if not isinstance(doc, dict):
        raise ProtocolError("a message must be a JSON object")
    _check_bounds(doc, MAX_REPORT_BYTES)
    msg = decode(doc)
    if not isinstance(msg, StatusReport):
        raise ProtocolError(f"a status report, not a {msg.type} message")
    return msg


def decode(payload: bytes | str | dict[str, Any]) -> Message:
    """Parse a message; raises :class:`ProtocolError` for anything unknown or malformed."""
    if isinstance(payload, dict):
        d = payload
    else:
        d = _load(payload)
    if not isinstance(d, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = d.get("type")
    v = d.get("v")
    oldest = OLDEST_STATUS_VERSION if kind == "status" else VERSION
    if isinstance(v, bool) or not isinstance(v, int) or not oldest <= v <= VERSION:
        raise UnsupportedVersionError(v)
    try:
        if kind == "delta":
            net_id = str(d["network"])
            return Delta(
                network_id=net_id,
                seq=int(d["seq"]),
                upsert=tuple(member_from_wire(net_id, m) for m in d.get("upsert", ())),
                remove=tuple(str(h) for h in d.get("remove", ())),
                network=network_from_wire(d["settings"]) if "settings" in d else None,
                clients=tuple(client_from_wire(net_id, c) for c in d.get("clients", ())),
                remove_clients=tuple(str(c) for c in d.get("remove_clients", ())),
                groups=tuple(group_from_wire(net_id, g) for g in d.get("groups", ())),
                remove_groups=tuple(str(g) for g in d.get("remove_groups", ())),
            )
        if kind == "snapshot":
            net = network_from_wire(d["network"])
            return Snapshot(
                network=net,
                members=tuple(member_from_wire(net.id, m) for m in d["members"]),
                clients=tuple(client_from_wire(net.id, c) for c in d.get("clients", ())),
                groups=tuple(group_from_wire(net.id, g) for g in d.get("groups", ())),
            )
        if kind == "status":
            return _status_from_wire(d)
        if kind == "command":
            return Command(name=str(d["name"]))
    except ProtocolError as e:
        raise ProtocolError(f"bad {kind} message: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as e:
        raise ProtocolError(f"bad {short(kind)} message: {short(str(e))}") from None
    raise ProtocolError(f"unknown message type {short(kind)}")
