"""The network plan with gateways, egress ranges, internet gateways and remote-access clients
(chalicelib.domain.plan), as properties over generated networks and as examples.

The generated records are the ones the service would write: every change is kept only when
:func:`plan.check` accepts the records as they would be after it (the service runs it before
writing). Over them, after every change:

(a) no two peers of one host share an allowed IP (``device.merge_views`` refuses that, and it is
    checked directly too);
(b) every served client is reached from every member through exactly one peer, its gateway (the
    longest prefix match of its addresses), and from its gateway directly; an unserved one from
    none;
(c) nothing routes in a loop: a gateway routes none of its own egress ranges into the tunnel and
    no peer of it claims them; a client's extra addresses lead to its gateway everywhere, and the
    gateway's entry of that client holds them;
(d) the agent's incremental path (:class:`agent.converge.Tracker`: the peers a delta touched, and
    the rest of the device only when it says the device changed) equals the full device;
(e) :func:`plan.check` refuses an egress range or extra addresses overlapping another owner's,
    naming both.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import keys
from agent.converge import Outcome, Tracker
from chalicelib.domain import plan, protocol
from chalicelib.domain.device import DeviceConfig, PeerConfig, merge_views
from chalicelib.domain.errors import ConflictError, InvalidInputError
from chalicelib.domain.ids import ClientId, HostId, NetworkId
from chalicelib.domain.models import Client, Gateway, Member, MemberRole, Network
from chalicelib.domain.plan import DEFAULT_ROUTES, HostView, NetworkRecords, check, client_view

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network

HOSTS = range(1, 6)  # host_1 is the agent under test in (d); host_5 joins later
CLIENTS = range(1, 7)
NETS = ("net_a", "net_b")
# One WireGuard key per host and key version, one per client, network and key version: no host
# and no client share a key (the store's key claims), a host's key may rotate.
HOST_KEYS = {(n, v): keys.wireguard_public_key(keys.new_wireguard_key()) for n in HOSTS for v in (0, 1)}
CLIENT_KEYS = {(nid, c, v): keys.wireguard_public_key(keys.new_wireguard_key())
               for nid in NETS for c in CLIENTS for v in (0, 1)}


def network(nid: str, seq: int = 1) -> Network:
    v4, v6 = ("100.65.0.0/16", "fd00:2::/64") if nid == "net_b" else ("100.64.0.0/16", "fd00:1::/64")
    return Network(id=NetworkId(nid), name=nid, ipv4_cidr=v4, ipv6_cidr=v6, seq=seq)


def egress_pool(nid: str, n: int) -> tuple[str, ...]:
    """Host ``n``'s egress ranges in ``nid``: outside both networks' ranges and nobody else's."""
    second = 0 if nid == "net_a" else 100
    return (f"10.{second + n}.0.0/16", f"fd10:{second + n:x}::/48")


def extra_pool(nid: str, c: int) -> tuple[str, ...]:
    """Client ``c``'s LAN in ``nid`` (outside every network range and every egress range)."""
    return (f"192.168.{c}.0/24",) if nid == "net_a" else (f"172.16.{c}.0/24", f"fd20:{c:x}::/64")


NO_ROLE = MemberRole()


def member(nid: str, n: int, key_version: int = 0, role: MemberRole = NO_ROLE, endpoint: int = 1) -> Member:
    v4, v6 = ("100.65.0", "fd00:2:") if nid == "net_b" else ("100.64.0", "fd00:1:")
    return Member(NetworkId(nid), HostId(f"host_{n}"), f"h{n}", HOST_KEYS[(n, key_version)],
                  f"{v4}.{n}", f"{v6}:{n}", 51820, endpoints=(f"198.18.{endpoint}.{n}:51820",), role=role)


def client(nid: str, c: int, gateway: int, *, enabled: bool = True, extras: bool = False,
           key_version: int = 0) -> Client:
    v4, v6 = ("100.65.1", "fd00:2:") if nid == "net_b" else ("100.64.1", "fd00:1:")
    return Client(ClientId(f"cli_{c}"), NetworkId(nid), f"c{c}", CLIENT_KEYS[(nid, c, key_version)],
                  f"{v4}.{c}", f"{v6}:1:{c}", HostId(f"host_{gateway}"), enabled=enabled,
                  extra_addresses=extra_pool(nid, c) if extras else ())


