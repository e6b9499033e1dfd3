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

>>> msg = Delta(network_id="net_a", seq=3, upsert=(), remove=("host_b",))
>>> decode(encode(msg)) == msg
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .ids import HostId, NetworkId
from .models import Member, Network, PeerStatus

__all__ = [
    "VERSION",
    "ProtocolError",
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
    "member_to_wire",
    "member_from_wire",
    "network_to_wire",
    "network_from_wire",
]

VERSION = 1
ROOT = "sm"
HOST_STATUS_FILTER = f"{ROOT}/h/+/status"


class ProtocolError(ValueError):
    """A message that is not valid JSON of a known schema version and type."""


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


def member_to_wire(m: Member) -> dict[str, Any]:
    return {
        "host": m.host_id,
        "name": m.name,
        "key": m.public_key,
        "ipv4": m.ipv4,
        "ipv6": m.ipv6,
        "port": m.listen_port,
        "endpoints": list(m.endpoints),
    }


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
        )
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"bad member record: {e}") from None


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
    """What changed in a network at ``seq``: members added or changed, hosts removed.

    ``network`` is set when the network's own settings changed (keepalive, MTU…).
    """

    network_id: str
    seq: int
    upsert: tuple[Member, ...] = ()
    remove: tuple[str, ...] = ()
    network: Network | None = None

    type = "delta"


@dataclass(frozen=True)
class Snapshot:
    """A network's full state at ``network.seq``."""

    network: Network
    members: tuple[Member, ...]

    type = "snapshot"

    @property
    def seq(self) -> int:
        return self.network.seq


@dataclass(frozen=True)
class StatusReport:
    agent_version: str
    endpoints: tuple[str, ...] = ()
    peers: tuple[PeerStatus, ...] = ()

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
        return d
    if isinstance(msg, Snapshot):
        return {
            "full": True,
            "network": network_to_wire(msg.network),
            "members": [member_to_wire(m) for m in msg.members],
        }
    if isinstance(msg, StatusReport):
        return {
            "agent_version": msg.agent_version,
            "endpoints": list(msg.endpoints),
            "peers": [
                {"key": p.public_key, "handshake_age": p.latest_handshake_age,
                 "rx": p.rx_bytes, "tx": p.tx_bytes}
                for p in msg.peers
            ],
        }
    return {"name": msg.name}


def to_wire(msg: Message) -> dict[str, Any]:
    """The JSON-ready dict of a message, with ``v`` and ``type``."""
    return {"v": VERSION, "type": msg.type, **_to_wire(msg)}


def encode(msg: Message) -> bytes:
    return json.dumps(to_wire(msg), separators=(",", ":")).encode()


def decode(payload: bytes | str | dict[str, Any]) -> Message:
    """Parse a message; raises :class:`ProtocolError` for anything unknown or malformed."""
    if isinstance(payload, dict):
        d = payload
    else:
        try:
            d = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise ProtocolError(f"not JSON: {e}") from None
    if not isinstance(d, dict):
        raise ProtocolError("a message must be a JSON object")
    if d.get("v") != VERSION:
        raise ProtocolError(f"unsupported schema version {d.get('v')!r}; this side speaks {VERSION}")
    kind = d.get("type")
    try:
        if kind == "delta":
            net_id = str(d["network"])
            return Delta(
                network_id=net_id,
                seq=int(d["seq"]),
                upsert=tuple(member_from_wire(net_id, m) for m in d.get("upsert", ())),
                remove=tuple(str(h) for h in d.get("remove", ())),
                network=network_from_wire(d["settings"]) if "settings" in d else None,
            )
        if kind == "snapshot":
            net = network_from_wire(d["network"])
            return Snapshot(
                network=net,
                members=tuple(member_from_wire(net.id, m) for m in d["members"]),
            )
        if kind == "status":
            peers = tuple(
                PeerStatus(
                    public_key=str(p["key"]),
                    latest_handshake_age=(None if p.get("handshake_age") is None
                                          else int(p["handshake_age"])),
                    rx_bytes=int(p.get("rx", 0)),
                    tx_bytes=int(p.get("tx", 0)),
                )
                for p in d.get("peers", ())
            )
            return StatusReport(
                agent_version=str(d["agent_version"])[:64],
                endpoints=tuple(str(e)[:64] for e in d.get("endpoints", ()))[:16],
                peers=peers,
            )
        if kind == "command":
            return Command(name=str(d["name"]))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise ProtocolError(f"bad {kind} message: {e}") from None
    raise ProtocolError(f"unknown message type {kind!r}")
