"""Items ↔ domain records: the only code that knows both an item's attributes and a record's fields.

Readers turn an item of :mod:`.items` into a frozen domain record; writers build the
item of a record at its key (:mod:`.layout`). Numbers come back from DynamoDB as
``Decimal`` and lists as lists, so every reader converts to the record's own types.
"""

from __future__ import annotations

import json
from typing import Any

from ...domain import protocol
from ...domain.changes import PendingChange
from ...domain.election import Promise
from ...domain.groupkey import GroupKeyRecord
from ...domain.ids import ClientId, EnrollmentKeyId, GroupId, HostId, NetworkId
from ...domain.models import (
    AdminKey,
    Client,
    ElasticIp,
    EnrollmentKey,
    Gateway,
    GatewayGroup,
    GroupReport,
    Host,
    HostStatus,
    LatencyRow,
    Member,
    MemberRole,
    Network,
    PeerStatus,
)
from ...service.ports import NetworkRegistry, PendingIdentity, RegistryEntry
from . import layout
from .items import Items

__all__ = [
    "network", "registry", "member", "host", "enrollment_key", "admin_key", "pending_identity",
    "pending_change", "network_item", "member_item", "host_item", "key_item", "admin_item",
    "identity_item", "pending_item", "registry_entry", "status_peers", "role", "role_map", "roles_map",
    "client", "client_item", "status_groups", "status_latency", "status_direct", "host_status",
    "group", "group_item", "group_key_item", "group_key_json", "promise", "promise_json",
]


# ------------------------------------------------------------------- items → records
def network(item: Any) -> Network:
    return Network(
        id=NetworkId(item.id),
        name=item.name,
        ipv4_cidr=item.ipv4_cidr,
        ipv6_cidr=item.ipv6_cidr,
        listen_port=int(item.listen_port),
        keepalive=int(item.keepalive),
        mtu=int(item.mtu),
        seq=int(item.seq),
        created_at=int(item.created_at),
    )


def registry(item: Any | None) -> NetworkRegistry:
    """The registry item as a record; a table without one has an empty registry at version 0."""
    if item is None:
        return NetworkRegistry(version=0, entries=())
    nets = item.nets.as_dict()
    entries = tuple(
        RegistryEntry(NetworkId(nid), v["name"], v["ipv4"], v["ipv6"]) for nid, v in sorted(nets.items())
    )
    return NetworkRegistry(version=int(item.version), entries=entries)


def member(network_id: str, item: Any) -> Member:
    return Member(
        network_id=NetworkId(network_id),
        host_id=HostId(item.host_id),
        name=item.name,
        public_key=item.public_key,
        ipv4=item.ipv4,
        ipv6=item.ipv6,
        listen_port=int(item.listen_port),
        endpoints=tuple(item.endpoints or ()),
        role=role(_raw(item.role)),
    )


def _raw(value: Any) -> dict[str, Any]:
    """A raw map attribute as a dict (an item written before the attribute existed: empty)."""
    return {} if value is None else value.as_dict() if hasattr(value, "as_dict") else dict(value)


def role(raw: dict[str, Any]) -> MemberRole:
    """A member's role from its raw map (:func:`role_map`); an empty map is no role."""
    g = raw.get("gateway")
    gateway = None if g is None else Gateway(
        remote_access=bool(g.get("remote_access", False)),
        egress=tuple(g.get("egress") or ()),
        internet=bool(g.get("internet", False)),
        endpoint=g.get("endpoint"),
        auto_relay=bool(g.get("auto_relay", True)),
    )
    internet_gateway = raw.get("internet_gateway")
    relayed_by = raw.get("relayed_by")
    return MemberRole(gateway=gateway,
                      internet_gateway=None if internet_gateway is None else HostId(internet_gateway),
                      full_tunnel=bool(raw.get("full_tunnel", False)),
                      relayed_by=None if relayed_by is None else HostId(relayed_by),
                      pinned=_choices(raw.get("pinned")), placed=_choices(raw.get("placed")),
                      pair_relays=tuple((HostId(p), v) for p, v in _choices(raw.get("pair_relays"))))


def _choices(raw: Any) -> tuple[tuple[str, HostId], ...]:
    return tuple(sorted((str(p), HostId(g)) for p, g in _raw(raw).items()))


