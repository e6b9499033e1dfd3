"""An agent that was away asks ``/config?known=net:seq`` and gets only what it missed.

After a broker outage every agent reconnects at once; the answer must be cheap when
nothing changed, carry exactly the broadcasts missed when little did, and fall back
to the full snapshot whenever the deltas cannot bring the agent to the current state.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from chalicelib.domain import protocol

from .conftest import host_body, wg_public_key


@pytest.fixture
def net(api):
    return api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/24"})


@pytest.fixture
def hosts(api, net):
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 10})
    return [api.ok("POST", "/v1/hosts", host_body(f"h{i}"), token=key["token"]) for i in range(3)]


def config(api, me, known: str | None = None):
    # v: the schema this agent speaks (as agent/api.py sends it); catch-ups are for current agents
    path = f"/v1/hosts/{me['host']['id']}/config?v={protocol.VERSION}" + (f"&known={known}" if known else "")
    return api.ok("GET", path, token=me["host_token"])


def seq_of(api, net) -> int:
    return api.ok("GET", f"/v1/networks/{net['id']}")["seq"]


def test_an_agent_that_is_current_gets_no_members(api, net, hosts):
    me, seq = hosts[0], seq_of(api, net)
    cfg = config(api, me, f"{net['id']}:{seq}")
    assert cfg["networks"] == []
    assert cfg["catch_ups"] == [{"network_id": net["id"], "seq": seq, "deltas": []}]


def test_the_deltas_missed_come_in_order_exactly_as_broadcast(api, service, net, hosts):
    me, other = hosts[0], hosts[1]
    seq = seq_of(api, net)
    new_key = wg_public_key()
    api.ok("PATCH", f"/v1/hosts/{other['host']['id']}", {"wg_public_key": new_key}, token=other["host_token"])
    api.ok("DELETE", f"/v1/hosts/{hosts[2]['host']['id']}")
    api.ok("PATCH", f"/v1/networks/{net['id']}", {"keepalive": 15})

    cfg = config(api, me, f"{net['id']}:{seq}")
    assert cfg["networks"] == []
    [c] = cfg["catch_ups"]
    assert (c["network_id"], c["seq"]) == (net["id"], seq + 3)
    sent = service.deps.publisher.on(protocol.network_topic(net["id"]))[-3:]
    assert [protocol.decode(d) for d in c["deltas"]] == [protocol.decode(p) for p in sent]
    assert c["deltas"][0]["upsert"][0]["key"] == new_key
    assert c["deltas"][1]["remove"] == [hosts[2]["host"]["id"]]
    assert "settings" not in c["deltas"][1] and c["deltas"][2]["settings"]["keepalive"] == 15


@pytest.mark.parametrize("behind", ["too_far", "ahead", "hole"])
def test_an_agent_the_deltas_cannot_bring_up_to_date_gets_the_full_snapshot(api, service, net, hosts, behind):
    me = hosts[0]
    seq = seq_of(api, net)
    if behind == "too_far":
        service.deps.settings = replace(service.deps.settings, delta_log_keep=1)
        api.ok("PATCH", f"/v1/hosts/{hosts[1]['host']['id']}", {"name": "renamed"})
        api.ok("PATCH", f"/v1/hosts/{hosts[1]['host']['id']}", {"name": "renamed-again"})
        known = seq
    elif behind == "ahead":  # the network was deleted and made again under the same id: impossible,
        known = seq + 5      # but an agent's cache from elsewhere must not stick
    else:
        # a delta that was never logged (the publisher died between seq and log):
        service.deps.store._delete_raw([(f"NET#{net['id']}", f"DELTA#{seq:012d}")])
        known = seq - 1
    cfg = config(api, me, f"{net['id']}:{known}")
    assert cfg["catch_ups"] == []
    [snap] = cfg["networks"]
    assert snap["seq"] == seq_of(api, net) and len(snap["members"]) == 3


def test_a_change_the_broker_outage_held_back_goes_out_with_the_first_catch_up(api, service, net, hosts):
    me, other = hosts[0], hosts[1]
    seq = seq_of(api, net)
    service.deps.publisher.fail = True  # the broker is down: the change is stored, not broadcast
    api.ok("PATCH", f"/v1/hosts/{other['host']['id']}", {"name": "while-down"})
    topic = protocol.network_topic(net["id"])
    sent_before = len(service.deps.publisher.on(topic))
    service.deps.publisher.fail = False  # it is back; the sweeper has not run yet

    cfg = config(api, me, f"{net['id']}:{seq}")
    [c] = cfg["catch_ups"]
    assert c["seq"] == seq_of(api, net) > seq
    assert {m["name"] for d in c["deltas"] for m in d["upsert"]} == {"while-down"}
    [sent] = service.deps.publisher.on(topic)[sent_before:]  # every other agent hears it live
    assert protocol.decode(sent).seq == c["seq"]


def test_while_the_broker_is_still_down_a_catch_up_is_the_full_snapshot(api, service, net, hosts):
    me, other = hosts[0], hosts[1]
    seq = seq_of(api, net)
    service.deps.publisher.fail = True
    api.ok("PATCH", f"/v1/hosts/{other['host']['id']}", {"name": "while-down"})
    cfg = config(api, me, f"{net['id']}:{seq}")
    assert cfg["catch_ups"] == []
    [snap] = cfg["networks"]
    assert "while-down" in {m["name"] for m in snap["members"]}


def test_networks_not_named_come_as_snapshots_and_networks_the_host_left_are_not_answered(api, net, hosts):
    me = hosts[0]
    other = api.ok("POST", "/v1/networks", {"name": "o", "ipv4_cidr": "100.65.0.0/24"})
    cfg = config(api, me, f"{other['id']}:3")  # a network it is not in, and not the one it is in
    assert cfg["catch_ups"] == []
    assert [s["network"]["id"] for s in cfg["networks"]] == [net["id"]]


@pytest.mark.parametrize("known", [
    "net_abc", "net_abc:", "net_abc:-1", "x:1", "net_abc:1;net_b:2", "net_abc:1234567890123456",
    ",".join(f"net_a{i:03d}:1" for i in range(65))])
def test_a_malformed_known_list_is_a_400_that_says_the_format(api, hosts, known):
    me = hosts[0]
    code, out = api.call("GET", f"/v1/hosts/{me['host']['id']}/config?known={known}", token=me["host_token"])
    assert code == 400 and "known" in out["error"]["message"], out
