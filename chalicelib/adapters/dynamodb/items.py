"""PynamoDB item classes for the single skymesh table, bound to a table at run time.

Layout (``pk`` / ``sk``):

==========================  ====================  =========================================
``REGISTRY``                ``NETWORKS``          every network's name and ranges + version
``NET#<id>``                ``META``              network settings, ``seq``, publish lease
``NET#<id>``                ``MEMBER#<host>``     one host's WireGuard view in the network
                                                  and its role (gateway, internet use)
``NET#<id>``                ``CLIENT#<id>``       a remote-access client (a device without
                                                  an agent) of the network
``NET#<id>``                ``GROUP#<id>``        an HA gateway group (issue 11): members,
                                                  floating endpoint, public key, active/epoch
``NET#<id>``                ``GKEY#<group id>``   the group's key record: public key, version
                                                  and sealed copies only (never a private key)
``NET#<id>``                ``GVOTE#<group id>``  the control plane's voter promise for the
                                                  group's election (member, epoch, until)
``NET#<id>``                ``IP#<address>``      claim of an overlay address (by a host
                                                  or a client: ``owner``)
``NET#<id>``                ``PEND#<change id>``  a committed change not yet broadcast
``NET#<id>``                ``DELTA#<seq>``       the delta broadcast at ``seq`` (the last few,
                                                  for agents catching up; TTL ``expires_at``)
``WGKEY#<public key>``      ``CLAIM``             a WireGuard key belongs to one host or
                                                  client (``owner``)
``HOST#<id>``               ``META``              host record and last status
``IDENTITY#<host id>``      ``PENDING``           a registration under way (certificate not
                                                  yet committed with a host)
``KEY#<id>``                ``META``              enrollment key (token stored hashed)
``ADMIN#<id>``              ``META``              admin key (token stored hashed)
==========================  ====================  =========================================

Items that are listed carry ``kind``; the sparse GSI ``kind-index`` (``kind``,
``pk``) lists them. Table name and endpoint come from the stage environment, so
the classes are made per (table, endpoint) by :func:`bind`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

KIND_INDEX = "kind-index"


class _Item(Model):
    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)


class _NetworkItem(_Item):
    kind = UnicodeAttribute(null=True)
    id = UnicodeAttribute()
    name = UnicodeAttribute()
    ipv4_cidr = UnicodeAttribute()
    ipv6_cidr = UnicodeAttribute()
    listen_port = NumberAttribute()
    keepalive = NumberAttribute()
    mtu = NumberAttribute()
    seq = NumberAttribute(default=0)
    created_at = NumberAttribute(default=0)
    deleting = BooleanAttribute(null=True)
    lease_owner = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(null=True)


class _RegistryItem(_Item):
    version = NumberAttribute(default=0)
    nets: MapAttribute[str, Any] = MapAttribute(default=dict)  # raw map: network id -> {name, v4, v6}


class _MemberItem(_Item):
    host_id = UnicodeAttribute()
    name = UnicodeAttribute()
    public_key = UnicodeAttribute()
    ipv4 = UnicodeAttribute()
    ipv6 = UnicodeAttribute()
    listen_port = NumberAttribute()
    endpoints = ListAttribute(of=UnicodeAttribute, default=list)
    role: MapAttribute[str, Any] = MapAttribute(null=True)  # raw: see mapping.role_map; absent: none


class _ClientItem(_Item):
    id = UnicodeAttribute()
    name = UnicodeAttribute()
    public_key = UnicodeAttribute()
    ipv4 = UnicodeAttribute()
    ipv6 = UnicodeAttribute()
    gateway = UnicodeAttribute()
    enabled = BooleanAttribute(default=True)
    extra_addresses = ListAttribute(of=UnicodeAttribute, default=list)
    dns = ListAttribute(of=UnicodeAttribute, default=list)
    post_up = UnicodeAttribute(null=True)
    post_down = UnicodeAttribute(null=True)
    full_tunnel = BooleanAttribute(default=False)
    keepalive = NumberAttribute()
    server_keyed = BooleanAttribute(default=False)
    created_at = NumberAttribute(default=0)
    revision = NumberAttribute(default=0)


class _GroupItem(_Item):
    id = UnicodeAttribute()
    name = UnicodeAttribute()
    members = ListAttribute(of=UnicodeAttribute, default=list)  # priority order
    floating_endpoint = UnicodeAttribute()
    public_key = UnicodeAttribute(null=True)
    key_version = NumberAttribute(default=0)
    active = UnicodeAttribute(null=True)
    epoch = NumberAttribute(default=0)
    created_at = NumberAttribute(default=0)
    revision = NumberAttribute(default=0)
    key_rotation = NumberAttribute(default=0)
    # the AWS Elastic IP that follows the active member: {"allocation_id", "targets": [[host, eni|i]]}
    aws = UnicodeAttribute(null=True)


class _GroupKeyItem(_Item):
    version = NumberAttribute()
    # GroupKeyRecord.to_item() as compact JSON: the write's condition compares it whole, so two
    # members adding copies at one version cannot both win (the second re-reads)
    record = UnicodeAttribute()


class _GroupVoteItem(_Item):
    promise = UnicodeAttribute()  # {"member", "epoch", "until"} as compact JSON; compared whole


class _ClaimItem(_Item):
    owner = UnicodeAttribute()


class _PendingItem(_Item):
    kind = UnicodeAttribute(null=True)
    network_id = UnicodeAttribute()
    host_ids = ListAttribute(of=UnicodeAttribute, default=list)
    settings = BooleanAttribute(default=False)
    client_ids = ListAttribute(of=UnicodeAttribute, default=list)
    group_ids = ListAttribute(of=UnicodeAttribute, null=True)  # issue 11; absent: none


class _DeltaItem(_Item):
    payload = UnicodeAttribute()  # the message as published (protocol.encode)
    expires_at = NumberAttribute()  # the table's TTL attribute


class _HostItem(_Item):
    kind = UnicodeAttribute(null=True)
    id = UnicodeAttribute()
    name = UnicodeAttribute()
    public_key = UnicodeAttribute()
    listen_port = NumberAttribute()
    endpoints = ListAttribute(of=UnicodeAttribute, default=list)
    addresses: MapAttribute[str, Any] = MapAttribute(default=dict)  # raw map: network id -> [ipv4, ipv6]
    roles: MapAttribute[str, Any] = MapAttribute(null=True)  # raw map: network id -> mapping.role_map
    certificate_id = UnicodeAttribute(default="")
    token_hash = UnicodeAttribute(default="")
    enrollment_key_id = UnicodeAttribute(null=True)
    observed_endpoint = UnicodeAttribute(null=True)
    tags = ListAttribute(of=UnicodeAttribute, default=list)
    created_at = NumberAttribute(default=0)
    revision = NumberAttribute(default=0)
    online = BooleanAttribute(default=False)
    last_seen = NumberAttribute(null=True)
    agent_version = UnicodeAttribute(null=True)
    reported_endpoints = ListAttribute(of=UnicodeAttribute, default=list)
    peers: ListAttribute[Any] = ListAttribute(default=list)  # raw: [{key, handshake_age, rx, tx, endpoint?}]
    # issue 10: the latest report's probe results as one JSON string, mapping.status_latency (a list
    # of maps costs 10x more to read: GET /latency reads every member's, and never looks inside)
    latency = UnicodeAttribute(null=True)
    # issue 10: the latest report's ``direct`` (automatic relays, rule 4) as one compact JSON list
    direct = UnicodeAttribute(null=True)
    # issue 11: the latest report's gateway-group rows as one compact JSON list (mapping.status_groups),
    # what the failover functions' election.correct reads of each member
    groups = UnicodeAttribute(null=True)


class _IdentityItem(_Item):
    kind = UnicodeAttribute(null=True)
    host_id = UnicodeAttribute()
    created_at = NumberAttribute()
    certificate_id = UnicodeAttribute(null=True)
    abandoned = BooleanAttribute(null=True)


class _KeyItem(_Item):
    kind = UnicodeAttribute(null=True)
    id = UnicodeAttribute()
    networks = ListAttribute(of=UnicodeAttribute, default=list)
    token_hash = UnicodeAttribute()
    uses_total = NumberAttribute(null=True)
    uses_left = NumberAttribute(null=True)
    expires_at = NumberAttribute(null=True)
    unlimited = BooleanAttribute(default=False)
    tags = ListAttribute(of=UnicodeAttribute, default=list)
    revoked = BooleanAttribute(default=False)
    created_at = NumberAttribute(default=0)
    relay = UnicodeAttribute(null=True)  # the member that relays every host enrolled with it


class _AdminItem(_Item):
    kind = UnicodeAttribute(null=True)
    id = UnicodeAttribute()
    token_hash = UnicodeAttribute()
    name = UnicodeAttribute(default="admin")
    created_at = NumberAttribute(default=0)


@dataclass(frozen=True)
class Items:
    """The item classes bound to one table."""

    network: Any
    registry: Any
    member: Any
    client: Any
    group: Any
    group_key: Any
    group_vote: Any
    claim: Any
    pending: Any
    delta: Any
    host: Any
    identity: Any
    key: Any
    admin: Any


def _index(table: str) -> type[GlobalSecondaryIndex]:
    meta = type("Meta", (), {"index_name": KIND_INDEX, "projection": AllProjection()})
    return type(
        "KindIndex",
        (GlobalSecondaryIndex,),
        {"Meta": meta, "kind": UnicodeAttribute(hash_key=True), "pk": UnicodeAttribute(range_key=True)},
    )


@lru_cache(maxsize=16)
def bind(table: str, host: str | None, region: str) -> Items:
    """Item classes for ``table`` at ``host`` (``None``: the AWS endpoint of ``region``)."""
    meta_attrs: dict[str, Any] = {
        "table_name": table,
        "region": region,
        "max_pool_connections": 64,
        "connect_timeout_seconds": 5,
        "read_timeout_seconds": 10,
        "max_retry_attempts": 3,
    }
    if host:
        meta_attrs["host"] = host

    def make(base: type[_Item], listed: bool) -> Any:
        body: dict[str, Any] = {"Meta": type("Meta", (), dict(meta_attrs)), "__module__": __name__}
        if listed:
            body["by_kind"] = _index(table)()
        return type(base.__name__.lstrip("_"), (base,), body)

    return Items(
        network=make(_NetworkItem, True),
        registry=make(_RegistryItem, False),
        member=make(_MemberItem, False),
        client=make(_ClientItem, False),
        group=make(_GroupItem, False),
        group_key=make(_GroupKeyItem, False),
        group_vote=make(_GroupVoteItem, False),
        claim=make(_ClaimItem, False),
        pending=make(_PendingItem, True),
        delta=make(_DeltaItem, False),
        host=make(_HostItem, True),
        identity=make(_IdentityItem, True),
        key=make(_KeyItem, True),
        admin=make(_AdminItem, True),
    )