def host(item: Any) -> Host:
    addresses = {NetworkId(k): (v[0], v[1]) for k, v in item.addresses.as_dict().items()}
    peers = tuple(
        PeerStatus(
            public_key=p["key"],
            latest_handshake_age=None if p.get("handshake_age") is None else int(p["handshake_age"]),
            rx_bytes=int(p.get("rx", 0)),
            tx_bytes=int(p.get("tx", 0)),
            endpoint=p.get("endpoint"),
        )
        for p in (item.peers or ())
    )
    return Host(
        id=HostId(item.id),
        name=item.name,
        public_key=item.public_key,
        listen_port=int(item.listen_port),
        endpoints=tuple(item.endpoints or ()),
        addresses=addresses,
        roles={NetworkId(k): role(v) for k, v in _raw(item.roles).items()},
        certificate_id=item.certificate_id,
        token_hash=item.token_hash,
        enrollment_key_id=(EnrollmentKeyId(item.enrollment_key_id) if item.enrollment_key_id else None),
        observed_endpoint=item.observed_endpoint,
        tags=tuple(item.tags or ()),
        created_at=int(item.created_at),
        revision=int(item.revision),
        status=host_status(item, peers),
    )


def host_status(item: Any, peers: tuple[PeerStatus, ...] = ()) -> HostStatus:
    """The status part of a host item (``peers`` read by the caller: the latency matrix leaves them out)."""
    return HostStatus(
        online=bool(item.online),
        last_seen=None if item.last_seen is None else int(item.last_seen),
        agent_version=item.agent_version,
        reported_endpoints=tuple(item.reported_endpoints or ()),
        peers=peers,
        latency=tuple(LatencyRow(HostId(host), None if rtt is None else float(rtt), int(loss), bool(up))
                      for host, rtt, loss, up in json.loads(item.latency or "[]")),
        direct=tuple(HostId(h) for h in json.loads(item.direct or "[]")),
        groups=tuple(GroupReport(GroupId(g), str(role), int(epoch), tuple(HostId(d) for d in down))
                     for g, role, epoch, down in json.loads(getattr(item, "groups", None) or "[]")),
    )


def enrollment_key(item: Any) -> EnrollmentKey:
    return EnrollmentKey(
        id=EnrollmentKeyId(item.id),
        networks=tuple(NetworkId(n) for n in item.networks),
        token_hash=item.token_hash,
        uses_total=None if item.uses_total is None else int(item.uses_total),
        uses_left=None if item.uses_left is None else int(item.uses_left),
        expires_at=None if item.expires_at is None else int(item.expires_at),
        unlimited=bool(item.unlimited),
        tags=tuple(item.tags or ()),
        revoked=bool(item.revoked),
        created_at=int(item.created_at),
        relay=None if item.relay is None else HostId(item.relay),
    )


def admin_key(item: Any) -> AdminKey:
    return AdminKey(item.id, item.token_hash, item.name, int(item.created_at))


def pending_identity(item: Any) -> PendingIdentity:
    return PendingIdentity(
        host_id=HostId(item.host_id),
        created_at=int(item.created_at),
        certificate_id=item.certificate_id or None,
        abandoned=bool(item.abandoned),
    )


def pending_change(network_id: str, item: Any) -> PendingChange:
    return PendingChange(
        id=layout.change_id(item.sk),
        network_id=NetworkId(network_id),
        host_ids=tuple(HostId(x) for x in item.host_ids),
        settings=bool(item.settings),
        client_ids=tuple(ClientId(x) for x in (item.client_ids or ())),
        group_ids=tuple(item.group_ids or ()),
    )


def client(network_id: str, item: Any) -> Client:
    return Client(
        id=ClientId(item.id),
        network_id=NetworkId(network_id),
        name=item.name,
        public_key=item.public_key,
        ipv4=item.ipv4,
        ipv6=item.ipv6,
        gateway=HostId(item.gateway),
        enabled=bool(item.enabled),
        extra_addresses=tuple(item.extra_addresses or ()),
        dns=tuple(item.dns or ()),
        post_up=item.post_up,
        post_down=item.post_down,
        full_tunnel=bool(item.full_tunnel),
        keepalive=int(item.keepalive),
        server_keyed=bool(item.server_keyed),
        created_at=int(item.created_at),
        revision=int(item.revision),
    )


