"""Every change broadcasts itself: a use case called directly (not through the API) tells
the hosts before it returns, and a change that changes nothing costs nothing.

The hosts would otherwise stay stale until the sweeper runs (once a minute).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from chalicelib.domain import protocol
from chalicelib.domain.ids import ClientId
from chalicelib.domain.models import Client, Gateway, Host, MemberRole, Network
from chalicelib.service import Service

from .conftest import host_body

pytestmark = pytest.mark.memory_store  # about the use cases, not the database: no DynamoDB Local


@pytest.fixture
def net(service: Service) -> Network:
    return service.networks.create(name="office", ipv4_cidr="100.64.0.0/24")


def _join(service: Service, network: Network, name: str) -> Host:
    key, _token = service.keys.create(networks=[network.id], uses=1)
    body = host_body(name)
    return service.hosts.register(key, name=name, wg_public_key=body["wg_public_key"], listen_port=51820,
                                  endpoints=body["endpoints"], csr_pem=body["csr_pem"]).host


def _broadcasts(service: Service, network: Network) -> list[Any]:
    return [protocol.decode(p) for p in service.deps.publisher.on(protocol.network_topic(network.id))]


def test_a_settings_change_made_through_the_use_case_reaches_the_hosts_before_it_returns(service, net):
    _join(service, net, "a")

    changed = service.networks.update(net.id, mtu=1380, keepalive=15)

    last = _broadcasts(service, net)[-1]
    assert isinstance(last, protocol.Delta) and last.network is not None
    assert (last.network.mtu, last.network.keepalive) == (1380, 15)
    assert changed.seq == last.seq == service.networks.get(net.id).seq, "returned at the broadcast's seq"
    assert service.stream.sweep() == 0, "nothing was left for the sweeper"


def test_members_of_a_network_deleted_through_the_use_case_are_told_they_left(service, net):
    a, b = _join(service, net, "a"), _join(service, net, "b")

    service.networks.delete(net.id, force=True)

    last = _broadcasts(service, net)[-1]
    assert isinstance(last, protocol.Delta)
    assert sorted(last.remove) == sorted([a.id, b.id]) and last.upsert == (), "one broadcast for all"
    assert service.deps.identity.networks[a.id] == ()


def test_hosts_that_leave_a_network_through_the_use_case_are_broadcast_once(service, net):
    a, b, c = (_join(service, net, n) for n in "abc")
    seq = service.networks.get(net.id).seq

    service.hosts.leave_network(net.id, [a.id, b.id])

    (delta,) = _broadcasts(service, net)[seq:]
    assert delta.seq == seq + 1 and delta.remove == (a.id, b.id)
    assert [m.host_id for m in service.deps.store.network_snapshot(net.id)[1]] == [c.id]


class _CountingStore:
    """The store, with the name of every method called on it recorded in ``calls``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return counted


# What a PATCH must read to see that nothing changes (and who calls): nothing else.
_READS = {"get_admin_key", "get_network", "get_host"}


@pytest.fixture
def member(api: Any) -> dict[str, Any]:
    """A network with one host: the network, the host and its token, as the API shows them."""
    net = api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/24"})
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 1})
    reg = api.ok("POST", "/v1/hosts", host_body("a"), token=key["token"])
    return {"network": api.ok("GET", f"/v1/networks/{net['id']}"), "token": reg["host_token"],
            "host": api.ok("GET", f"/v1/hosts/{reg['host']['id']}")}


def _counting(service: Service, monkeypatch: pytest.MonkeyPatch) -> _CountingStore:
    store = _CountingStore(service.deps.store)
    monkeypatch.setattr(service.deps, "store", store)
    return store


def test_a_network_patch_that_changes_nothing_takes_no_lease_query_write_or_broadcast(
        api, service, member, monkeypatch):
    network = member["network"]
    published = len(service.deps.publisher.messages)
    store = _counting(service, monkeypatch)

    same = {k: network[k] for k in ("name", "listen_port", "keepalive", "mtu")}
    assert api.ok("PATCH", f"/v1/networks/{network['id']}", same) == network
    assert api.ok("PATCH", f"/v1/networks/{network['id']}", {}) == network
    assert set(store.calls) <= _READS, store.calls
    assert service.networks.update(network["id"], mtu=network["mtu"]).seq == network["seq"]  # the use case

    assert set(store.calls) <= _READS, store.calls
    assert len(service.deps.publisher.messages) == published


def test_a_host_patch_that_changes_nothing_takes_no_lease_query_write_or_broadcast(
        api, service, member, monkeypatch):
    host = member["host"]
    published = len(service.deps.publisher.messages)
    store = _counting(service, monkeypatch)

    same = {k: host[k] for k in ("name", "listen_port", "endpoints")}
    assert api.ok("PATCH", f"/v1/hosts/{host['id']}", same, token=member["token"]) == host
    assert api.ok("PATCH", f"/v1/hosts/{host['id']}", {"tags": host["tags"]}) == host
    assert service.hosts.update(host["id"], name=host["name"]).revision == \
        service.deps.store.get_host(host["id"]).revision  # the use case itself

    assert set(store.calls) <= _READS, store.calls
    assert len(service.deps.publisher.messages) == published


def test_a_client_written_with_its_change_is_broadcast_as_it_is_then_as_removed(service, net):
    """The stream reads the clients a batch names as they are when it sends: created or
    changed, the delta carries the record; deleted, it names the client as removed."""
    gateway = _join(service, net, "gw")
    store, stream = service.deps.store, service.stream
    seq = service.networks.get(net.id).seq
    client = Client(ClientId("cli_0001"), net.id, "phone", "c" * 43 + "=", "100.64.0.200", "fd00::c8",
                    gateway.id, extra_addresses=("192.168.8.0/24",))  # as hosts see it (protocol)

    created = stream.new_changes([net.id], client_ids=(client.id,))
    store.create_client(client, change=created[0])
    stream.send(created)
    disabled = replace(client, enabled=False)
    changed = stream.new_changes([net.id], client_ids=(client.id,))
    store.update_client(client, disabled, change=changed[0])
    stream.send(changed)
    deleted = stream.new_changes([net.id], client_ids=(client.id,))
    store.delete_client(store.get_client(net.id, client.id), change=deleted[0])
    stream.send(deleted)

    first, second, third = _broadcasts(service, net)[seq:]
    assert (first.clients, first.remove_clients, first.upsert, first.remove) == ((client,), (), (), ())
    assert (second.clients, second.remove_clients) == ((disabled,), ())
    assert (third.clients, third.remove_clients) == ((), (client.id,))
    assert service.stream.sweep() == 0


def test_a_member_role_is_broadcast_with_the_member(service, net):
    gateway = _join(service, net, "gw")
    seq = service.networks.get(net.id).seq
    role = MemberRole(gateway=Gateway(remote_access=True, egress=("10.1.0.0/16",)))
    written = service.stream.new_changes([net.id], host_ids=(gateway.id,))
    service.deps.store.set_member_role(gateway, replace(gateway, roles={net.id: role}), net.id,
                                       change=written[0])
    service.stream.send(written)

    (delta,) = _broadcasts(service, net)[seq:]
    assert [(m.host_id, m.role) for m in delta.upsert] == [(gateway.id, role)]
