"""Remote-access clients through the API (issue 9 §3): every route, every refusal, the key the
server makes (returned once, kept nowhere), one broadcast per change, what the gateway and the
other members get in ``/config``, and the connected fields from the gateway's reports."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
from typing import Any

import pytest

from chalicelib import clientfile, wgkeys
from chalicelib.domain import protocol
from chalicelib.domain.models import PeerStatus
from chalicelib.service import Service

from .conftest import Api, host_body, wg_public_key

pytestmark = pytest.mark.memory_store  # about the API; tests/contract holds the stores to one behaviour

LAN = "192.168.50.0/24"


def make_gateway(api: Api, network_id: str, host_id: str, **role: Any) -> None:
    """Make a member a remote-access gateway (and what ``role`` adds) through the gateways route."""
    api.ok("PUT", f"/v1/networks/{network_id}/gateways/{host_id}", {"remote_access": True, **role})


@pytest.fixture
def net(api: Api) -> dict[str, Any]:
    return api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/24",
                                           "ipv6_cidr": "fd00:64::/64"})


@pytest.fixture
def hosts(api: Api, net: dict[str, Any], service: Service) -> dict[str, dict[str, Any]]:
    """Members g (a remote-access gateway), a and b; each with its host token."""
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 10})
    out = {}
    for name in ("g", "a", "b"):
        reg = api.ok("POST", "/v1/hosts", host_body(name, endpoints=[f"198.18.0.{len(out) + 1}:51820"]),
                     token=key["token"])
        out[name] = {**reg["host"], "token": reg["host_token"]}
    make_gateway(api, net["id"], out["g"]["id"])
    return out


def _clients(net: dict[str, Any]) -> str:
    return f"/v1/networks/{net['id']}/clients"


def _config(api: Api, host: dict[str, Any]) -> dict[str, Any]:
    [snap] = api.ok("GET", f"/v1/hosts/{host['id']}/config?v={protocol.VERSION}",
                    token=host["token"])["networks"]
    return snap


def _peer(snap: dict[str, Any], peer_id: str) -> dict[str, Any] | None:
    return next((p for p in snap["peers"] if p["host_id"] == peer_id), None)


def _broadcasts(service: Service, net: dict[str, Any]) -> list[Any]:
    return [protocol.decode(p) for p in service.deps.publisher.on(protocol.network_topic(net["id"]))]


def _text(api: Api, path: str, accept: str = "*/*") -> tuple[int, str, bytes]:
    resp = api.http.get(path, headers={"Authorization": f"Bearer {api.admin_key}", "Accept": accept})
    body = resp.body if isinstance(resp.body, bytes) else str(resp.body).encode()
    return resp.status_code, resp.headers.get("Content-Type", ""), body


# ------------------------------------------------------------------ create


def test_a_client_made_without_a_key_gets_its_file_once_and_the_private_key_is_kept_nowhere(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    made = api.ok("POST", _clients(net), {"name": "phone", "gateway": hosts["g"]["id"],
                                          "dns": ["100.64.0.1"], "post_up": "echo up"})
    client, text = made["client"], made["config"]
    assert client["id"].startswith("cli_") and client["server_keyed"] and client["enabled"]
    assert ipaddress.ip_address(client["ipv4"]) in ipaddress.ip_network(net["ipv4_cidr"])
    assert ipaddress.ip_address(client["ipv6"]) in ipaddress.ip_network(net["ipv6_cidr"])
    assert (client["gateway"], client["keepalive"], client["dns"]) == (hosts["g"]["id"], 25, ["100.64.0.1"])
    assert not client["connected"] and client["latest_handshake"] is None
    [private] = [line.split(" = ", 1)[1] for line in text.splitlines() if line.startswith("PrivateKey = ")]
    assert wgkeys.public_key_of(private) == client["public_key"]
    assert f"PublicKey = {hosts['g']['wg_public_key']}" in text and "Endpoint = 198.18.0.1:51820" in text
    assert f"Address = {client['ipv4']}/32, {client['ipv6']}/128" in text and "PostUp = echo up" in text
    assert made["qr_svg"].lstrip().startswith("<?xml") and "<svg" in made["qr_svg"]

    # Kept nowhere: not in any stored record, broadcast, log line, or a later answer.
    store = service.deps.store
    assert private not in repr(vars(store))
    assert all(private.encode() not in m.payload for m in service.deps.publisher.messages)
    assert private not in caplog.text
    got = api.ok("GET", f"{_clients(net)}/{client['id']}")
    assert got == {**client}
    code, ctype, body = _text(api, f"{_clients(net)}/{client['id']}/config")
    assert code == 200 and ctype.startswith("text/plain")
    assert private.encode() not in body and clientfile.PRIVATE_KEY_PLACEHOLDER.encode() in body
    assert client["public_key"].encode() in body  # the comment names the key whose private half goes there


def test_a_client_with_its_own_key_gets_no_file_in_the_answer_and_the_file_and_qr_codes_by_get(
        api: Api, net: dict[str, Any], hosts: dict[str, Any]) -> None:
    key = wg_public_key()
    made = api.ok("POST", _clients(net), {"name": "laptop", "gateway": hosts["g"]["id"], "public_key": key,
                                          "keepalive": 0, "post_up": "echo hi"})
    assert made["config"] is None and made["qr_svg"] is None
    client = made["client"]
    assert client["public_key"] == key and not client["server_keyed"] and client["keepalive"] == 0
    base = f"{_clients(net)}/{client['id']}/config"
    code, _, text = _text(api, base)
    assert code == 200 and b"PersistentKeepalive" not in text and b"PostUp = echo hi" in text
    code, ctype, svg = _text(api, base + "?format=svg")
    assert (code, ctype) == (200, "image/svg+xml") and b"<svg" in svg
    code, ctype, png = _text(api, base + "?format=png", accept="image/png")
    assert (code, ctype) == (200, "image/png") and png.startswith(b"\x89PNG\r\n\x1a\n")
    code, _, _ = _text(api, base + "?format=gif")
    assert code == 400
    code, _, body = _text(api, base + "?format=png", accept="application/json")  # a PNG needs Accept
    assert code == 400 and json.loads(body)["error"]["message"], body


def test_a_requested_address_is_given_and_freed_when_the_client_is_deleted(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    taken = {a["ipv4"] for h in hosts.values() for a in h["addresses"]}
    free = next(f"100.64.0.{n}" for n in range(200, 255) if f"100.64.0.{n}" not in taken)  # hosts' are random
    body = {"name": "router", "gateway": hosts["g"]["id"], "public_key": wg_public_key(), "address": free}
    client = api.ok("POST", _clients(net), body)["client"]
    assert client["ipv4"] == free
    code, out = api.call("POST", _clients(net), {**body, "public_key": wg_public_key()})
    assert code == 409 and out["error"]["code"] == "address_taken", out

    before = len(_broadcasts(service, net))
    api.ok("DELETE", f"{_clients(net)}/{client['id']}")
    [delta] = _broadcasts(service, net)[before:]
    assert delta.remove_clients == (client["id"],) and not delta.clients
    assert api.call("GET", f"{_clients(net)}/{client['id']}")[0] == 404
    assert _peer(_config(api, hosts["g"]), client["id"]) is None
    again = api.ok("POST", _clients(net), {**body, "public_key": wg_public_key()})["client"]
    assert again["ipv4"] == free


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("change, status, code, words", [
    ({"public_key": "not-a-key"}, 400, "invalid_input", "public_key"),
    ({"dns": ["dns.example"]}, 400, "invalid_input", "not an IP address"),
    ({"extra_addresses": ["192.168.1.1/24"]}, 400, "invalid_input", "192.168.1.0/24"),
    ({"extra_addresses": ["0.0.0.0/0"]}, 400, "invalid_input", "internet gateway"),
    ({"keepalive": 70000}, 400, "invalid_input", "keepalive"),
    ({"keepalive": -1}, 400, "invalid_input", "keepalive"),
    ({"address": "10.0.0.5"}, 400, "invalid_input", "100.64.0.0/24"),
    ({"address": "100.64.0.255"}, 400, "invalid_input", "assignable"),
    ({"address": "fd00:64::5"}, 400, "invalid_input", "IPv4"),
    ({"post_up": "echo a\nrm -rf /"}, 400, "invalid_input", "one line"),
    ({"post_down": "x" * 5000}, 400, "invalid_input", "post_down"),
    ({"name": "bad name!"}, 400, "invalid_input", "name"),
    ({"gateway": "not-a-host"}, 400, "invalid_input", "gateway"),
    ({"surprise": 1}, 400, "invalid_input", "not a known field"),
    ({"gateway": "host_doesnotexist"}, 404, "not_found", "host_doesnotexist"),
    ({"extra_addresses": ["100.64.0.0/25"]}, 409, "range_overlap", "100.64.0.0/24"),
    ({"full_tunnel": True}, 409, "not_an_internet_gateway", "internet gateway"),
])
def test_a_bad_client_is_refused_with_a_message_and_nothing_is_written(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service, change: dict[str, Any],
        status: int, code: str, words: str) -> None:
    published = len(service.deps.publisher.messages)
    got, out = api.call("POST", _clients(net), {"name": "c", "gateway": hosts["g"]["id"], **change})
    assert (got, out["error"]["code"]) == (status, code), out
    assert words in out["error"]["message"], out
    assert api.ok("GET", _clients(net))["clients"] == []
    assert len(service.deps.publisher.messages) == published


def test_the_gateway_must_be_a_remote_access_member_of_the_network(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    code, out = api.call("POST", _clients(net), {"name": "c", "gateway": hosts["a"]["id"]})
    assert (code, out["error"]["code"]) == (409, "not_a_gateway"), out
    assert f"PUT /v1/networks/{net['id']}/gateways/{hosts['a']['id']}" in out["error"]["message"]

    other = api.ok("POST", "/v1/networks", {"name": "other", "ipv4_cidr": "100.65.0.0/24"})
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [other["id"]], "uses": 1})
    outsider = api.ok("POST", "/v1/hosts", host_body("x"), token=key["token"])["host"]
    code, out = api.call("POST", _clients(net), {"name": "c", "gateway": outsider["id"]})
    assert (code, out["error"]["code"]) == (409, "not_a_member"), out
    assert outsider["id"] in out["error"]["message"] and net["id"] in out["error"]["message"]

    code, out = api.call("POST", "/v1/networks/net_doesnotexist/clients",
                         {"name": "c", "gateway": hosts["g"]["id"]})
    assert (code, out["error"]["code"]) == (404, "not_found")
    assert "net_doesnotexist" in out["error"]["message"]


def test_a_key_a_host_or_another_client_holds_and_overlapping_extra_addresses_are_409(
        api: Api, net: dict[str, Any], hosts: dict[str, Any]) -> None:
    g = hosts["g"]["id"]
    code, out = api.call("POST", _clients(net), {"name": "c", "gateway": g,
                                                 "public_key": hosts["a"]["wg_public_key"]})
    assert (code, out["error"]["code"]) == (409, "public_key_in_use"), out
    first = api.ok("POST", _clients(net), {"name": "r1", "gateway": g, "extra_addresses": [LAN]})["client"]
    code, out = api.call("POST", _clients(net), {"name": "c", "gateway": g,
                                                 "public_key": first["public_key"]})
    assert (code, out["error"]["code"]) == (409, "public_key_in_use"), out
    code, out = api.call("POST", _clients(net), {"name": "r2", "gateway": g,
                                                 "extra_addresses": ["192.168.50.128/25"]})
    assert (code, out["error"]["code"]) == (409, "range_overlap") and first["id"] in out["error"]["message"]


def test_a_full_tunnel_client_needs_an_internet_gateway(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    make_gateway(api, net["id"], hosts["b"]["id"], internet=True)
    client = api.ok("POST", _clients(net), {"name": "c", "gateway": hosts["b"]["id"],
                                            "full_tunnel": True})
    assert "AllowedIPs = 0.0.0.0/0, ::/0" in client["config"]
    code, out = api.call("PATCH", f"{_clients(net)}/{client['client']['id']}", {"gateway": hosts["g"]["id"]})
    assert (code, out["error"]["code"]) == (409, "not_an_internet_gateway"), out


@pytest.mark.parametrize("method, suffix", [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/config"),
                                            ("POST", "/rotate-key")])
def test_an_unknown_client_or_network_is_404(api: Api, net: dict[str, Any], method: str, suffix: str) -> None:
    body = {"name": "x"} if method == "PATCH" else None
    for path in (f"{_clients(net)}/cli_doesnotexist{suffix}",
                 f"/v1/networks/net_nope/clients/cli_x1234{suffix}", f"{_clients(net)}/not-an-id{suffix}"):
        code, out = api.call(method, path, body)
        assert (code, out["error"]["code"]) == (404, "not_found"), (path, out)


def test_patch_refusals(api: Api, net: dict[str, Any], hosts: dict[str, Any]) -> None:
    client = api.ok("POST", _clients(net), {"name": "c", "gateway": hosts["g"]["id"]})["client"]
    one = f"{_clients(net)}/{client['id']}"
    for body, status, code in (({"gateway": hosts["a"]["id"]}, 409, "not_a_gateway"),
                               ({"enabled": "no"}, 400, "invalid_input"),
                               ({"dns": ["1.2.3"]}, 400, "invalid_input"),
                               ({"extra_addresses": ["100.64.0.128/25"]}, 409, "range_overlap"),
                               ({"public_key": hosts["a"]["wg_public_key"]}, 409, "public_key_in_use")):
        got, out = api.call("PATCH", one, body)
        assert (got, out["error"]["code"]) == (status, code), (body, out)
    assert api.ok("GET", one) == client


# ------------------------------------------------------------------ changes, broadcasts and /config


def test_disabling_a_client_is_one_broadcast_and_its_gateway_loses_the_peer_until_it_is_enabled(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    client = api.ok("POST", _clients(net), {"name": "c", "gateway": hosts["g"]["id"]})["client"]
    one = f"{_clients(net)}/{client['id']}"
    assert _peer(_config(api, hosts["g"]), client["id"]) is not None

    before = len(_broadcasts(service, net))
    assert api.ok("PATCH", one, {"enabled": False})["enabled"] is False
    [delta] = _broadcasts(service, net)[before:]
    assert [(c.id, c.enabled) for c in delta.clients] == [(client["id"], False)] and not delta.upsert
    assert _peer(_config(api, hosts["g"]), client["id"]) is None
    assert f"{client['ipv4']}/32" not in _peer(_config(api, hosts["a"]), hosts["g"]["id"])["allowed_ips"]

    assert api.ok("PATCH", one, {"enabled": False})["enabled"] is False  # already so: nothing sent
    assert len(_broadcasts(service, net)) == before + 1

    api.ok("PATCH", one, {"enabled": True})
    [delta] = _broadcasts(service, net)[before + 1:]
    assert [(c.id, c.enabled) for c in delta.clients] == [(client["id"], True)]
    peer = _peer(_config(api, hosts["g"]), client["id"])
    assert peer is not None and peer["public_key"] == client["public_key"]


def test_config_the_gateway_peers_with_its_client_and_the_others_route_its_addresses_to_the_gateway(
        api: Api, net: dict[str, Any], hosts: dict[str, Any]) -> None:
    client = api.ok("POST", _clients(net), {"name": "router", "gateway": hosts["g"]["id"],
                                            "extra_addresses": [LAN]})["client"]
    mine = [f"{client['ipv4']}/32", f"{client['ipv6']}/128", LAN]
    at_gateway = _config(api, hosts["g"])
    assert _peer(at_gateway, client["id"])["allowed_ips"] == mine
    assert LAN in at_gateway["routes"]  # into the interface, where its client's peer takes it
    for name in ("a", "b"):
        snap = _config(api, hosts[name])
        assert _peer(snap, client["id"]) is None
        assert set(mine) <= set(_peer(snap, hosts["g"]["id"])["allowed_ips"])
        assert LAN in snap["routes"]
        assert snap["clients"] == [protocol.client_to_wire(protocol.client_from_wire(net["id"], {
            "id": client["id"], "name": "router", "key": client["public_key"], "ipv4": client["ipv4"],
            "ipv6": client["ipv6"], "gateway": hosts["g"]["id"], "enabled": True, "extra": [LAN]}))]
    # The client's own file routes the network through its gateway, not its own LAN.
    made = api.ok("POST", _clients(net), {"name": "phone", "gateway": hosts["g"]["id"]})
    allowed = next(line for line in made["config"].splitlines() if line.startswith("AllowedIPs"))
    assert allowed == f"AllowedIPs = {net['ipv4_cidr']}, {net['ipv6_cidr']}, {LAN}"


def test_patch_changes_name_dns_scripts_and_gateway_each_in_one_broadcast(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    client = api.ok("POST", _clients(net), {"name": "c", "gateway": hosts["g"]["id"],
                                            "post_up": "echo up"})["client"]
    one = f"{_clients(net)}/{client['id']}"
    got = api.ok("PATCH", one, {"name": "c2", "dns": ["fd00:64::53"], "post_up": "", "keepalive": 10})
    assert (got["name"], got["dns"], got["post_up"], got["keepalive"]) == ("c2", ["fd00:64::53"], None, 10)
    assert got["ipv4"] == client["ipv4"] and got["public_key"] == client["public_key"]

    make_gateway(api, net["id"], hosts["b"]["id"])
    before = len(_broadcasts(service, net))
    assert api.ok("PATCH", one, {"gateway": hosts["b"]["id"]})["gateway"] == hosts["b"]["id"]
    assert len(_broadcasts(service, net)) == before + 1
    assert _peer(_config(api, hosts["g"]), client["id"]) is None
    assert _peer(_config(api, hosts["b"]), client["id"]) is not None
    code, _, text = _text(api, f"{one}/config")
    assert f"PublicKey = {hosts['b']['wg_public_key']}".encode() in text and b"DNS = fd00:64::53" in text

    key = wg_public_key()
    got = api.ok("PATCH", one, {"public_key": key})
    assert got["public_key"] == key and not got["server_keyed"]
    assert _peer(_config(api, hosts["b"]), client["id"])["public_key"] == key


def test_rotate_key_returns_the_new_file_once_and_the_gateway_takes_the_new_key(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = api.ok("POST", _clients(net), {"name": "c", "gateway": hosts["g"]["id"],
                                            "public_key": wg_public_key()})["client"]
    rotated = api.ok("POST", f"{_clients(net)}/{client['id']}/rotate-key", status=200)
    new = rotated["client"]
    [private] = [line.split(" = ", 1)[1] for line in rotated["config"].splitlines()
                 if line.startswith("PrivateKey = ")]
    assert wgkeys.public_key_of(private) == new["public_key"] != client["public_key"]
    assert new["server_keyed"] and new["ipv4"] == client["ipv4"]
    assert _peer(_config(api, hosts["g"]), client["id"])["public_key"] == new["public_key"]
    assert private not in repr(vars(service.deps.store)) and private not in caplog.text


def test_list_pages_through_a_networks_clients(api: Api, net: dict[str, Any], hosts: dict[str, Any]) -> None:
    made = {api.ok("POST", _clients(net), {"name": f"c{i}", "gateway": hosts["g"]["id"],
                                           "public_key": wg_public_key()})["client"]["id"] for i in range(3)}
    first = api.ok("GET", _clients(net) + "?limit=2")
    rest = api.ok("GET", _clients(net) + f"?limit=2&cursor={first['next_cursor']}")
    assert {c["id"] for c in first["clients"] + rest["clients"]} == made and rest["next_cursor"] is None
    assert api.call("GET", _clients(net) + "?limit=0")[0] == 400


# ------------------------------------------------------------------ connected users


def test_connected_fields_come_from_the_gateways_last_report(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service,
        monkeypatch: pytest.MonkeyPatch) -> None:
    on, off = (api.ok("POST", _clients(net), {"name": n, "gateway": hosts["g"]["id"]})["client"]
               for n in ("on", "off"))
    now = service.deps.clock.now()
    monkeypatch.setattr(service.deps.clock, "now", lambda: now)
    report = protocol.StatusReport(agent_version="test", peers=(
        PeerStatus(on["public_key"], 30, rx_bytes=1200, tx_bytes=3400, endpoint="198.51.100.7:40000"),
        PeerStatus(off["public_key"], 600, rx_bytes=5, tx_bytes=6, endpoint="198.51.100.8:40000")))
    assert service.status.record(hosts["g"]["id"], protocol.encode(report))

    got = api.ok("GET", f"{_clients(net)}/{on['id']}")
    assert got["connected"] is True and (got["rx_bytes"], got["tx_bytes"]) == (1200, 3400)
    assert got["endpoint"] == "198.51.100.7:40000"
    assert dt.datetime.fromisoformat(got["latest_handshake"]).timestamp() == now - 30
    listed = {c["id"]: c for c in api.ok("GET", _clients(net))["clients"]}
    assert listed[on["id"]] == got
    assert listed[off["id"]]["connected"] is False and listed[off["id"]]["latest_handshake"] is not None

    # Three minutes later without a new report, nobody is connected; a disabled client never is.
    monkeypatch.setattr(service.deps.clock, "now", lambda: now + 151)
    assert api.ok("GET", f"{_clients(net)}/{on['id']}")["connected"] is False
    monkeypatch.setattr(service.deps.clock, "now", lambda: now)
    assert api.ok("PATCH", f"{_clients(net)}/{on['id']}", {"enabled": False})["connected"] is False


# ------------------------------------------------------------------ network deletion


def test_a_network_with_clients_is_deleted_only_with_force_and_its_clients_go_with_it(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    client = api.ok("POST", _clients(net), {"name": "c", "gateway": hosts["g"]["id"]})["client"]
    code, out = api.call("DELETE", f"/v1/networks/{net['id']}")
    assert (code, out["error"]["code"]) == (409, "network_not_empty")
    assert "3 host(s) and 1 client(s)" in out["error"]["message"]
    api.ok("DELETE", f"/v1/networks/{net['id']}?force=true")
    assert api.call("GET", f"/v1/networks/{net['id']}")[0] == 404
    assert service.deps.store.get_client(net["id"], client["id"]) is None
    assert service.deps.store.network_clients(net["id"]) == []


def test_an_agent_that_catches_up_gets_the_client_changes_it_missed(
        api: Api, net: dict[str, Any], hosts: dict[str, Any]) -> None:
    seq = _config(api, hosts["a"])["seq"]
    client = api.ok("POST", _clients(net), {"name": "c", "gateway": hosts["g"]["id"],
                                            "extra_addresses": [LAN]})["client"]
    api.ok("DELETE", f"{_clients(net)}/{client['id']}")
    out = api.ok("GET", f"/v1/hosts/{hosts['a']['id']}/config?v={protocol.VERSION}&known={net['id']}:{seq}",
                 token=hosts["a"]["token"])
    assert out["networks"] == []
    [catch_up] = out["catch_ups"]
    added, removed = catch_up["deltas"]
    assert [c["id"] for c in added["clients"]] == [client["id"]] and added["clients"][0]["extra"] == [LAN]
    assert removed["remove_clients"] == [client["id"]]
    assert protocol.decode({**added, "v": protocol.VERSION}).clients[0].extra_addresses == (LAN,)