# ------------------------------------------------------------------- records → items
def registry_entry(n: Network) -> dict[str, str]:
    """A network's entry in the registry's map (keyed by its id)."""
    return {"name": n.name, "ipv4": n.ipv4_cidr, "ipv6": n.ipv6_cidr}


def status_peers(status: HostStatus) -> list[dict[str, Any]]:
    """A status report's peers as the host item stores them (a raw list of maps; ``endpoint``
    only where the peer has one, so a report without endpoints stores no more than before)."""
    return [
        {"key": p.public_key, "handshake_age": p.latest_handshake_age, "rx": p.rx_bytes, "tx": p.tx_bytes,
         **({"endpoint": p.endpoint} if p.endpoint is not None else {})}
        for p in status.peers
    ]


def status_direct(status: HostStatus) -> str | None:
    """A status report's ``direct`` as the host item stores it: one compact JSON list (None: empty)."""
    return json.dumps(list(status.direct), separators=(",", ":")) if status.direct else None


def status_groups(status: HostStatus) -> str | None:
    """A status report's gateway-group rows as the host item stores them: one compact JSON list of
    ``[group, role, epoch, [down…]]`` (None: none)."""
    if not status.groups:
        return None
    rows = [[g.group_id, g.role, g.epoch, list(g.down)] for g in status.groups]
    return json.dumps(rows, separators=(",", ":"))


def status_latency(status: HostStatus) -> str | None:
    """A status report's latency rows as the host item stores them: one compact JSON string of
    ``[host, rtt, loss, up]`` rows (None: none reported)."""
    if not status.latency:
        return None
    return json.dumps([[r.target, r.rtt_ms, r.loss_pct, r.up] for r in status.latency], separators=(",", ":"))


def role_map(r: MemberRole) -> dict[str, Any]:
    """A member's role as a raw map: its wire form (what is unset is left out, so no role is an
    empty map), with a gateway's defaults left out too (no endpoint, auto relay on)."""
    out = protocol.role_to_wire(r)
    g = out.get("gateway")
    if g is not None:
        if g["endpoint"] is None:
            del g["endpoint"]
        if g["auto_relay"]:
            del g["auto_relay"]
    return out


def roles_map(roles: dict[NetworkId, MemberRole]) -> dict[str, Any]:
    """A host's roles (network id → role) as the host item stores them."""
    return {network_id: role_map(r) for network_id, r in roles.items()}


def network_item(items: Items, n: Network) -> Any:
    return items.network(
        layout.network_pk(n.id),
        layout.META,
        kind="network",
        id=n.id,
        name=n.name,
        ipv4_cidr=n.ipv4_cidr,
        ipv6_cidr=n.ipv6_cidr,
        listen_port=n.listen_port,
        keepalive=n.keepalive,
        mtu=n.mtu,
        seq=n.seq,
        created_at=n.created_at,
    )


def member_item(items: Items, m: Member) -> Any:
    return items.member(
        layout.network_pk(m.network_id),
        layout.member_sk(m.host_id),
        host_id=m.host_id,
        name=m.name,
        public_key=m.public_key,
        ipv4=m.ipv4,
        ipv6=m.ipv6,
        listen_port=m.listen_port,
        endpoints=list(m.endpoints),
        role=role_map(m.role) if m.role else None,
    )


def client_item(items: Items, c: Client) -> Any:
    return items.client(
        layout.network_pk(c.network_id),
        layout.client_sk(c.id),
        id=c.id,
        name=c.name,
        public_key=c.public_key,
        ipv4=c.ipv4,
        ipv6=c.ipv6,
        gateway=c.gateway,
        enabled=c.enabled,
        extra_addresses=list(c.extra_addresses),
        dns=list(c.dns),
        post_up=c.post_up,
        post_down=c.post_down,
        full_tunnel=c.full_tunnel,
        keepalive=c.keepalive,
        server_keyed=c.server_keyed,
        created_at=c.created_at,
        revision=c.revision,
    )


def host_item(items: Items, h: Host) -> Any:
    """The host's record without its status (a new host has reported nothing yet)."""
    return items.host(
        layout.host_pk(h.id),
        layout.META,
        kind="host",
        id=h.id,
        name=h.name,
        public_key=h.public_key,
        listen_port=h.listen_port,
        endpoints=list(h.endpoints),
        addresses={k: [v[0], v[1]] for k, v in h.addresses.items()},
        certificate_id=h.certificate_id,
        token_hash=h.token_hash,
        enrollment_key_id=h.enrollment_key_id,
        observed_endpoint=h.observed_endpoint,
        tags=list(h.tags),
        created_at=h.created_at,
        revision=h.revision,
        roles=roles_map(h.roles),
    )


