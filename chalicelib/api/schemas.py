"""Request and response bodies of REST API v1 (pydantic v2).

Requests are validated with these models and the OpenAPI document is generated
from the same models, so the two cannot drift apart.

Request models are strict: a JSON ``true`` is not the integer 1 and ``"51820"`` is
not a port. Types, lengths and the shape of ids are checked here. The value rules
(patterns, ranges) are checked by :mod:`chalicelib.domain.validate` and
:mod:`chalicelib.domain.ipam`, whose messages say how to fix a value; here they are
only written into the JSON Schema, from the same constants, by :func:`_rule`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from ..domain import ipam
from ..domain import validate as v
from ..domain.ids import id_pattern
from ..domain.protocol import MAX_KNOWN_NETWORKS
from ..service.clients import CONNECTED_WITHIN, MAX_DNS, MAX_EXTRA_ADDRESSES, SCRIPT_MAX
from ..service.gateways import MAX_EGRESS
from ..service.keys import MAX_USES
from ..service.ports import PAGE_CURSOR_MAX, PAGE_CURSOR_PATTERN, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX


def _rule(**keywords: Any) -> Any:
    """JSON Schema keywords of a rule the domain enforces (with its own message)."""
    return Field(json_schema_extra=keywords)


Name = Annotated[str, Field(max_length=v.NAME_MAX), _rule(pattern=v.NAME_PATTERN)]
Tag = Annotated[str, Field(max_length=v.TAG_MAX), _rule(pattern=v.TAG_PATTERN)]
Tags = Annotated[list[Tag], Field(max_length=v.MAX_TAGS)]
Port = Annotated[int, _rule(minimum=v.PORT_MIN, maximum=v.PORT_MAX)]
Keepalive = Annotated[int, _rule(minimum=0, maximum=v.KEEPALIVE_MAX)]
Mtu = Annotated[int, _rule(minimum=v.MTU_MIN, maximum=v.MTU_MAX)]
Uses = Annotated[int, _rule(minimum=1, maximum=MAX_USES)]
WireguardKey = Annotated[str, Field(max_length=64), _rule(pattern=v.WIREGUARD_KEY_PATTERN)]
Endpoint = Annotated[str, Field(max_length=v.ENDPOINT_MAX), _rule(pattern=v.ENDPOINT_PATTERN)]
Endpoints = Annotated[list[Endpoint], Field(max_length=v.MAX_ENDPOINTS)]
Ipv4Cidr = Annotated[str, Field(max_length=43), _rule(pattern=ipam.IPV4_CIDR_PATTERN)]
Ipv6Cidr = Annotated[str, Field(max_length=43), _rule(pattern=ipam.IPV6_CIDR_PATTERN)]
# Ids are checked here: an id of another shape names nothing, and must not reach the database.
NetworkId = Annotated[str, Field(pattern=id_pattern("network"))]
_RFC3339_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]")
# A time as RFC 3339 with its offset, or Unix seconds (a JSON integer); see _expiry.
MAX_UNIX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime holds
Expiry = Annotated[AwareDatetime, Field(strict=False), WithJsonSchema({"anyOf": [
    {"type": "string", "format": "date-time"},
    {"type": "integer", "minimum": 0, "maximum": MAX_UNIX_SECONDS}]})]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ListQuery(BaseModel):
    """Query parameters of every list route (``?limit=N&cursor=C``)."""

    limit: int = Field(default=PAGE_LIMIT_DEFAULT, ge=1, le=PAGE_LIMIT_MAX,
                       description=f"records per page, 1-{PAGE_LIMIT_MAX}")
    # The store checks a cursor itself (its message says to start again); the rules are here
    # so that the document carries them.
    cursor: str | None = Field(default=None, description="next_cursor of the previous page; leave out for "
                               "the first", json_schema_extra={"minLength": 1, "maxLength": PAGE_CURSOR_MAX,
                                                               "pattern": PAGE_CURSOR_PATTERN})


_NEXT_CURSOR = "pass as ?cursor= for the next page; null: this was the last page"


class NetworkCreate(_In):
    name: Name = Field(description="1-63 letters, digits, '.', '_' or '-'", examples=["office"])
    ipv4_cidr: Ipv4Cidr = Field(examples=["100.64.0.0/16"],
                                description="IPv4 overlay range, /8 to /29")
    ipv6_cidr: Ipv6Cidr | None = Field(default=None, description="IPv6 overlay range, /32 to /120; "
                                       "default: a random ULA /64")
    listen_port: Port | None = Field(default=None, description="default WireGuard port of hosts")
    keepalive: Keepalive | None = Field(default=None, description="persistent keepalive, seconds (0 = off)")
    mtu: Mtu | None = Field(default=None, description="interface MTU, 1280-9000")


class NetworkPatch(_In):
    name: Name | None = None
    listen_port: Port | None = None
    keepalive: Keepalive | None = None
    mtu: Mtu | None = None
    ipv4_cidr: Ipv4Cidr | None = Field(default=None, description="cannot be changed; here to say so")
    ipv6_cidr: Ipv6Cidr | None = Field(default=None, description="cannot be changed; here to say so")


class WireNetwork(BaseModel):
    """A network's settings as the update stream carries them."""

    id: str
    name: str
    ipv4_cidr: str
    ipv6_cidr: str
    listen_port: int
    keepalive: int
    mtu: int
    seq: int = Field(description="sequence number of the network's update stream")