# --- scripts of changes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One change an operator makes through the API, in network ``nid``."""

    nid: str
    op: str  # role, use, member, remove, client, unclient, settings
    n: int  # host number (client number for client/unclient)
    a: int = 0  # role: remote_access bit 1, egress bit 2, internet bit 4; use: gateway host a % 5 (0: none)
    b: int = 0  # use: full tunnel; member: key version; client: gateway host
    c: int = 0  # client: 0 disabled, extras bit 2, key version bit 4; member: endpoint


steps = st.builds(
    Step,
    nid=st.sampled_from(NETS),
    op=st.sampled_from(["role", "role", "use", "member", "remove", "client", "client", "client",
                        "unclient", "settings"]),
    n=st.sampled_from(list(HOSTS)),
    a=st.integers(0, 7),
    b=st.integers(0, 7),
    c=st.integers(0, 7),
)
scripts = st.lists(steps, min_size=1, max_size=30)


START_ROLES = {  # so that short scripts already have served clients, LANs and full tunnels to change
    2: MemberRole(gateway=Gateway(remote_access=True, internet=True)),  # + its egress, per network
    3: MemberRole(gateway=Gateway(remote_access=True)),
    4: MemberRole(internet_gateway=HostId("host_2"), full_tunnel=True),
}


def start() -> list[protocol.Snapshot]:
    """Both networks with host_1 (the same key in both), an internet gateway with remote access
    (host_2), a remote-access gateway (host_3), a full-tunnel host (host_4), and a client with a
    LAN at each gateway."""
    out = []
    for nid in NETS:
        roles = dict(START_ROLES)
        roles[2] = MemberRole(gateway=Gateway(remote_access=True, egress=egress_pool(nid, 2), internet=True))
        members = tuple(member(nid, n, role=roles.get(n, NO_ROLE)) for n in (1, 2, 3, 4))
        out.append(protocol.Snapshot(network(nid), members,
                                     (client(nid, 1, 2, extras=True), client(nid, 2, 3, extras=True))))
    return out


def delta_of(snap: protocol.Snapshot, step: Step) -> protocol.Delta | None:
    """The delta ``step`` makes on ``snap`` (None: it changes nothing or names a host that is not
    there)."""
    nid, seq = snap.network.id, snap.network.seq + 1
    members = {m.host_id: m for m in snap.members}
    me = members.get(HostId(f"host_{step.n}"))
    if step.op == "settings":
        return protocol.Delta(nid, seq, network=replace(snap.network, seq=seq, keepalive=step.c * 10,
                                                        mtu=1280 + step.b))
    if step.op == "member":
        role = me.role if me is not None else MemberRole()
        return protocol.Delta(nid, seq, upsert=(member(nid, step.n, step.b % 2, role, step.c),))
    if step.op == "remove":
        if me is None or step.n == 1:
            return None
        return protocol.Delta(nid, seq, remove=(me.host_id,))
    if step.op == "client":
        cli = client(nid, step.n, 1 + step.b % 4, enabled=step.c != 0, extras=bool(step.c & 2),
                     key_version=(step.c >> 2) & 1)
        return protocol.Delta(nid, seq, clients=(cli,))
    if step.op == "unclient":
        if not any(c.id == f"cli_{step.n}" for c in snap.clients):
            return None
        return protocol.Delta(nid, seq, remove_clients=(f"cli_{step.n}",))
    if me is None:
        return None
    if step.op == "role":
        gw = None
        if step.a:
            gw = Gateway(remote_access=bool(step.a & 1), internet=bool(step.a & 4),
                         egress=egress_pool(nid, step.n) if step.a & 2 else ())
        return protocol.Delta(nid, seq, upsert=(replace(me, role=replace(me.role, gateway=gw)),))
    assert step.op == "use"
    uses = HostId(f"host_{step.a % 5}") if step.a % 5 else None
    role = replace(me.role, internet_gateway=uses, full_tunnel=bool(step.b % 4) and uses is not None)
    return protocol.Delta(nid, seq, upsert=(replace(me, role=role),))