def key_item(items: Items, key: EnrollmentKey) -> Any:
    return items.key(
        layout.key_pk(key.id),
        layout.META,
        kind="enrollment_key",
        id=key.id,
        networks=list(key.networks),
        token_hash=key.token_hash,
        uses_total=key.uses_total,
        uses_left=key.uses_left,
        expires_at=key.expires_at,
        unlimited=key.unlimited,
        tags=list(key.tags),
        revoked=key.revoked,
        created_at=key.created_at,
        relay=key.relay,
    )


def admin_item(items: Items, key: AdminKey) -> Any:
    return items.admin(
        layout.admin_pk(key.id),
        layout.META,
        kind="admin_key",
        id=key.id,
        token_hash=key.token_hash,
        name=key.name,
        created_at=key.created_at,
    )


def identity_item(items: Items, pending: PendingIdentity) -> Any:
    return items.identity(layout.identity_pk(pending.host_id), layout.PENDING, kind="pending_identity",
                          host_id=pending.host_id, created_at=pending.created_at,
                          certificate_id=pending.certificate_id)


def pending_item(items: Items, change: PendingChange) -> Any:
    """A pending change at its key under its network (see :func:`.layout.change_sk`)."""
    return items.pending(
        layout.network_pk(change.network_id),
        layout.change_sk(change.id),
        kind="pending",
        network_id=change.network_id,
        host_ids=list(change.host_ids),
        settings=change.settings,
        client_ids=list(change.client_ids),
        group_ids=list(change.group_ids) or None,
    )


# ------------------------------------------------------------------- issue 11: gateway groups
def group(network_id: str, item: Any) -> GatewayGroup:
    return GatewayGroup(
        id=GroupId(item.id), network_id=NetworkId(network_id), name=item.name,
        members=tuple(HostId(h) for h in item.members or ()), floating_endpoint=item.floating_endpoint,
        public_key=item.public_key, key_version=int(item.key_version),
        active=None if item.active is None else HostId(item.active), epoch=int(item.epoch),
        created_at=int(item.created_at), revision=int(item.revision),
        key_rotation=int(item.key_rotation or 0),
        aws=_elastic_ip(item.aws),
    )


def _elastic_ip(raw: str | None) -> ElasticIp | None:
    if not raw:
        return None
    data = json.loads(raw)
    return ElasticIp(str(data["allocation_id"]), tuple((HostId(h), str(t)) for h, t in data["targets"]))


def elastic_ip_json(aws: ElasticIp | None) -> str | None:
    """A group's Elastic IP as its item stores it (None: none)."""
    if aws is None:
        return None
    return json.dumps({"allocation_id": aws.allocation_id, "targets": [list(t) for t in aws.targets]},
                      separators=(",", ":"))


def group_item(items: Items, g: GatewayGroup) -> Any:
    return items.group(
        layout.network_pk(g.network_id), layout.group_sk(g.id), id=g.id, name=g.name, members=list(g.members),
        floating_endpoint=g.floating_endpoint, public_key=g.public_key, key_version=g.key_version,
        active=g.active, epoch=g.epoch, created_at=g.created_at, revision=g.revision,
        key_rotation=g.key_rotation, aws=elastic_ip_json(g.aws),
    )


def group_key_json(record: GroupKeyRecord) -> str:
    """A group's key record as its item stores it (and its write's condition compares it)."""
    return json.dumps(record.to_item(), separators=(",", ":"), sort_keys=True)


def group_key_item(items: Items, record: GroupKeyRecord) -> Any:
    return items.group_key(layout.network_pk(record.network_id), layout.group_key_sk(record.group_id),
                           version=record.version, record=group_key_json(record))


def promise_json(promise: Promise) -> str:
    """The control plane's voter promise as its item stores it (``until``: exact, as repr keeps it)."""
    return json.dumps({"member": promise.member, "epoch": promise.epoch, "until": promise.until},
                      separators=(",", ":"), sort_keys=True)


def promise(raw: str) -> Promise:
    d = json.loads(raw)
    return Promise(str(d["member"]), int(d["epoch"]), float(d["until"]))