class Network(WireNetwork):
    created_at: dt.datetime


class NetworkList(BaseModel):
    networks: list[Network]
    next_cursor: str | None = Field(description=_NEXT_CURSOR)


class EnrollmentKeyCreate(_In):
    networks: list[NetworkId] = Field(min_length=1, max_length=16, description="network ids to join")
    uses: Uses | None = Field(default=None, description="how many hosts may enroll with it")
    expires_at: Expiry | None = Field(default=None, description="RFC 3339 time or Unix seconds")
    unlimited: bool = False
    tags: Tags = Field(default_factory=list)
    relay: str | None = Field(default=None, pattern=id_pattern("host"),
                              description="a member of every network of the key that relays every host "
                              "enrolled with it, from its first config")

    @field_validator("expires_at", mode="before")
    @classmethod
    def _expiry(cls, value: Any) -> Any:
        # Lax datetime parsing would take true, 1.5 and "1900000000", and read integers past
        # 2e10 as milliseconds; the API takes an RFC 3339 string or whole Unix seconds only.
        if value is None or (isinstance(value, str) and _RFC3339_DATE.match(value)):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= MAX_UNIX_SECONDS:
                raise ValueError(f"Unix seconds must be between 0 and {MAX_UNIX_SECONDS} (year 9999)")
            return dt.datetime.fromtimestamp(value, dt.UTC)
        raise ValueError("give an RFC 3339 time with its offset (2030-01-01T00:00:00Z) "
                         "or Unix seconds (a whole number)")


class EnrollmentKey(BaseModel):
    id: str
    networks: list[str]
    uses_total: int | None
    uses_left: int | None
    expires_at: dt.datetime | None
    unlimited: bool
    tags: list[str]
    revoked: bool
    usable: bool = Field(description="whether it can enroll a host now")
    created_at: dt.datetime
    relay: str | None = Field(default=None, description="the member that relays hosts enrolled with it")


class EnrollmentKeyCreated(EnrollmentKey):
    token: str = Field(description="shown only now; store it safely")


class EnrollmentKeyList(BaseModel):
    enrollment_keys: list[EnrollmentKey]
    next_cursor: str | None = Field(description=_NEXT_CURSOR)


class HostRegister(_In):
    name: Name
    wg_public_key: WireguardKey = Field(description="WireGuard public key (base64)")
    listen_port: Port
    endpoints: Endpoints = Field(default_factory=list, description="host:port where peers can reach it")
    csr_pem: str = Field(max_length=16384, description="PEM CSR of the host's own TLS key")


class HostPatch(_In):
    name: Name | None = None
    endpoints: Endpoints | None = None
    listen_port: Port | None = None
    wg_public_key: WireguardKey | None = Field(default=None,
                                               description="key rotation; with the host's own token only")
    tags: Tags | None = Field(default=None, description="admin only")


class HostAddress(BaseModel):
    network_id: str
    ipv4: str
    ipv6: str


class PeerStatus(BaseModel):
    public_key: str
    latest_handshake_age: int | None
    rx_bytes: int
    tx_bytes: int