def after(snap: protocol.Snapshot, delta: protocol.Delta) -> NetworkRecords:
    """The records of ``snap``'s network as they are after ``delta``."""
    members = {m.host_id: m for m in snap.members}
    clients = {c.id: c for c in snap.clients}
    for h in delta.remove:
        members.pop(HostId(h), None)
    members.update((m.host_id, m) for m in delta.upsert)
    for cid in delta.remove_clients:
        clients.pop(ClientId(cid), None)
    clients.update((c.id, c) for c in delta.clients)
    return NetworkRecords(delta.network or snap.network, members, clients)


def accepted(tracker: Tracker, step: Step) -> protocol.Delta | None:
    """The delta of ``step`` when the service would accept it, else None: :func:`plan.check` of the
    network after it, and the service's rule across networks, at most one internet gateway per
    host (counted by key: the one peer that gets 0.0.0.0/0)."""
    snaps: dict[str, protocol.Snapshot] = {s.network.id: s for s in tracker.snapshots}
    snap = snaps.get(step.nid)
    if snap is None:
        return None
    delta = delta_of(snap, step)
    if delta is None:
        return None
    records = after(snap, delta)
    try:
        check(records)
    except (ConflictError, InvalidInputError):
        return None
    everywhere = [records] + [NetworkRecords.of(s.network, s.members, s.clients)
                              for nid, s in snaps.items() if nid != step.nid]
    uses: dict[HostId, set[str]] = {}
    for r in everywhere:
        for hid in r.members:
            if (ig := r.internet_gateway(hid)) is not None:
                uses.setdefault(hid, set()).add(r.members[ig].public_key)
    if any(len(ks) > 1 for ks in uses.values()):
        return None
    return delta


def run(script: Iterable[Step], snapshots: list[protocol.Snapshot] | None = None,
        accept: Callable[[Tracker, Step], protocol.Delta | None] | None = None, *,
        initial: bool = False) -> Iterable[Tracker]:
    """A tracker of host_1 (on ``snapshots``, default :func:`start`), after each step of ``script``
    that ``accept`` (default :func:`accepted`) turns into a delta; first as it starts if ``initial``."""
    t = Tracker("host_1", start() if snapshots is None else snapshots)
    if initial:
        yield t
    for step in script:
        delta = (accept or accepted)(t, step)
        if delta is None:
            continue
        assert t.on_delta(delta) is Outcome.APPLIED
        yield t


# --- what a device does with a packet ---------------------------------------------------------


def nets(prefixes: Iterable[str]) -> list[Prefix]:
    return [ipaddress.ip_network(p, strict=False) for p in prefixes]


def lookup(view: HostView, address: str) -> set[str]:
    """The peers (ids) WireGuard sends a packet for ``address`` to: the longest allowed IP that
    holds it (a set: more than one would be a tie, which (a) rules out)."""
    addr = ipaddress.ip_address(address)
    best, who = -1, set[str]()
    for p in view.peers:
        for net in nets(p.allowed_ips):
            if net.version == addr.version and addr in net:
                if net.prefixlen > best:
                    best, who = net.prefixlen, {p.host_id}
                elif net.prefixlen == best:
                    who.add(p.host_id)
    return who


def inside(prefix: str) -> str:
    """An address inside ``prefix`` (its last one)."""
    return str(ipaddress.ip_network(prefix).broadcast_address)


# --- invariants (a), (b), (c) -------------------------------------------------------------------


