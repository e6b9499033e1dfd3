"""Request and response bodies of REST API v1 (pydantic v2).

Requests are validated with these models and the OpenAPI document is generated
from the same models, so the two cannot drift apart.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from ..service.ports import PAGE_CURSOR_MAX, PAGE_CURSOR_PATTERN, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    name: str = Field(max_length=63, description="1-63 letters, digits, '.', '_' or '-'",
                      examples=["office"])
    ipv4_cidr: str = Field(max_length=43, examples=["100.64.0.0/16"],
                           description="IPv4 overlay range, /8 to /29")
    ipv6_cidr: str | None = Field(default=None, max_length=43,
                                  description="IPv6 overlay range, /32 to /120; default: a random ULA /64")
    listen_port: int | None = Field(default=None, description="default WireGuard port of hosts")
    keepalive: int | None = Field(default=None, description="persistent keepalive, seconds (0 = off)")
    mtu: int | None = Field(default=None, description="interface MTU, 1280-9000")


class NetworkPatch(_In):
    name: str | None = Field(default=None, max_length=63)
    listen_port: int | None = None
    keepalive: int | None = None
    mtu: int | None = None
    ipv4_cidr: str | None = Field(default=None, description="cannot be changed; here to say so")
    ipv6_cidr: str | None = Field(default=None, description="cannot be changed; here to say so")


class Network(BaseModel):
    id: str
    name: str
    ipv4_cidr: str
    ipv6_cidr: str
    listen_port: int
    keepalive: int
    mtu: int
    seq: int = Field(description="sequence number of the network's update stream")
    created_at: dt.datetime


class NetworkList(BaseModel):
    networks: list[Network]
    next_cursor: str | None = Field(description=_NEXT_CURSOR)


class EnrollmentKeyCreate(_In):
    networks: list[str] = Field(min_length=1, max_length=16, description="network ids to join")
    uses: int | None = Field(default=None, description="how many hosts may enroll with it")
    expires_at: dt.datetime | None = Field(default=None,
                                           description="RFC 3339 time or Unix seconds")
    unlimited: bool = False
    tags: list[str] = Field(default_factory=list, max_length=32)


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


class EnrollmentKeyCreated(EnrollmentKey):
    token: str = Field(description="shown only now; store it safely")


class EnrollmentKeyList(BaseModel):
    enrollment_keys: list[EnrollmentKey]
    next_cursor: str | None = Field(description=_NEXT_CURSOR)


class HostRegister(_In):
    name: str = Field(max_length=63)
    wg_public_key: str = Field(max_length=64, description="WireGuard public key (base64)")
    listen_port: int
    endpoints: list[str] = Field(default_factory=list, max_length=8,
                                 description="host:port where peers can reach it")
    csr_pem: str = Field(max_length=16384, description="PEM CSR of the host's own TLS key")


class HostPatch(_In):
    name: str | None = Field(default=None, max_length=63)
    endpoints: list[str] | None = Field(default=None, max_length=8)
    listen_port: int | None = None
    wg_public_key: str | None = Field(default=None, max_length=64,
                                      description="key rotation; with the host's own token only")
    tags: list[str] | None = Field(default=None, max_length=32, description="admin only")


class HostAddress(BaseModel):
    network_id: str
    ipv4: str
    ipv6: str


class PeerState(BaseModel):
    public_key: str
    latest_handshake_age: int | None
    rx_bytes: int
    tx_bytes: int


class HostStatus(BaseModel):
    online: bool
    last_seen: dt.datetime | None
    agent_version: str | None
    reported_endpoints: list[str]
    peers: list[PeerState]


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


class WireMember(BaseModel):
    host: str
    name: str
    key: str
    ipv4: str
    ipv6: str
    port: int
    endpoints: list[str]


class Interface(BaseModel):
    addresses: list[str]
    listen_port: int
    mtu: int


class Peer(BaseModel):
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
    members: list[WireMember]
    interface: Interface
    peers: list[Peer]


class HostConfig(BaseModel):
    host_id: str
    networks: list[NetworkSnapshot]


class ErrorBody(BaseModel):
    code: str
    message: str


class Error(BaseModel):
    error: ErrorBody