class HostStatus(BaseModel):
    online: bool
    last_seen: dt.datetime | None
    agent_version: str | None
    reported_endpoints: list[str]
    peers: list[PeerStatus]


class Host(BaseModel):
    id: str
    name: str
    wg_public_key: str
    listen_port: int
    endpoints: list[str]
    observed_endpoint: str | None = Field(description="source address the API saw, as a candidate")
    addresses: list[HostAddress]
    tags: list[str]
    enrollment_key_id: str | None
    created_at: dt.datetime
    status: HostStatus


class HostList(BaseModel):
    hosts: list[Host]
    next_cursor: str | None = Field(description=_NEXT_CURSOR)


class MqttTopics(BaseModel):
    subscribe: list[str]
    publish: list[str]


class MqttAccess(BaseModel):
    endpoint: str
    port: int
    client_id: str
    topics: MqttTopics


class HostRegistered(BaseModel):
    host: Host
    certificate_pem: str
    ca_pem: str
    mqtt: MqttAccess
    host_token: str = Field(description="shown only now; the agent keeps it")


class WireGateway(BaseModel):
    """A member's gateway role as ``protocol.role_to_wire`` writes it."""

    remote_access: bool
    egress: list[str]
    internet: bool
    endpoint: str | None
    auto_relay: bool = Field(default=True, description="schema 3")


def _absent(value: Any) -> bool:
    return value is None


class WireRole(BaseModel):
    """A member's role as ``protocol.role_to_wire`` writes it: only what it has."""

    gateway: WireGateway | None = Field(default=None, exclude_if=_absent)
    internet_gateway: str | None = Field(default=None, exclude_if=_absent)
    full_tunnel: bool | None = Field(default=None, exclude_if=_absent, description="only when true")
    relayed_by: str | None = Field(default=None, exclude_if=_absent,
                                   description="the member that relays it (schema 3); only when relayed")
    pinned: dict[str, str] | None = Field(default=None, exclude_if=_absent,
                                          description="shared range → the gateway the operator pinned it to")
    placed: dict[str, str] | None = Field(default=None, exclude_if=_absent,
                                          description="shared range → the gateway failover placed it on")
    pair_relays: dict[str, str] | None = Field(
        default=None, exclude_if=_absent,
        description="peer → the auto-relay gateway traffic with it goes through (automatic relays; on the "
                    "pair's member with the smaller host id; schema 4)")


class WireMember(BaseModel):
    """A member record exactly as ``protocol.member_to_wire`` writes it (the agent's input; a
    unit test holds the two to the same fields)."""

    host: str
    name: str
    key: str
    ipv4: str
    ipv6: str
    port: int
    endpoints: list[str]
    role: WireRole | None = Field(default=None, exclude_if=_absent,
                                  description="what it does beyond being a peer (schema 2); only when it "
                                  "has one")


class WireClient(BaseModel):
    """A remote-access client exactly as ``protocol.client_to_wire`` writes it: what the plan of
    every host reads (``extra``: its extra addresses, left out when it has none)."""

    id: str
    name: str
    key: str
    ipv4: str
    ipv6: str
    gateway: str
    enabled: bool
    extra: list[str] | None = Field(default=None, exclude_if=lambda v: v is None)


class WireGroup(BaseModel):
    """A gateway group exactly as ``protocol.group_to_wire`` writes it (issue 11, schema 5)."""

    id: str
    name: str
    members: list[str] = Field(description="host ids in priority order (first = preferred)")
    floating: str = Field(description="the floating endpoint ADDR:PORT its clients connect to")
    key: str | None = Field(description="the group's WireGuard public key; null until a member made it")
    key_version: int
    active: str | None = Field(description="the member the control plane records as active")
    epoch: int


class Interface(BaseModel):
    addresses: list[str]
    listen_port: int
    mtu: int


class Peer(BaseModel):
    """One member as a WireGuard peer of this host, as the network plan computes it."""

    host_id: str
    name: str
    public_key: str
    endpoint: str | None
    allowed_ips: list[str]
    persistent_keepalive: int