def assert_invariants(records: NetworkRecords) -> None:
    p = plan.network_plan(records)
    served = [c for c in records.clients.values() if records.served(c)]
    for hid in p:
        view = p[hid]
        # (a) no allowed IP twice among one host's peers (in this network)
        claimed = [str(n) for peer in view.peers for n in nets(peer.allowed_ips)]
        assert len(claimed) == len(set(claimed)), f"{hid}: two peers share an allowed IP: {sorted(claimed)}"
        me = records.members[hid]
        gw = me.role.gateway
        for c in served:
            # (b) every served client through exactly one peer: its gateway, or itself at its gateway
            want = {c.id} if c.gateway == hid else {c.gateway}
            for addr in (c.ipv4, c.ipv6, *(inside(x) for x in c.extra_addresses)):
                assert lookup(view, addr) == want, f"{hid} sends {addr} of {c.id} to {lookup(view, addr)}"
            # (c) its extra addresses are routed into the tunnel everywhere
            assert set(c.extra_addresses) <= set(view.routes), f"{hid} does not route {c.id}'s LAN"
            if c.gateway == hid:
                entry = next(x for x in view.peers if x.host_id == c.id)
                assert set(entry.allowed_ips) == {f"{c.ipv4}/32", f"{c.ipv6}/128", *c.extra_addresses}
                assert set(c.extra_addresses) <= set(view.forwards)
        for c in records.clients.values():
            if not records.served(c):
                exact = {f"{c.ipv4}/32", f"{c.ipv6}/128", *c.extra_addresses}
                routed = {a for x in view.peers for a in x.allowed_ips}
                assert not exact & routed, f"{hid} still routes {c.id}"
                assert c.id not in {x.host_id for x in view.peers}
        # (c) no loop: a gateway's own egress ranges are behind it, not in the tunnel
        if gw is not None:
            own = nets(gw.egress)
            assert not set(gw.egress) & set(view.routes), f"{hid} routes its egress into the tunnel"
            for x in view.peers:
                for n in nets(a for a in x.allowed_ips if a not in DEFAULT_ROUTES):
                    assert not any(n.version == o.version and n.overlaps(o) for o in own), \
                        f"{hid}'s peer {x.host_id} claims {n}, behind {hid} itself"
        # every other gateway's egress range leads to that gateway
        for other in p:
            ogw = records.members[other].role.gateway
            if other != hid and ogw is not None:
                for rng in ogw.egress:
                    assert rng in view.routes
                    to = lookup(view, inside(rng))
                    assert to == {other}, f"{hid} sends {rng} (behind {other}) to {to}"
        # an internet gateway is never full tunnel itself; a full-tunnel host has exactly one default peer
        defaults = [x.host_id for x in view.peers if set(DEFAULT_ROUTES) <= set(x.allowed_ips)]
        assert view.full_tunnel == me.role.full_tunnel, "full tunnel is what the host asked for (split: not)"
        if view.full_tunnel:
            assert defaults == [me.role.internet_gateway]
            assert not (gw is not None and gw.internet)
        else:
            assert defaults == []


def assert_device(views: list[HostView]) -> DeviceConfig:
    """(a) across a host's networks: merge_views raises on a shared allowed IP; and directly."""
    device = merge_views(views, 51820)
    claimed = [ip for peer in device.peers.values() for ip in peer.allowed_ips]
    assert len(claimed) == len(set(claimed))
    return device


def assert_everywhere(t: Tracker, invariants: Callable[[NetworkRecords], None]) -> None:
    """``invariants`` of each of the tracker's networks, and (a) on every host's whole device."""
    records = [NetworkRecords.of(s.network, s.members, s.clients) for s in t.snapshots]
    for r in records:
        invariants(r)
    for hid in sorted({h for r in records for h in r.members}):
        assert_device([plan.network_plan(r)[hid] for r in records if hid in r.members])


@settings(max_examples=150, deadline=None)
@given(scripts)
def test_every_accepted_network_keeps_its_invariants_at_every_host(script: list[Step]) -> None:
    for t in run(script):
        assert_everywhere(t, assert_invariants)


# --- (d) the agent's incremental path -----------------------------------------------------------


def without_peers(d: DeviceConfig) -> DeviceConfig:
    return replace(d, peers={})


