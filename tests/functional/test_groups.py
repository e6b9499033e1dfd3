"""HA gateway groups through the API on DynamoDB Local (issue 11): every route, every refusal, one
broadcast per change, the key (ciphertext only: no plaintext anywhere), the control plane's vote and
the record of the active member, and the client file of a group's client."""

from __future__ import annotations

import base64
import json
import logging
import threading
from typing import Any

import pytest

from agent import groupkey as member_crypto
from chalicelib import wgkeys
from chalicelib.domain import protocol
from chalicelib.domain.groupkey import SealContext
from chalicelib.service import Service

from .conftest import Api, host_body

FLOATING = "198.18.9.1:51900"
NAMES = ("g1", "g2", "g3", "a")


@pytest.fixture
def net(api: Api) -> dict[str, Any]:
    return api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/24",
                                           "ipv6_cidr": "fd00:64::/64"})


@pytest.fixture
def hosts(api: Api, net: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Members g1, g2, g3 (remote-access gateways) and a; each with its token and WireGuard key pair."""
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 10})
    out = {}
    for i, name in enumerate(NAMES):
        pair = wgkeys.new_key_pair()
        body = host_body(name, wg_public_key=pair.public_key, endpoints=[f"198.18.0.{i + 1}:51820"])
        reg = api.ok("POST", "/v1/hosts", body, token=key["token"])
        out[name] = {**reg["host"], "token": reg["host_token"], "pair": pair}
        if name != "a":
            api.ok("PUT", f"/v1/networks/{net['id']}/gateways/{reg['host']['id']}", {"remote_access": True})
    return out


def _groups(net: dict[str, Any]) -> str:
    return f"/v1/networks/{net['id']}/gateway-groups"


def _ids(hosts: dict[str, Any], *names: str) -> list[str]:
    return [hosts[n]["id"] for n in names]


def _broadcasts(service: Service, net: dict[str, Any]) -> list[Any]:
    return [protocol.decode(p) for p in service.deps.publisher.on(protocol.network_topic(net["id"]))]


def _create(api: Api, net: dict[str, Any], hosts: dict[str, Any], *names: str) -> dict[str, Any]:
    members = _ids(hosts, *(names or ("g1", "g2", "g3")))
    return api.ok("POST", _groups(net), {"name": "edge", "members": members, "floating_endpoint": FLOATING})


def _upload(api: Api, net: dict[str, Any], group: dict[str, Any], hosts: dict[str, Any], maker: str,
            version: int, recipients: tuple[str, ...], key: wgkeys.KeyPair | None = None) -> tuple[
                int, Any, wgkeys.KeyPair]:
    """What member ``maker`` does: seal ``key`` (a new one by default) to ``recipients`` and PUT it."""
    key = key or member_crypto.new_group_key()
    sender = hosts[maker]["pair"]
    entries = []
    for r in recipients:
        public = hosts[r]["pair"].public_key
        context = SealContext(net["id"], group["id"], version, key.public_key, sender.public_key, public)
        entries.append({"recipient": hosts[r]["id"], "recipient_public_key": public,
                        "sender": hosts[maker]["id"], "sender_public_key": sender.public_key,
                        "ciphertext": member_crypto.seal(key.private_key, context, sender.private_key)})
    code, out = api.call("PUT", f"{_groups(net)}/{group['id']}/key",
                         {"public_key": key.public_key, "version": version, "entries": entries},
                         token=hosts[maker]["token"])
    return code, out, key


# ------------------------------------------------------------------ the group's record


def test_a_group_is_created_listed_changed_and_deleted_each_in_one_broadcast(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    before = len(_broadcasts(service, net))
    group = api.ok("POST", _groups(net), {"name": "edge", "members": _ids(hosts, "g1", "g2"),
                                          "floating_endpoint": FLOATING, "priority": _ids(hosts, "g2", "g1")})
    assert group["id"].startswith("grp_") and group["members"] == _ids(hosts, "g2", "g1")
    assert (group["public_key"], group["key_version"], group["active"], group["epoch"], group["key"]) == \
        (None, 0, None, 0, None)
    sent = _broadcasts(service, net)[before:]
    assert len(sent) == 1 and [g.id for g in sent[0].groups] == [group["id"]]
    assert sent[0].groups[0].floating_endpoint == FLOATING
    assert api.ok("GET", _groups(net))["groups"] == [group]
    assert api.ok("GET", f"{_groups(net)}/{group['id']}") == group

    changed = api.ok("PATCH", f"{_groups(net)}/{group['id']}", {"add": _ids(hosts, "g3"),
                                                                "priority": _ids(hosts, "g1", "g3", "g2")})
    assert changed["group"]["members"] == _ids(hosts, "g1", "g3", "g2") and changed["removed"] == []
    assert len(_broadcasts(service, net)) == before + 2
    assert _broadcasts(service, net)[-1].groups[0].members == tuple(_ids(hosts, "g1", "g3", "g2"))
    api.ok("PATCH", f"{_groups(net)}/{group['id']}", {"add": []})  # nothing changes: nothing is sent
    assert len(_broadcasts(service, net)) == before + 2

    api.ok("DELETE", f"{_groups(net)}/{group['id']}")
    last = _broadcasts(service, net)[-1]
    assert len(_broadcasts(service, net)) == before + 3 and last.remove_groups == (group["id"],)
    assert api.ok("GET", _groups(net))["groups"] == []
    code, out = api.call("GET", f"{_groups(net)}/{group['id']}")
    assert code == 404 and "does not exist" in out["error"]["message"]


@pytest.mark.parametrize(("body", "status", "code", "says"), [
    ({"members": ["a"]}, 409, "not_a_gateway", "is not a remote-access gateway"),
    ({"floating_endpoint": "198.18.9.1:51820"}, 409, "floating_port_in_use", "choose another floating port"),
    ({"floating_endpoint": "198.18.9.1:51821"}, 409, "floating_port_in_use", "underlay echo port"),
    ({"floating_endpoint": "edge.example.com:51900"}, 400, "invalid_input", "IPv4 or IPv6 literal"),
    ({"floating_endpoint": "198.18.9.1"}, 400, "invalid_input", "host:port"),
    ({"members": ["g1", "g1"]}, 400, "invalid_input", "names a host twice"),
    ({"members": ["g1", "g2", "g3", "a", "g1"]}, 400, "invalid_input", "members"),
    ({"members": []}, 400, "invalid_input", "members"),
    ({"members": ["host_nobody1"]}, 404, "not_found", "does not exist"),
    ({"priority": ["g1"]}, 400, "invalid_input", "priority must name exactly the group's members"),
    ({"name": "no spaces here"}, 400, "invalid_input", "name"),
])
def test_a_group_the_plan_cannot_serve_is_refused_with_what_to_fix_and_nothing_is_written(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service, body: dict[str, Any],
        status: int, code: str, says: str) -> None:
    names = {n: h["id"] for n, h in hosts.items()}
    doc = {"name": "edge", "members": _ids(hosts, "g1", "g2"), "floating_endpoint": FLOATING, **body}
    for field in ("members", "priority"):
        if field in doc:
            doc[field] = [names.get(m, m) for m in doc[field]]
    before = len(_broadcasts(service, net))
    got, out = api.call("POST", _groups(net), doc)
    assert (got, out["error"]["code"]) == (status, code), out
    assert says in out["error"]["message"]
    assert api.ok("GET", _groups(net))["groups"] == [] and len(_broadcasts(service, net)) == before


def test_members_must_offer_the_same_egress_and_a_member_keeps_its_gateway_role(
        api: Api, net: dict[str, Any], hosts: dict[str, Any]) -> None:
    g1 = hosts["g1"]["id"]
    lan = {"remote_access": True, "egress": ["10.9.0.0/16"]}
    api.ok("PUT", f"/v1/networks/{net['id']}/gateways/{g1}", lan)
    code, out = api.call("POST", _groups(net), {"name": "edge", "members": _ids(hosts, "g1", "g2"),
                                                "floating_endpoint": FLOATING})
    assert code == 409 and out["error"]["code"] == "group_members_differ", out
    api.ok("PUT", f"/v1/networks/{net['id']}/gateways/{g1}", {"remote_access": True, "egress": []})
    _create(api, net, hosts, "g1", "g2")
    code, out = api.call("PUT", f"/v1/networks/{net['id']}/gateways/{g1}", lan)
    assert code == 409 and out["error"]["code"] == "group_members_differ", out


def test_a_members_gateway_role_ends_only_once_it_left_the_group_or_by_force(
        api: Api, net: dict[str, Any], hosts: dict[str, Any]) -> None:
    group = _create(api, net, hosts)
    g3 = hosts["g3"]["id"]
    path = f"/v1/networks/{net['id']}/gateways/{g3}"
    for method, body in (("PUT", {"remote_access": False, "internet": True}), ("DELETE", None)):
        code, out = api.call(method, path, body)
        assert code == 409 and out["error"]["code"] == "gateway_in_use", out
        said = out["error"]["message"]
        assert f"member of gateway groups: edge ({group['id']}); remove it from them first" in said
    api.ok("DELETE", path + "?force=true")
    # the group keeps it, serving nothing, and later changes of the network go on
    assert api.ok("GET", f"{_groups(net)}/{group['id']}")["members"] == _ids(hosts, "g1", "g2", "g3")
    api.ok("PUT", f"/v1/networks/{net['id']}/gateways/{hosts['a']['id']}", {"remote_access": True})
    api.ok("PATCH", f"{_groups(net)}/{group['id']}", {"remove": [g3]})


def test_a_member_cannot_move_its_mesh_port_onto_the_floating_port(
        api: Api, net: dict[str, Any], hosts: dict[str, Any]) -> None:
    _create(api, net, hosts, "g1", "g2")
    g1 = hosts["g1"]
    for port in (51900, 51899):  # the floating port, and one below it (its echo port is port + 1)
        code, out = api.call("PATCH", f"/v1/hosts/{g1['id']}", {"listen_port": port}, token=g1["token"])
        assert code == 409 and out["error"]["code"] == "floating_port_in_use", out
    assert api.ok("PATCH", f"/v1/hosts/{g1['id']}", {"listen_port": 51830}, token=g1["token"])[
        "listen_port"] == 51830
    assert api.ok("PATCH", f"/v1/hosts/{hosts['g3']['id']}", {"listen_port": 51900},
                  token=hosts["g3"]["token"])["listen_port"] == 51900, "not a member: its port is free"


def test_an_agent_of_schema_4_is_told_to_upgrade_once_its_network_has_a_group(
        api: Api, net: dict[str, Any], hosts: dict[str, Any]) -> None:
    a = hosts["a"]
    path = f"/v1/hosts/{a['id']}/config?v=4"
    assert api.ok("GET", path, token=a["token"])["networks"]
    _create(api, net, hosts)
    code, out = api.call("GET", path, token=a["token"])
    assert code == 400 and out["error"]["code"] == "agent_outdated", out
    assert "use gateway groups, which need schema 5: upgrade skymesh-agent" in out["error"]["message"]
    [snap] = api.ok("GET", f"/v1/hosts/{a['id']}/config?v=5", token=a["token"])["networks"]
    assert [g["floating"] for g in snap["groups"]] == [FLOATING]


# ------------------------------------------------------------------ clients of a group


def test_a_group_clients_file_names_the_floating_endpoint_and_the_groups_key_and_every_host_routes_it(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    group = _create(api, net, hosts)
    clients = f"/v1/networks/{net['id']}/clients"
    code, out = api.call("POST", clients, {"name": "phone", "gateway": group["id"]})
    assert code == 409 and out["error"]["code"] == "group_key_missing", out
    assert api.ok("GET", clients)["clients"] == [], "a refused client is not half written"
    code, stored, key = _upload(api, net, group, hosts, "g1", 1, ("g1", "g2", "g3"))
    assert code == 200 and stored["new_key"] and stored["coverage"]["pending"] == [], stored
    assert _broadcasts(service, net)[-1].groups[0].public_key == key.public_key

    issued = api.ok("POST", clients, {"name": "phone", "gateway": group["id"]})
    text = issued["config"]
    assert f"Endpoint = {FLOATING}" in text and f"PublicKey = {key.public_key}" in text
    cid = issued["client"]["id"]
    status = api.http.get(f"{clients}/{cid}/config", headers={"Authorization": f"Bearer {api.admin_key}"})
    stored_file = status.body.decode() if isinstance(status.body, bytes) else str(status.body)
    assert f"Endpoint = {FLOATING}" in stored_file and f"PublicKey = {key.public_key}" in stored_file
    address = f"{issued['client']['ipv4']}/32"
    carriers = {}
    for name in NAMES:
        h = hosts[name]
        [snap] = api.ok("GET", f"/v1/hosts/{h['id']}/config?v=5", token=h["token"])["networks"]
        assert all(p["host_id"] != cid for p in snap["peers"]), f"{name} peers with a group client"
        carriers[name] = [p["host_id"] for p in snap["peers"] if address in p["allowed_ips"]]
    g1, g2 = hosts["g1"]["id"], hosts["g2"]["id"]
    # no active member recorded yet: the first member by priority, and g1 itself sends them to g2
    assert carriers == {"g1": [g2], "g2": [g1], "g3": [g1], "a": [g1]}

    # connected as the member that serves it reports the handshake
    assert api.ok("GET", f"{clients}/{cid}")["connected"] is False
    service.status.record(hosts["g2"]["id"], {"v": 5, "type": "status", "agent_version": "0.2.0", "peers": [
        {"key": issued["client"]["public_key"], "handshake_age": 3, "rx": 10, "tx": 20,
         "endpoint": "198.18.7.7:40000"}]})
    link = api.ok("GET", f"{clients}/{cid}")
    assert (link["connected"], link["endpoint"], link["rx_bytes"]) == (True, "198.18.7.7:40000", 10)


# ------------------------------------------------------------------ the key


def test_the_key_flows_only_members_read_it_a_new_version_needs_rotate_key_and_removal_says_who_knows_it(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    group = _create(api, net, hosts)
    path = f"{_groups(net)}/{group['id']}"
    code, out = api.call("GET", f"{path}/key", token=hosts["a"]["token"])
    assert code == 403 and "not a member" in out["error"]["message"]
    code, out = api.call("GET", f"{path}/key")
    assert code == 401, "an admin key is not a member's token"
    first = api.ok("GET", f"{path}/key", token=hosts["g1"]["token"])
    assert first["record"] is None and first["make"]["version"] == 1
    assert set(first["make"]["recipients"]) == set(_ids(hosts, "g1", "g2", "g3"))

    code, _, key = _upload(api, net, group, hosts, "g1", 1, ("g1", "g2"))
    assert code == 200
    g2_view = api.ok("GET", f"{path}/key", token=hosts["g2"]["token"])
    assert g2_view["coverage"]["pending"] == [hosts["g3"]["id"]]
    assert g2_view["seal_to"] == {hosts["g3"]["id"]: hosts["g3"]["pair"].public_key}
    assert g2_view["make"] is None
    sent = len(_broadcasts(service, net))
    code, more, _ = _upload(api, net, group, hosts, "g2", 1, ("g3",), key=key)
    assert code == 200 and not more["new_key"] and more["coverage"]["pending"] == []
    assert len(_broadcasts(service, net)) == sent, "more copies change nothing hosts see"

    code, out, _ = _upload(api, net, group, hosts, "g2", 2, ("g1", "g2", "g3"))
    assert code == 409 and out["error"]["code"] == "rotation_not_requested", out
    removed = api.ok("DELETE", f"{path}/members/{hosts['g3']['id']}", status=200)
    assert removed["still_knows_key"] is True and "rotate-key" in removed["message"]
    assert removed["group"]["key"]["still_know"] == [hosts["g3"]["id"]]
    assert removed["group"]["members"] == _ids(hosts, "g1", "g2")

    asked = api.ok("POST", f"{path}/rotate-key", status=202)
    assert (asked["version"], asked["maker"]) == (2, hosts["g1"]["id"])
    assert api.ok("GET", f"{path}/key", token=hosts["g2"]["token"])["make"] is None
    assert api.ok("GET", f"{path}/key", token=hosts["g1"]["token"])["make"]["version"] == 2
    code, rotated, new_key = _upload(api, net, group, hosts, "g1", 2, ("g1", "g2"))
    assert code == 200 and rotated["new_key"] and new_key.public_key in rotated["notice"]
    after = api.ok("GET", path)
    assert (after["public_key"], after["key_version"]) == (new_key.public_key, 2)
    assert after["key"]["still_know"] == []
    assert after["key_rotation_requested"] is None
    assert member_crypto.open_entry(_record(api, path, hosts["g2"]), hosts["g2"]["id"],
                                    hosts["g2"]["pair"].private_key) == new_key.private_key


def _record(api: Api, path: str, host: dict[str, Any]) -> Any:
    from chalicelib.domain.groupkey import GroupKeyRecord
    return GroupKeyRecord.from_item(api.ok("GET", f"{path}/key", token=host["token"])["record"])


def _spellings(private_key: str) -> list[str]:
    raw = base64.b64decode(private_key)
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return [private_key, private_key.rstrip("="), urlsafe, raw.hex()]


def test_the_plaintext_group_key_is_in_no_item_answer_broadcast_or_log_line(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger=member_crypto.log.name)
    group = _create(api, net, hosts)
    path = f"{_groups(net)}/{group['id']}"
    answers: list[Any] = []
    code, out, first = _upload(api, net, group, hosts, "g1", 1, ("g1", "g2"))
    answers.append(out)
    _, out, _ = _upload(api, net, group, hosts, "g2", 1, ("g3",), key=first)
    answers.append(out)
    answers.append(api.ok("DELETE", f"{path}/members/{hosts['g3']['id']}", status=200))
    answers.append(api.ok("POST", f"{path}/rotate-key", status=202))
    _, out, second = _upload(api, net, group, hosts, "g1", 2, ("g1", "g2"))
    answers.append(out)
    answers += [api.ok("GET", path), api.ok("GET", _groups(net)),
                api.ok("GET", f"{path}/key", token=hosts["g1"]["token"]),
                api.ok("GET", f"{path}/key", token=hosts["g2"]["token"])]
    answers.append(api.call("PUT", f"{path}/key", {"public_key": second.public_key, "version": 9,
                                                  "entries": []}, token=hosts["g1"]["token"]))
    client = service.deps.store._items.host._get_connection().connection.client  # type: ignore[attr-defined]
    table = service.deps.store._items.host.Meta.table_name  # type: ignore[attr-defined]
    items = [i for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
             for i in page["Items"]]
    stored = json.dumps(items)
    assert any(i["sk"]["S"].startswith("GKEY#") for i in items), "the key record is in the table"
    said = json.dumps(answers) + "".join(m.payload.decode() for m in service.deps.publisher.messages)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records, "the logs were captured, and are searched"
    for key in (first, second):
        assert key.public_key in stored + said
        for spelling in _spellings(key.private_key):
            assert spelling not in stored, "a private group key in the table"
            assert spelling not in said, "a private group key in an answer or broadcast"
            assert spelling not in logged, "a private group key in a log line"


# ------------------------------------------------------------------ the election


def _report(service: Service, host: dict[str, Any], group: dict[str, Any], role: str, epoch: int,
            down: list[str] | None = None) -> bool:
    """What a member's agent reports of its role (through the status topic and its rule)."""
    return service.status.record(host["id"], {
        "v": 5, "type": "status", "agent_version": "0.2.0",
        "groups": [{"id": group["id"], "role": role, "epoch": epoch, "down": down or []}]})


def test_the_control_plane_votes_like_a_member_and_the_record_follows_the_members_report(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    group = _create(api, net, hosts)
    claims = f"{_groups(net)}/{group['id']}/claims"
    g1, g2 = hosts["g1"], hosts["g2"]
    code, out = api.call("POST", claims, {"member": g1["id"], "epoch": 1, "incarnation": 0},
                         token=hosts["a"]["token"])
    assert code == 403, out
    code, out = api.call("POST", claims, {"member": g2["id"], "epoch": 1, "incarnation": 0},
                         token=g1["token"])
    assert code == 403 and "claims for itself" in out["error"]["message"]
    code, out = api.call("POST", claims, {"member": g1["id"], "epoch": 0, "incarnation": 0},
                         token=g1["token"])
    assert code == 400, out
    before = len(_broadcasts(service, net))
    assert api.ok("POST", claims, {"member": g1["id"], "epoch": 3, "incarnation": 0}, token=g1["token"],
                  status=200) == {"granted": True, "epoch": 3}
    recorded = api.ok("GET", f"{_groups(net)}/{group['id']}")
    assert (recorded["active"], recorded["epoch"]) == (None, 0), "a granted vote is no lease"
    assert len(_broadcasts(service, net)) == before, "a claim writes the promise alone"
    assert _report(service, g1, group, "active", 3)  # g1 got a quorum and says so
    recorded = api.ok("GET", f"{_groups(net)}/{group['id']}")
    assert (recorded["active"], recorded["epoch"]) == (g1["id"], 3)
    assert len(_broadcasts(service, net)) == before + 1
    assert _broadcasts(service, net)[-1].groups[0].active == g1["id"]
    assert api.ok("POST", claims, {"member": g1["id"], "epoch": 3, "incarnation": 0}, token=g1["token"],
                  status=200) == {"granted": True, "epoch": 3}, "a renewal"
    assert len(_broadcasts(service, net)) == before + 1, "a renewal writes the promise alone"
    assert api.ok("POST", claims, {"member": g2["id"], "epoch": 4, "incarnation": 0}, token=g2["token"],
                  status=200) == {"granted": False, "epoch": 3}, "g1 holds the promise"
    assert api.ok("GET", f"{_groups(net)}/{group['id']}")["active"] == g1["id"]


def test_concurrent_claims_of_two_members_are_never_both_granted(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    for round_ in range(4):
        group = api.ok("POST", _groups(net), {"name": f"edge{round_}", "members": _ids(hosts, "g1", "g2"),
                                              "floating_endpoint": f"198.18.9.{round_ + 1}:51900"})
        claims = f"{_groups(net)}/{group['id']}/claims"
        start = threading.Barrier(2)
        answers: dict[str, Any] = {}

        def claim(name: str, claims: str = claims, start: threading.Barrier = start,
                  answers: dict[str, Any] = answers) -> None:
            start.wait(timeout=10)
            body = {"member": hosts[name]["id"], "epoch": 1, "incarnation": 0}
            answers[name] = api.call("POST", claims, body, token=hosts[name]["token"])

        threads = [threading.Thread(target=claim, args=(n,)) for n in ("g1", "g2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert {code for code, _ in answers.values()} == {200}, answers
        granted = [n for n, (_, out) in answers.items() if out["granted"]]
        assert len(granted) == 1, answers
        promise = service.deps.store.get_group_promise(net["id"], group["id"])
        assert promise is not None and promise.member == hosts[granted[0]]["id"], "the winner holds the vote"
        assert api.ok("GET", f"{_groups(net)}/{group['id']}")["active"] is None, "a vote records nothing"


def test_a_members_report_that_it_is_active_at_a_higher_epoch_moves_the_record_in_one_broadcast(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    group = _create(api, net, hosts)
    g2 = hosts["g2"]["id"]

    def report(host: str, role: str, epoch: int) -> bool:
        return service.status.record(hosts[host]["id"], {
            "v": 5, "type": "status", "agent_version": "0.2.0",
            "groups": [{"id": group["id"], "role": role, "epoch": epoch, "down": [hosts["g1"]["id"]]}]})

    before = len(_broadcasts(service, net))
    assert report("g2", "active", 5)
    assert len(_broadcasts(service, net)) == before + 1
    assert api.ok("GET", f"{_groups(net)}/{group['id']}")["active"] == g2
    assert _broadcasts(service, net)[-1].groups[0].epoch == 5
    for host, role, epoch in (("g1", "active", 5), ("g3", "active", 4), ("g3", "standby", 9),
                              ("a", "active", 9)):
        assert report(host, role, epoch)
    assert len(_broadcasts(service, net)) == before + 1, "stale, standby or foreign reports change nothing"
    recorded = api.ok("GET", f"{_groups(net)}/{group['id']}")
    assert (recorded["active"], recorded["epoch"]) == (g2, 5)
    # every host now routes the group's clients to the recorded active member
    [snap] = api.ok("GET", f"/v1/hosts/{hosts['a']['id']}/config?v=5", token=hosts["a"]["token"])["networks"]
    assert snap["groups"][0]["active"] == g2