class NetworkSnapshot(BaseModel):
    full: bool = True
    seq: int
    network: Network
    members: list[WireMember] = Field(description="the network's records: what the agent computes its "
                                      "device from, and what later deltas change")
    clients: list[WireClient] = Field(default_factory=list, description="the network's remote-access "
                                      "clients, records of the same plan (a gateway peers with its own)")
    groups: list[WireGroup] | None = Field(default=None, exclude_if=lambda v: not v,
                                           description="the network's gateway groups (schema 5); left out "
                                           "when it has none")
    interface: Interface
    peers: list[Peer] = Field(description="this host's peers in the network, computed from the members "
                              "by the same plan the agent runs (for reading; the agent computes its own)")
    routes: list[str] = Field(description="ranges this host routes into its interface")


class WireDelta(BaseModel):
    """One broadcast of a network's update stream, exactly as it went out over MQTT."""

    v: int
    type: str = Field(description='always "delta"')
    network: str
    seq: int
    upsert: list[WireMember]
    remove: list[str]
    settings: WireNetwork | None = Field(default=None, exclude_if=lambda v: v is None,
                                         description="only when the network's own settings changed")
    clients: list[WireClient] | None = Field(default=None, exclude_if=lambda v: v is None,
                                             description="remote-access clients added or changed")
    remove_clients: list[str] | None = Field(default=None, exclude_if=lambda v: v is None,
                                             description="ids of remote-access clients removed")
    groups: list[WireGroup] | None = Field(default=None, exclude_if=lambda v: v is None,
                                           description="gateway groups added or changed (schema 5)")
    remove_groups: list[str] | None = Field(default=None, exclude_if=lambda v: v is None,
                                            description="ids of gateway groups removed (schema 5)")


class CatchUp(BaseModel):
    network_id: str
    seq: int = Field(description="the network's seq once the deltas are applied")
    deltas: list[WireDelta] = Field(description="what was missed since the seq given in ?known=, "
                                    "in order; empty: nothing")


class HostConfig(BaseModel):
    host_id: str
    networks: list[NetworkSnapshot] = Field(description="full snapshots: every network not in "
                                            "?known=, and those too far behind to catch up")
    catch_ups: list[CatchUp] = Field(default_factory=list, description="for each network in "
                                         "?known= that can catch up: the deltas missed")


_NET_SEQ = f"{id_pattern('network')[1:-1]}:[0-9]{{1,15}}"


class ConfigQuery(BaseModel):
    """Query parameters of ``GET /v1/hosts/{host_id}/config``."""

    known: str | None = Field(
        default=None, max_length=MAX_KNOWN_NETWORKS * 64,
        pattern=f"^{_NET_SEQ}(,{_NET_SEQ}){{0,{MAX_KNOWN_NETWORKS - 1}}}$",
        description=f"networks the agent has, as network_id:seq pairs separated by commas (at most "
                    f"{MAX_KNOWN_NETWORKS}); each is answered with the deltas missed since, when "
                    "they are still kept, instead of a full snapshot")
    v: int | None = Field(
        default=None, ge=1, le=1_000_000,
        description="the wire protocol's schema version the agent speaks; without it, 1. An agent "
                    "of an older schema gets full snapshots only, and a 400 (agent_outdated) when "
                    "they hold what its schema cannot say (gateways, clients: 2; relays: 3; "
                    "automatic relays: 4; gateway groups: 5)")

    def seqs(self) -> dict[str, int]:
        if not self.known:
            return {}
        return {net: int(seq) for net, seq in (pair.split(":") for pair in self.known.split(","))}


class ErrorBody(BaseModel):
    code: str
    message: str


class Error(BaseModel):
    error: ErrorBody


# ----------------------------------------------------------------------------- issue 9: gateways
HostIdRef = Annotated[str, Field(pattern=id_pattern("host"))]
# issue 11: a client's gateway is a member (host_…) or a gateway group (grp_…)
GatewayRef = Annotated[str, Field(pattern=f"^(?:{id_pattern('host')[1:-1]}|{id_pattern('group')[1:-1]})$")]
Prefix = Annotated[str, Field(max_length=v.PREFIX_MAX), _rule(pattern=v.PREFIX_PATTERN)]