class Applied:
    """What an agent has applied, as its runner does: after a change only the peers the tracker
    noted (their configs from :meth:`Tracker.peer`), the whole device when it says it changed.
    :meth:`check` asserts that this equals the full recomputation, peers and the rest."""

    def __init__(self, t: Tracker) -> None:
        t.take_changes()
        self.t = t
        self.device = t.device(51820)
        self.peers = dict(self.device.peers)

    def check(self, label: object) -> tuple[bool, dict[str, PeerConfig | None]]:
        """After a change: (whether the tracker said the whole device changed, the touched peers'
        new configs by key, None for a peer that is gone)."""
        changes = self.t.take_changes()
        full = self.t.device(51820)
        if changes.full:
            self.device, self.peers = full, dict(full.peers)
            return True, {}
        touched = {key: self.t.peer(key) for key in changes.keys}
        self.peers = {k: p for k, p in {**self.peers, **touched}.items() if p is not None}
        assert self.peers == dict(full.peers), f"after {label}"
        assert without_peers(self.device) == without_peers(full), f"after {label}: routes changed unnoticed"
        return False, touched


@settings(max_examples=200, deadline=None)
@given(scripts)
def test_the_agents_incremental_path_equals_the_full_device_after_every_change(script: list[Step]) -> None:
    """What the agent applies after a delta (the touched peers; everything when the tracker says
    the device changed) is the device a full recomputation gives, peers and the rest."""
    t = Tracker("host_1", start())
    applied = Applied(t)
    for step in script:
        delta = accepted(t, step)
        if delta is None:
            continue
        assert t.on_delta(delta) is Outcome.APPLIED
        applied.check(step)


# --- (e) overlapping ranges -----------------------------------------------------------------------


def overlapping(prefix: str, draw: st.DrawFn, *, same: bool = True) -> str:
    """A prefix that overlaps ``prefix``: itself (unless not ``same``), a subnet or a supernet of it."""
    net = ipaddress.ip_network(prefix)
    how = draw(st.sampled_from(["same", "sub", "super"] if same else ["sub", "super"]))
    if how == "sub" and net.prefixlen < net.max_prefixlen:
        return str(next(net.subnets(prefixlen_diff=min(net.max_prefixlen - net.prefixlen,
                                                       draw(st.integers(1, 8))))))
    if how == "super" and net.prefixlen > 0:
        return str(net.supernet(new_prefix=max(1, net.prefixlen - draw(st.integers(1, 8)))))
    return str(net)


@st.composite
def conflicts(draw: st.DrawFn) -> tuple[NetworkRecords, str, set[str]]:
    """Valid records of net_a with two gateways and two clients, and then one owner given a range
    overlapping another owner's: (records, the newcomer's name, the owners whose ranges the new
    range overlaps: the one drawn, and others when it is a wide supernet)."""
    nid = "net_a"
    members = {n: member(nid, n, role=MemberRole(gateway=Gateway(remote_access=True,
                                                                 egress=egress_pool(nid, n))))
               for n in (1, 2)}
    clients = {c: client(nid, c, c, extras=True) for c in (1, 2)}
    owners = {"gateway host_1": egress_pool(nid, 1), "gateway host_2": egress_pool(nid, 2),
              "client cli_1": extra_pool(nid, 1), "client cli_2": extra_pool(nid, 2),
              "the network's range": ("100.64.0.0/16", "fd00:1::/64")}
    victim = draw(st.sampled_from(sorted(owners)))
    newcomer = draw(st.sampled_from(sorted(o for o in owners if o != victim and o != "the network's range")))
    # The very same range behind two gateways is HA, not a conflict (examples below).
    both_gateways = victim.startswith("gateway") and newcomer.startswith("gateway")
    clash = overlapping(draw(st.sampled_from(owners[victim])), draw, same=not both_gateways)
    kind, _, name = newcomer.partition(" ")
    if kind == "gateway":
        n = int(name.removeprefix("host_"))
        gw = members[n].role.gateway
        assert gw is not None
        members[n] = replace(members[n], role=MemberRole(gateway=replace(gw, egress=(*gw.egress, clash))))
    else:
        c = int(name.removeprefix("cli_"))
        clients[c] = clients[c].with_changes(extra_addresses=(*clients[c].extra_addresses, clash))
    records = NetworkRecords.of(network(nid), members.values(), clients.values())
    hit = {o for o, rs in owners.items() if o != newcomer and any(
        a.version == b.version and a.overlaps(b) for a in nets(rs) for b in nets([clash]))}
    assert victim in hit
    return records, newcomer, hit


