"""Remote-access clients: devices without an agent that join a network through one gateway.

A client is a record of its network like a member: its addresses come from the network's
ranges (the hosts' allocator; one address, one owner), its public key is unique among hosts
and clients, and every change is one write with one pending change naming it, then one
broadcast — so its gateway gains, changes or loses exactly one peer, and every other host
one entry's allowed IPs.

When the caller brings no public key, the key pair is made here for one answer: its private
half is written into that answer's wg-quick file (and QR code) and nowhere else — not in the
store, not in a log line. Afterwards the file can only be had with a placeholder where the
private key goes; :meth:`Clients.rotate_key` makes a new pair and returns the new file once.
"""

from __future__ import annotations

import builtins  # ``list`` in the class body is Clients.list
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from .. import clientfile
from ..domain import ipam, plan, validate
from ..domain.changes import PendingChange
from ..domain.ids import ClientId, HostId, NetworkId, is_id, new_id
from ..domain.models import DEFAULT_KEEPALIVE, Client, Host, is_group_gateway
from ..errors import ConflictError, InvalidInputError, NotFoundError, UnavailableError
from ..wgkeys import KeyPair, new_key_pair
from . import topology
from .deps import Deps, retrying
from .ports import PAGE_LIMIT_DEFAULT, AddressTakenError, Page, StaleWriteError, page_limit
from .stream import Stream

__all__ = ["Clients", "Connection", "IssuedClient", "CONNECTED_WITHIN", "MAX_DNS", "MAX_EXTRA_ADDRESSES",
           "SCRIPT_MAX"]

# A handshake is renewed every 2 minutes while traffic flows (WireGuard's REKEY_AFTER_TIME) and
# a keepalive keeps it so on an idle link: older than 3 minutes, the client is gone.
CONNECTED_WITHIN = 180
MAX_DNS = 8
MAX_EXTRA_ADDRESSES = 32
SCRIPT_MAX = 1024
MAX_CREATE_ATTEMPTS = 40

QrFormat = Literal["png", "svg"]


@dataclass(frozen=True)
class Connection:
    """A client's link as its gateway last reported it (all empty: never seen)."""

    connected: bool = False  # a handshake within CONNECTED_WITHIN seconds, and the client is enabled
    latest_handshake: int | None = None  # unix seconds: report time − handshake age
    endpoint: str | None = None  # where its packets came from (its NAT address)
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(frozen=True)
class IssuedClient:
    """A client as created (or re-keyed), and — when the key pair was made here — its complete
    wg-quick file and that file's QR code (SVG), shown in this one answer only."""

    client: Client
    config: str | None = None
    qr_svg: str | None = None

    def __repr__(self) -> str:  # the file holds a private key: never in a log line
        return f"IssuedClient(client={self.client!r}, config={'<shown once>' if self.config else None})"


def _script(value: str | None, field: str) -> str | None:
    """A PostUp/PostDown line: one line of printable text, at most SCRIPT_MAX characters; "" clears."""
    if value is None or value == "":
        return None
    if len(value) > SCRIPT_MAX:
        raise InvalidInputError(f"{field} is {len(value)} characters long; at most {SCRIPT_MAX}")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value) or "#" in value:
        raise InvalidInputError(f"{field} must be one line of text without control characters or '#' "
                                "(wg-quick cuts a line at '#'; join several commands with ';')")
    return value


def _dns(values: Sequence[str]) -> tuple[str, ...]:
    if len(values) > MAX_DNS:
        raise InvalidInputError(f"dns has {len(values)} servers; at most {MAX_DNS}")
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_address(v)))
        except ValueError:
            raise InvalidInputError(f"dns: {validate.quoted(v)} is not an IP address (a DNS server "
                                    "is given by address, e.g. 100.64.0.1 or fd00::53)") from None
    return tuple(dict.fromkeys(out))


def _keepalive(value: int | None) -> int:
    return DEFAULT_KEEPALIVE if value is None else validate.keepalive(value)