class GatewayPut(_In):
    """A member's gateway role; fields left out keep their value (a new gateway: false, none)."""

    remote_access: bool | None = Field(default=None, description="devices without an agent connect to "
                                       "it with a wg-quick file (remote-access clients)")
    egress: list[Prefix] | None = Field(default=None, max_length=MAX_EGRESS, description="ranges behind "
                                        "it (a LAN, a VPC) that every member routes through it; replaces "
                                        "the list")
    internet: bool | None = Field(default=None, description="members that choose it send their internet "
                                  "traffic through it")
    endpoint: Endpoint | None = Field(default=None, description="where clients reach it, HOST:PORT; "
                                      "null: the host's first endpoint")
    auto_relay: bool | None = Field(default=None, description="it may relay hosts that cannot reach each "
                                    "other directly (default true; automatic relays come in a later "
                                    "version)")


class GatewayRole(BaseModel):
    remote_access: bool
    egress: list[str]
    internet: bool
    endpoint: str | None = Field(description="as set; null: the host's first endpoint")
    auto_relay: bool = True


class NetworkMemberRef(BaseModel):
    """A host as a member of one network: its name and overlay addresses there."""

    network_id: str
    host_id: str
    name: str
    ipv4: str
    ipv6: str


class Gateway(GatewayRole, NetworkMemberRef):
    effective_endpoint: str | None = Field(description="where clients reach it: endpoint, else the "
                                           "host's first endpoint; null: it has none")


class GatewayList(BaseModel):
    gateways: list[Gateway]


class MemberPatch(_In):
    """A member's use of an internet gateway; fields left out keep their value."""

    internet_gateway: HostIdRef | Literal["auto"] | None = Field(
        default=None, description="a member with internet: true; \"auto\": any of them (the agent moves to "
        "the next live one when the active one dies; failover places it; pin one as 0.0.0.0/0); null: none "
        "(clearing it also ends a full tunnel)")
    full_tunnel: bool | None = Field(default=None, description="true: all its traffic goes through the "
                                     "internet gateway; false: only the network's and egress ranges")
    pinned: dict[Prefix, HostIdRef | None] | None = Field(
        default=None, description="egress range several gateways serve (or 0.0.0.0/0: internet access, with "
        "internet_gateway \"auto\") → the one gateway this member sends it to, even while it is down (null: "
        "automatic again, by latency and failover); ranges left out keep their pin")


class NetworkMember(NetworkMemberRef):
    gateway: GatewayRole | None
    internet_gateway: str | None = Field(description="a member's host id, \"auto\" (any internet gateway), "
                                         "or null")
    full_tunnel: bool
    pinned: dict[str, str] = Field(description="range → gateway, as the operator pinned them")
    placed: dict[str, str] = Field(description="range → gateway, as failover placed this member (the "
                                   "agent moves to the next candidate by itself while that one is down)")


# ----------------------------------------------------------------------------- issue 9: clients
IpAddress = Annotated[str, Field(max_length=45)]  # checked (with its message) by the service
Script = Annotated[str, Field(max_length=SCRIPT_MAX)]


class ClientCreate(_In):
    name: Name = Field(examples=["alice-phone"])
    gateway: GatewayRef = Field(description="the member it connects through (a gateway with remote_access), "
                                "or a gateway group (grp_…: its file names the floating endpoint and the "
                                "group's key)")
    public_key: WireguardKey | None = Field(default=None, description="the client's WireGuard public key; "
                                            "leave out to have the key pair made for this one answer")
    dns: list[IpAddress] = Field(default_factory=list, max_length=MAX_DNS, description="DNS servers "
                                 "of its file (IP addresses)")
    address: IpAddress | None = Field(default=None, description="its IPv4 address, free and in the "
                                      "network's range; default: chosen like hosts'")
    extra_addresses: list[Prefix] = Field(default_factory=list, max_length=MAX_EXTRA_ADDRESSES,
                                                description="ranges behind the client (a router's LAN): "
                                                "every host routes them to its gateway")
    post_up: Script | None = Field(default=None, description="one line for the file's PostUp "
                                   "(left out of QR codes)")
    post_down: Script | None = Field(default=None, description="one line for the file's PostDown")
    full_tunnel: bool = Field(default=False, description="all its traffic through its gateway, which "
                              "must be an internet gateway")
    keepalive: Keepalive | None = Field(default=None, description="PersistentKeepalive of its file, "
                                        "seconds (0 = off); default 25")