@settings(max_examples=150, deadline=None)
@given(conflicts())
def test_check_refuses_overlapping_ranges_naming_both(case: tuple[NetworkRecords, str, set[str]]) -> None:
    records, newcomer, hit = case
    with pytest.raises(ConflictError) as err:
        check(records)
    assert err.value.code == "range_overlap"
    named = {o for o in hit | {newcomer} if o in err.value.message}
    assert newcomer in named and len(named) == 2, err.value.message


# --- examples: check's messages ---------------------------------------------------------------------


def records_of(members: Iterable[Member], clients: Iterable[Client] = ()) -> NetworkRecords:
    return NetworkRecords.of(network("net_a"), members, clients)


def with_role(n: int, **role: object) -> Member:
    return member("net_a", n, role=MemberRole(**role))  # type: ignore[arg-type]


INTERNET = Gateway(internet=True)


def test_check_accepts_a_network_with_gateways_clients_and_internet_use() -> None:
    check(records_of([with_role(1, gateway=Gateway(remote_access=True, egress=("10.1.0.0/16",))),
                      with_role(2, gateway=INTERNET),
                      with_role(3, internet_gateway=HostId("host_2"), full_tunnel=True),
                      with_role(4, internet_gateway=HostId("host_2"))],
                     [client("net_a", 1, 1, extras=True)]))


@pytest.mark.parametrize(("members", "clients", "error", "code", "says"), [
    ([with_role(1, full_tunnel=True)], [], InvalidInputError, "no_internet_gateway",
     "host_1: full_tunnel needs an internet_gateway"),
    ([with_role(1, internet_gateway=HostId("host_1")), with_role(2)], [], ConflictError,
     "internet_gateway_chain", "host_1 cannot be its own internet gateway"),
    ([with_role(1, internet_gateway=HostId("host_2")), with_role(2)], [], ConflictError,
     "not_an_internet_gateway", "host_2 is not an internet gateway of network net_a"),
    ([with_role(1, internet_gateway=HostId("host_9"))], [], ConflictError,
     "not_an_internet_gateway", "host_9 is not an internet gateway"),
    ([with_role(1, internet_gateway=HostId("host_2"), gateway=INTERNET), with_role(2, gateway=INTERNET)], [],
     ConflictError, "internet_gateway_chain",
     "host_1 is an internet gateway itself and cannot use another one"),
    ([with_role(1, gateway=Gateway(remote_access=True))],
     [client("net_a", 1, 1).with_changes(full_tunnel=True)], ConflictError, "not_an_internet_gateway",
     "client cli_1 has full_tunnel, but its gateway host_1 is no internet gateway"),
    ([with_role(1, gateway=Gateway(egress=("100.64.7.0/24",)))], [], ConflictError, "range_overlap",
     "100.64.7.0/24 of gateway host_1 overlaps the network's range 100.64.0.0/16"),
    ([with_role(1, gateway=Gateway(egress=("10.0.0.0/8",))),
      with_role(2, gateway=Gateway(egress=("10.2.0.0/16",)))], [], ConflictError, "range_overlap",
     "10.2.0.0/16 of gateway host_2 overlaps gateway host_1 (10.0.0.0/8)"),
    ([with_role(1, gateway=Gateway(remote_access=True, egress=("fd10::/48",)))],
     [client("net_a", 1, 1).with_changes(extra_addresses=("fd10:0:0:1::/64",))], ConflictError,
     "range_overlap",
     "fd10:0:0:1::/64 of client cli_1 overlaps gateway host_1 (fd10::/48)"),
    ([with_role(1, gateway=Gateway(remote_access=True, egress=("10.9.0.0/16",)))],
     [client("net_a", 1, 1).with_changes(extra_addresses=("10.9.0.0/16",))], ConflictError,
     "range_overlap", "10.9.0.0/16 of client cli_1 overlaps gateway host_1 (10.9.0.0/16)"),
])
def test_check_names_what_is_wrong_and_how_to_fix_it(members: list[Member], clients: list[Client],
                                                     error: type[Exception], code: str, says: str) -> None:
    with pytest.raises(error) as err:
        check(records_of(members, clients))
    assert type(err.value) is error
    assert err.value.code == code  # type: ignore[attr-defined]
    assert says in err.value.message  # type: ignore[attr-defined]