def _requested_ipv4(address: str, cidr: str) -> str:
    """``address`` when it is an assignable IPv4 address of range ``cidr``; else a 400 saying why."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidInputError(f"address {validate.quoted(address)} is not an IP address") from None
    net = ipaddress.ip_network(cidr)
    if addr.version != 4:
        raise InvalidInputError(f"address {addr} is IPv6; give the IPv4 address (the IPv6 one is chosen "
                                "from the network's range)")
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise InvalidInputError(f"address {addr} is not an assignable address of the network's range "
                                f"{cidr}")
    return str(addr)


class Clients:
    """Remote-access clients' use cases; each change broadcast once by the change itself."""

    def __init__(self, deps: Deps, stream: Stream) -> None:
        self._d = deps
        self._stream = stream

    # ------------------------------------------------------------------ read
    def get(self, network_id: str, client_id: str) -> Client:
        client = self._d.store.get_client(network_id, client_id)
        if client is None:
            if self._d.store.get_network(network_id) is None:
                raise NotFoundError(f"network {network_id} does not exist")
            raise NotFoundError(f"client {client_id} does not exist in network {network_id}")
        return client

    def list(self, network_id: str, limit: int = PAGE_LIMIT_DEFAULT,
             cursor: str | None = None) -> Page[Client]:
        """One page of the network's clients in id order."""
        limit = page_limit(limit)
        if self._d.store.get_network(network_id) is None:
            raise NotFoundError(f"network {network_id} does not exist")
        return self._d.store.list_clients(network_id, limit, cursor)

    def connections(self, clients: Iterable[Client]) -> dict[ClientId, Connection]:
        """Each client's link as its gateway's last status report shows it (one read per gateway); a
        gateway group's client (issue 11): as the member that saw its latest handshake reports it."""
        clients = builtins.list(clients)
        serving: dict[str, tuple[HostId, ...]] = {}
        for c in clients:
            if c.gateway not in serving:
                group = (self._d.store.get_group(c.network_id, c.gateway) if is_group_gateway(c.gateway)
                         else None)
                serving[c.gateway] = group.members if group is not None else (c.gateway,)
        hosts: dict[HostId, Host | None] = {h: self._d.store.get_host(h)
                                            for h in {h for hs in serving.values() for h in hs}}
        now = self._d.clock.now()
        out = {}
        for c in clients:
            links = [_connection(c, host, now) for h in serving[c.gateway] if (host := hosts[h]) is not None]
            out[c.id] = max(links, key=lambda link: link.latest_handshake or -1, default=Connection())
        return out

    # ------------------------------------------------------------------ create
    def create(self, network_id: str, *, name: str, gateway: str, public_key: str | None = None,
               dns: Sequence[str] | None = None, address: str | None = None,
               extra_addresses: Sequence[str] | None = None, post_up: str | None = None,
               post_down: str | None = None, full_tunnel: bool = False,
               keepalive: int | None = None) -> IssuedClient:
        """A new client of ``network_id`` behind member ``gateway`` (or gateway group ``gateway``,
        ``grp_…``: issue 11), broadcast before this returns.

        Without ``public_key`` a key pair is made for this answer: :attr:`IssuedClient.config`
        is the complete file (and ``qr_svg`` its QR code); the private key is kept nowhere.
        ``address`` asks for this IPv4 address (the IPv6 one is chosen); else both are chosen
        at random from the network's ranges.

        Raises NotFoundError (network, gateway host), InvalidInputError (a value), ConflictError
        (the gateway is no remote-access member, the address or key is taken, a range overlaps,
        a full tunnel through no internet gateway).
        """
        d = self._d
        validate.name(name)
        if public_key is not None:
            validate.wireguard_key(public_key, "public_key")
        fields = dict(dns=_dns(dns or ()),
                      extra_addresses=validate.prefixes(list(extra_addresses or ()), "extra_addresses",
                                                        MAX_EXTRA_ADDRESSES),
                      post_up=_script(post_up, "post_up"), post_down=_script(post_down, "post_down"),
                      full_tunnel=bool(full_tunnel), keepalive=_keepalive(keepalive))
        pair: KeyPair | None = new_key_pair() if public_key is None else None
        key = pair.public_key if pair is not None else public_key
        assert key is not None
        lost: set[str] = set()  # addresses another writer claimed first
        for _ in range(MAX_CREATE_ATTEMPTS):
            records = topology.existing(self._d.store, network_id)
            self._check_gateway(records, gateway)
            if pair is not None:
                _refuse_keyless_group(records, gateway)  # its file could not be made: write nothing
            used = topology.used_addresses(records) | lost
            network = records.network
            if address is not None:
                ipv4 = _requested_ipv4(address, network.ipv4_cidr)
                if ipv4 in used:
                    raise _address_taken(network.id, ipv4)
            else:
                ipv4 = ipam.allocate(network.ipv4_cidr, used, d.rng)
            client = Client(
                id=ClientId(new_id("client", d.rng)), network_id=network.id, name=name, public_key=key,
                ipv4=ipv4, ipv6=ipam.allocate(network.ipv6_cidr, used, d.rng), gateway=HostId(gateway),
                server_keyed=pair is not None, created_at=d.clock.now(), **fields)  # type: ignore[arg-type]
            plan.check(_with(records, client))
            (change,) = self._stream.new_changes([network.id], client_ids=(client.id,))
            try:
                d.store.create_client(client, change=change)
            except AddressTakenError as e:
                if address is not None and e.address == ipv4:
                    raise _address_taken(network.id, ipv4) from None
                lost.add(e.address)
                continue  # taken meanwhile: read the network's addresses again and pick anew
            except StaleWriteError:  # an id that was taken meanwhile
                d.sleep(d.rng.uniform(0, 0.05))
                continue
            self._stream.send((change,))
            return self._issued(records, client, pair)
        raise UnavailableError("too many clients are being added to this network at this moment; try again")

    def _issued(self, records: plan.NetworkRecords, client: Client, pair: KeyPair | None) -> IssuedClient:
        if pair is None:
            return IssuedClient(client)
        text = clientfile.render(self._view(_with(records, client), client), client, pair.private_key)
        return IssuedClient(client, text, clientfile.qr_svg(text).decode())

    # ------------------------------------------------------------------ change
    def update(self, network_id: str, client_id: str, *, name: str | None = None,
               enabled: bool | None = None, gateway: str | None = None, public_key: str | None = None,
               dns: Sequence[str] | None = None, extra_addresses: Sequence[str] | None = None,
               post_up: str | None = None, post_down: str | None = None, full_tunnel: bool | None = None,
               keepalive: int | None = None) -> Client:
        """The client with these fields changed (None: unchanged; "" clears post_up/post_down),
        broadcast before this returns. A new ``public_key`` is the caller's own (the server no
        longer holds a file with a private key it made). Fields already so change nothing: no
        write and no broadcast. Disabling a client removes its peer from its gateway."""
        if name is not None:
            validate.name(name)
        if public_key is not None:
            validate.wireguard_key(public_key, "public_key")
        changes: dict[str, object] = {}
        for field, value in (("name", name), ("enabled", enabled), ("gateway", gateway),
                             ("dns", None if dns is None else _dns(dns)),
                             ("extra_addresses", None if extra_addresses is None else validate.prefixes(
                                 list(extra_addresses), "extra_addresses", MAX_EXTRA_ADDRESSES)),
                             ("full_tunnel", full_tunnel),
                             ("keepalive", None if keepalive is None else _keepalive(keepalive))):
            if value is not None:
                changes[field] = value
        if post_up is not None:
            changes["post_up"] = _script(post_up, "post_up")
        if post_down is not None:
            changes["post_down"] = _script(post_down, "post_down")
        if public_key is not None:
            changes.update(public_key=public_key, server_keyed=False)
        return self._change(network_id, client_id, changes)

    def rotate_key(self, network_id: str, client_id: str) -> IssuedClient:
        """A fresh key pair for the client, made here: the old key stops working at its gateway
        within one broadcast, and the new complete file is returned in this answer only."""
        _refuse_keyless_group(topology.existing(self._d.store, network_id),
                              self.get(network_id, client_id).gateway)
        pair = new_key_pair()
        client = self._change(network_id, client_id, {"public_key": pair.public_key, "server_keyed": True})
        return self._issued(topology.existing(self._d.store, network_id), client, pair)

    def _change(self, network_id: str, client_id: str, changes: dict[str, object]) -> Client:
        def attempt() -> tuple[Client, tuple[PendingChange, ...]]:
            old = self.get(network_id, client_id)
            new = old.with_changes(**changes, revision=old.revision + 1)
            if new == old.with_changes(revision=old.revision + 1):
                return old, ()
            records = topology.existing(self._d.store, network_id)
            if new.gateway != old.gateway:
                self._check_gateway(records, new.gateway)
            plan.check(_with(records, new))
            outbox = self._stream.new_changes([old.network_id], client_ids=(old.id,))
            self._d.store.update_client(old, new, change=outbox[0])
            return new, outbox

        client, outbox = retrying(self._d, "changing the client", attempt)
        self._stream.send(outbox)
        return client

    def delete(self, network_id: str, client_id: str) -> Client:
        """Remove the client (its peer goes from its gateway) and free its addresses and key."""
        def attempt() -> tuple[Client, tuple[PendingChange, ...]]:
            client = self.get(network_id, client_id)
            outbox = self._stream.new_changes([client.network_id], client_ids=(client.id,))
            self._d.store.delete_client(client, change=outbox[0])
            return client, outbox

        client, outbox = retrying(self._d, "deleting the client", attempt)
        self._stream.send(outbox)
        return client

    def delete_all(self, network_id: str) -> int:
        """Remove every client of the network (before it is deleted), broadcast once; how many."""
        outbox: builtins.list[PendingChange] = []
        for client in self._d.store.network_clients(network_id):
            def attempt(client: Client = client) -> None:
                current = self._d.store.get_client(network_id, client.id)
                if current is None:
                    return
                (change,) = self._stream.new_changes([current.network_id], client_ids=(current.id,))
                self._d.store.delete_client(current, change=change)
                outbox.append(change)
            retrying(self._d, "deleting the network's clients", attempt)
        self._stream.send(outbox)
        return len(outbox)

    # ------------------------------------------------------------------ the file
    def config(self, network_id: str, client_id: str) -> str:
        """The client's wg-quick file as it is now; the server does not hold its private key, so
        the file has a placeholder line where it goes."""
        client = self.get(network_id, client_id)
        records = topology.existing(self._d.store, network_id)
        return clientfile.render(self._view(records, client), client, None)

    def qr(self, network_id: str, client_id: str, fmt: QrFormat) -> bytes:
        """The QR code of :meth:`config` (PostUp/PostDown left out), as PNG or SVG."""
        text = self.config(network_id, client_id)
        return clientfile.qr_png(text) if fmt == "png" else clientfile.qr_svg(text)

    def _view(self, records: plan.NetworkRecords, client: Client) -> plan.ClientView:
        view = plan.client_view(records, client.id, full_tunnel=client.full_tunnel)
        if view is None:
            raise ConflictError(f"the gateway {client.gateway} of client {client.id} is no longer a member "
                                f"of network {client.network_id}; give the client another gateway "
                                "(PATCH its gateway)", code="gateway_gone")
        return view

    # ------------------------------------------------------------------ checks
    def _check_gateway(self, records: plan.NetworkRecords, gateway: str) -> None:
        nid = records.network.id
        if is_id("group", gateway):  # issue 11: a gateway group serves it (its file: the floating address)
            if gateway not in records.gateway_groups:
                raise NotFoundError(f"gateway group {gateway} does not exist in network {nid}")
            return
        if not is_id("host", gateway):
            raise InvalidInputError(f"gateway {validate.quoted(gateway)} is not a host id (host_…) or a "
                                    "gateway group id (grp_…)")
        if HostId(gateway) not in records.members:
            if self._d.store.get_host(gateway) is None:
                raise NotFoundError(f"gateway host {gateway} does not exist")
            raise ConflictError(f"host {gateway} is not a member of network {nid}; a client's gateway is "
                                "a member of its network", code="not_a_member")
        gw = records.gateway(HostId(gateway))
        if gw is None or not gw.remote_access:
            raise ConflictError(f"host {gateway} is not a remote-access gateway of network {nid}; PUT "
                                f"/v1/networks/{nid}/gateways/{gateway} {{\"remote_access\": true}} first",
                                code="not_a_gateway")