class ClientPatch(_In):
    name: Name | None = None
    enabled: bool | None = Field(default=None, description="false: its gateway drops its peer")
    gateway: GatewayRef | None = None
    public_key: WireguardKey | None = Field(default=None, description="a key pair the caller made")
    dns: list[IpAddress] | None = Field(default=None, max_length=MAX_DNS)
    extra_addresses: list[Prefix] | None = Field(default=None, max_length=MAX_EXTRA_ADDRESSES)
    post_up: Script | None = Field(default=None, description='"" removes it')
    post_down: Script | None = Field(default=None, description='"" removes it')
    full_tunnel: bool | None = None
    keepalive: Keepalive | None = None


class Client(BaseModel):
    id: str
    network_id: str
    name: str
    public_key: str
    ipv4: str
    ipv6: str
    gateway: str
    enabled: bool
    dns: list[str]
    extra_addresses: list[str]
    post_up: str | None
    post_down: str | None
    full_tunnel: bool
    keepalive: int
    server_keyed: bool = Field(description="its key pair was made by the server (the private key "
                               "was shown once and is not kept)")
    created_at: dt.datetime
    connected: bool = Field(description=f"its gateway reported a handshake within {CONNECTED_WITHIN} s")
    latest_handshake: dt.datetime | None = Field(description="as its gateway last reported it")
    endpoint: str | None = Field(description="where its packets came from, as its gateway last saw")
    rx_bytes: int = Field(description="received by its gateway from it")
    tx_bytes: int = Field(description="sent by its gateway to it")


class ClientIssued(BaseModel):
    client: Client
    config: str | None = Field(description="only when the server made the key pair: the complete "
                               "wg-quick file with its private key, shown only now (not kept)")
    qr_svg: str | None = Field(description="the same file as a QR code (SVG; PostUp/PostDown left out), "
                               "shown only now")


class ClientList(BaseModel):
    clients: list[Client]
    next_cursor: str | None = Field(description=_NEXT_CURSOR)


class ClientConfigQuery(BaseModel):
    """Query parameters of ``GET …/clients/{client_id}/config``."""

    format: Literal["conf", "png", "svg"] = Field(
        default="conf", description="conf: the wg-quick file (text/plain); png or svg: its QR code "
        "(PostUp/PostDown left out); PNG needs Accept: image/png")


# ----------------------------------------------------------------------------- issue 10: probes
class LatencyRow(BaseModel):
    """What one member's prober measured of another through the tunnel, as of its latest report."""

    model_config = ConfigDict(serialize_by_alias=True)

    source: str = Field(alias="from", description="the host that probed")
    to: str = Field(description="the host it probed (a gateway, a relay, a peer without a direct path)")
    rtt_ms: float | None = Field(description="smoothed round-trip time in ms, to 0.1; null: no reply yet")
    loss_pct: int = Field(description="probes lost over the prober's recent window, in percent")
    up: bool = Field(description="the prober's verdict (down after 3 misses in a row, up after 2 replies)")
    age_s: int = Field(description="seconds since the report that said it")


class LatencyMatrix(BaseModel):
    network_id: str
    rows: list[LatencyRow] = Field(description="sorted by from, then to; only members of this network")


# ----------------------------------------------------------------------------- issue 10: relays
class RelayPut(_In):
    """The hosts one relay relays, exactly (hosts it relayed that are left out are reached directly)."""

    relayed: list[HostIdRef] = Field(max_length=64, description="members of the network it relays (at most "
                                     "47 change in one call); []: none")


class Relay(NetworkMemberRef):
    relayed: list[NetworkMemberRef] = Field(description="the members it relays, in host id order")


class RelayPair(BaseModel):
    """Two members that reach each other through an auto-relay gateway (automatic relays)."""

    a: NetworkMemberRef = Field(description="the end with the smaller host id")
    b: NetworkMemberRef
    via: NetworkMemberRef = Field(description="the auto-relay gateway between them")


class RelayList(BaseModel):
    relays: list[Relay]
    pairs: list[RelayPair] = Field(
        default_factory=list,
        description="the pairs relayed automatically (the failover functions set them from the hosts' "
                    "reports), in host id order")