# --- examples: client_view ------------------------------------------------------------------------------


def gateways_and_clients(**changes: Mapping[str, object]) -> NetworkRecords:
    """host_1: remote access + egress; host_2: internet + egress; host_3: lost remote access (its
    client is kept, unserved); cli_1 (host_1, LAN), cli_2 (host_1), cli_3 (host_2, LAN, disabled),
    cli_4 (host_3, LAN: unserved)."""
    members = [with_role(1, gateway=Gateway(remote_access=True, egress=("10.1.0.0/16",),
                                            endpoint="vpn.test:443")),
               with_role(2, gateway=Gateway(remote_access=True, internet=True, egress=("10.2.0.0/16",))),
               with_role(3, gateway=Gateway(egress=("10.3.0.0/16",)))]
    clients = [client("net_a", 1, 1, extras=True), client("net_a", 2, 1),
               client("net_a", 3, 2, extras=True, enabled=False), client("net_a", 4, 3, extras=True)]
    return records_of(members, clients)


def test_a_split_tunnel_clients_peer_holds_the_network_egress_and_other_served_clients_lans() -> None:
    view = client_view(gateways_and_clients(), "cli_2")
    assert view is not None
    assert view.addresses == ("100.64.1.2/32", "fd00:1::1:2/128")
    assert view.gateway == "host_1" and view.public_key == HOST_KEYS[(1, 0)]
    assert view.endpoint == "vpn.test:443"  # the gateway's own endpoint before the host's
    assert view.allowed_ips == ("100.64.0.0/16", "fd00:1::/64", "10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16",
                                "192.168.1.0/24")  # not cli_3's (disabled) nor cli_4's (unserved) LAN


def test_a_clients_own_lan_is_left_out_of_its_peer() -> None:
    view = client_view(gateways_and_clients(), "cli_1")
    assert view is not None
    assert "192.168.1.0/24" not in view.allowed_ips
    assert view.allowed_ips[:2] == ("100.64.0.0/16", "fd00:1::/64")


def test_a_full_tunnel_client_sends_everything_to_its_gateway_and_uses_the_hosts_endpoint() -> None:
    view = client_view(gateways_and_clients(), "cli_3", full_tunnel=True)
    assert view is not None
    assert view.allowed_ips == DEFAULT_ROUTES
    assert view.gateway == "host_2" and view.endpoint == "198.18.1.2:51820"


def test_no_client_view_for_an_unknown_client_or_a_gateway_that_left() -> None:
    records = gateways_and_clients()
    assert client_view(records, "cli_9") is None
    gone = NetworkRecords(records.network, {h: m for h, m in records.members.items() if h != "host_1"},
                          records.clients)
    assert client_view(gone, "cli_1") is None


def test_a_removed_gateway_takes_its_routes_with_it_at_every_agent() -> None:
    """Found by the property above: the tracker treated the removal of a gateway like any
    member's, so an agent updated only its peers and kept routing the gateway's egress ranges
    and its clients' LANs into the tunnel."""
    t = Tracker("host_1", start())
    gw = member("net_a", 3, role=MemberRole(gateway=Gateway(remote_access=True,
                                                             egress=egress_pool("net_a", 3))))
    assert t.on_delta(protocol.Delta("net_a", 2, upsert=(gw,))) is Outcome.APPLIED
    assert "10.3.0.0/16" in t.device(51820).routes and "192.168.2.0/24" in t.device(51820).routes
    t.take_changes()
    assert t.on_delta(protocol.Delta("net_a", 3, remove=("host_3",))) is Outcome.APPLIED
    assert t.take_changes().full, "the device's routes changed: the agent must apply the whole device"
    assert not {"10.3.0.0/16", "192.168.2.0/24"} & set(t.device(51820).routes)