def _with(records: plan.NetworkRecords, client: Client) -> plan.NetworkRecords:
    """The records with ``client`` added or replacing its older record."""
    clients = dict(records.clients)
    clients[client.id] = client
    return replace(records, clients=clients)


def _refuse_keyless_group(records: plan.NetworkRecords, gateway: str) -> None:
    """409 when ``gateway`` is a gateway group without a key yet: a file made now would have no
    ``[Peer] PublicKey``, and a private key made for it would be shown in no file."""
    group = records.gateway_groups.get(gateway)
    if group is not None and group.public_key is None:
        raise ConflictError(f"gateway group {gateway} has no key yet: its members make it when the group is "
                            "created; try again in a few seconds, or bring the client's own public_key",
                            code="group_key_missing")


def _address_taken(network_id: NetworkId, ipv4: str) -> ConflictError:
    return ConflictError(f"address {ipv4} is taken in network {network_id}; leave address out to get a "
                         "free one", code="address_taken")


def _connection(client: Client, gateway: Host, now: int) -> Connection:
    status = gateway.status
    peer = next((p for p in status.peers if p.public_key == client.public_key), None)
    if peer is None:
        return Connection()
    latest = None
    if peer.latest_handshake_age is not None and status.last_seen is not None:
        latest = status.last_seen - peer.latest_handshake_age
    connected = client.enabled and latest is not None and now - latest < CONNECTED_WITHIN
    return Connection(connected=connected, latest_handshake=latest, endpoint=peer.endpoint,
                      rx_bytes=peer.rx_bytes, tx_bytes=peer.tx_bytes)
