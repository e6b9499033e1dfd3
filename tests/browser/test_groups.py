"""HA gateway groups in the dashboard (issues 11 and 12): a real headless Chromium against a real local stack.

The members are hosts registered through the API with WireGuard key pairs this test holds (no agent
runs): what an agent would do is done through the API as that member (its host token): upload the
group's key sealed to the members (``agent/groupkey.py``'s crypto), and claim the group in its election,
which the control plane records as the active member. The open page must show each change without a
reload; the operator's own actions (create, priority, a client, add/remove a member, delete, rotate-key)
are made on the page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import expect

from agent import groupkey as member_crypto
from chalicelib import wgkeys
from chalicelib.domain import protocol
from chalicelib.domain.groupkey import SealContext
from tests.integration.conftest import Creds, MqttTestClient, make_csr
from tests.integration.test_local_stack import call

from .conftest import DESKTOP, PHONE, SHOTS, shoot
from .test_dashboard import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FLOATING = "198.18.40.100:51900"


def register(stack: dict[str, Any], token: str, name: str, i: int, directory: Path) -> dict[str, Any]:
    """A host registered as its agent would, with a WireGuard key pair this test keeps (to seal the key)
    and its MQTT certificate (to send status reports as that host)."""
    pair = wgkeys.new_key_pair()
    tls_key, csr = make_csr()
    status, reg = call(stack, "POST", "/v1/hosts", {
        "name": name, "wg_public_key": pair.public_key, "listen_port": 51820,
        "endpoints": [f"198.18.40.{i}:51820"], "csr_pem": csr}, token)
    assert status == 201, reg
    d = directory / name
    d.mkdir()
    (d / "key.pem").write_bytes(tls_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (d / "cert.pem").write_text(reg["certificate_pem"])
    (d / "ca.pem").write_text(reg["ca_pem"])
    return {**reg["host"], "token": reg["host_token"], "pair": pair,
            "creds": Creds(d / "ca.pem", d / "cert.pem", d / "key.pem")}


def report_active(stack: dict[str, Any], host: dict[str, Any], gid: str, epoch: int, down: list[str]) -> None:
    """What a member's agent reports when its election made it active: a status report over MQTT with a
    ``groups`` row (the real path: broker → rule bridge → status function → DynamoDB)."""
    c = MqttTestClient(stack["mqtt_endpoint"], stack["mqtt_port"], host["creds"])
    c.connect()
    try:
        report = {"v": protocol.VERSION, "type": "status", "agent_version": "web-test", "endpoints": [],
                  "peers": [], "latency": [],
                  "groups": [{"id": gid, "role": "active", "epoch": epoch, "down": down}]}
        assert not c.publish(f"sm/h/{host['id']}/status", json.dumps(report).encode()).is_failure
    finally:
        c.close()


def upload_key(stack: dict[str, Any], net_id: str, gid: str, maker: dict[str, Any],
               recipients: list[dict[str, Any]]) -> dict[str, Any]:
    """What member ``maker``'s agent does for a group without a key: make one, seal it to each member,
    PUT it."""
    key = member_crypto.new_group_key()
    sender = maker["pair"]
    entries = []
    for r in recipients:
        context = SealContext(net_id, gid, 1, key.public_key, sender.public_key, r["pair"].public_key)
        entries.append({"recipient": r["id"], "recipient_public_key": r["pair"].public_key,
                        "sender": maker["id"], "sender_public_key": sender.public_key,
                        "ciphertext": member_crypto.seal(key.private_key, context, sender.private_key)})
    status, out = call(stack, "PUT", f"/v1/networks/{net_id}/gateway-groups/{gid}/key",
                       {"public_key": key.public_key, "version": 1, "entries": entries}, maker["token"])
    assert status == 200, out
    return out


def order(card: Any) -> list[str]:
    return [r.get_attribute("data-member") for r in card.locator("tr[data-member]").all()]


def test_an_operator_runs_a_gateway_group_and_sees_its_active_member_without_a_reload(page, stack, tmp_path):
    admin = stack["admin_key"]
    _, net = call(stack, "POST", "/v1/networks", {"name": "ha", "ipv4_cidr": "100.64.40.0/24"}, admin)
    nid = net["id"]
    base = f"/v1/networks/{nid}"
    _, key = call(stack, "POST", "/v1/enrollment-keys", {"networks": [nid], "uses": 3}, admin)
    hosts = {n: register(stack, key["token"], n, i + 1, tmp_path) for i, n in enumerate(("g1", "g2", "g3"))}
    for h in hosts.values():
        assert call(stack, "PUT", f"{base}/gateways/{h['id']}", {"remote_access": True}, admin)[0] == 200

    page.goto(stack["dashboard_url"] + f"#/networks/{nid}")
    sign_in(page, admin)
    expect(page.get_by_role("heading", name="Gateway groups")).to_be_visible()
    expect(page.get_by_text("No gateway groups in this network.")).to_be_visible()

    # Create a group of two gateways on the page: ticked in priority order, a floating endpoint.
    page.get_by_label("Group name").fill("edge")
    page.get_by_role("checkbox", name="g1", exact=True).check()
    page.get_by_role("checkbox", name="g2", exact=True).check()
    # A floating port the members' WireGuard already uses: the API's reason, on the form; nothing made.
    clash = {"name": "edge", "members": [hosts["g1"]["id"], hosts["g2"]["id"]],
             "floating_endpoint": "198.18.40.100:51820"}
    status, refused = call(stack, "POST", f"{base}/gateway-groups", clash, admin)
    assert status == 409, refused
    page.get_by_label("Floating endpoint").fill(clash["floating_endpoint"])
    page.get_by_role("button", name="Create group").click()
    # the API's own words (the group id it names is made anew for each attempt)
    expect(page.get_by_role("alert")).to_contain_text(refused["error"]["message"].split(" is host ")[1])
    assert call(stack, "GET", f"{base}/gateway-groups", None, admin)[1]["groups"] == []
    page.get_by_label("Floating endpoint").fill(FLOATING)
    page.get_by_role("button", name="Create group").click()
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.get_by_role("status").filter(has_text="Created group edge")).to_be_visible()
    card = page.locator("article[data-group='edge']")
    key_fact = card.locator("[data-fact='key']")
    expect(key_fact).to_contain_text("No key yet: waiting for a member to make the key")
    expect(card.locator("[data-fact='active']")).to_have_text("none yet: no member has taken over")
    expect(card).to_contain_text(FLOATING)
    expect(card.locator("tr[data-member]")).to_have_count(2)
    assert order(card) == ["g1", "g2"]
    (group,) = call(stack, "GET", f"{base}/gateway-groups", None, admin)[1]["groups"]
    assert (group["name"], group["members"], group["floating_endpoint"], group["key"]) == \
        ("edge", [hosts["g1"]["id"], hosts["g2"]["id"]], FLOATING, None)
    gid = group["id"]
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    shoot(page, "20-gateway-group-no-key")

    # The first member makes the key, then g2 wins the group's election: the page follows, no reload.
    upload_key(stack, nid, gid, hosts["g1"], [hosts["g1"], hosts["g2"]])
    expect(key_fact).to_have_text("Version 1; 2 of 2 members hold it.")
    expect(card.locator("tr[data-member='g2'] td[data-label='Key']")).to_have_text(
        "holds the key (version 1)")
    status, vote = call(stack, "POST", f"{base}/gateway-groups/{gid}/claims",
                        {"member": hosts["g2"]["id"], "epoch": 1, "incarnation": 0}, hosts["g2"]["token"])
    assert status == 200 and vote["granted"], vote
    # the control plane's vote is one of several: the record follows g2's report that it is active
    assert call(stack, "GET", f"{base}/gateway-groups/{gid}", None, admin)[1]["active"] is None
    report_active(stack, hosts["g2"], gid, 1, [])
    expect(card.locator("[data-fact='active']")).to_have_text("g2 (epoch 1)")
    expect(card.locator("tr[data-member='g2'] td[data-label='Role']")).to_have_text("Active")
    expect(card.locator("tr[data-member='g1'] td[data-label='Role']")).to_have_text("Standby")
    assert page.evaluate("window.__sameDocument") is True
    shoot(page, "21-gateway-group-active")

    # Priority: g2 first.
    page.get_by_role("button", name="Move g2 up in the priority of group edge").click()
    expect(card.locator("tr[data-member]").first).to_have_attribute("data-member", "g2")
    assert call(stack, "GET", f"{base}/gateway-groups/{gid}", None, admin)[1]["members"] == \
        [hosts["g2"]["id"], hosts["g1"]["id"]]

    # A client with the group as its gateway: its file names the floating endpoint and the group's key.
    page.get_by_label("Client name").fill("laptop")
    page.get_by_label("Through gateway").select_option(label="group edge")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/clients")) as answer:
        page.get_by_role("button", name="Add client").click()
    created = answer.value.json()
    assert answer.value.status == 201, created
    assert created["client"]["gateway"] == gid
    public_key = call(stack, "GET", f"{base}/gateway-groups/{gid}", None, admin)[1]["public_key"]
    assert f"Endpoint = {FLOATING}" in created["config"] and f"PublicKey = {public_key}" in created["config"]
    page.get_by_role("button", name="Done").click()
    expect(card.locator("[data-fact='clients']")).to_have_text("Clients served: laptop (not connected)")
    expect(page.locator("tr[data-client='laptop'] td[data-label='Gateway']")).to_have_text("group edge")

    # A failover: g1 finds g2 down and its election makes it active at epoch 2; its status report says so.
    report_active(stack, hosts["g1"], gid, 2, [hosts["g2"]["id"]])
    expect(card.locator("[data-fact='active']")).to_have_text("g1 (epoch 2)")
    expect(card.locator("tr[data-member='g1'] td[data-label='Role']")).to_have_text("Active")
    expect(card.locator("tr[data-member='g2'] td[data-label='Role']")).to_have_text("Standby")
    assert page.evaluate("window.__sameDocument") is True

    # Add g3 (waits for a copy of the key), then remove g2: it still knows the key, and the page says so.
    page.get_by_label("Gateway to add to group edge").select_option(label="g3")
    page.get_by_role("button", name="Add member").click()
    expect(card.locator("tr[data-member='g3'] td[data-label='Key']")).to_have_text(
        "waiting for a copy of the key from a member")
    page.get_by_role("button", name="Remove g2 from group edge").click()
    page.get_by_role("button", name="Remove", exact=True).click()
    said = card.get_by_role("status")
    expect(said).to_contain_text(
        f"g2 is removed from group {gid} but still knows the group's private key (version 1)")
    expect(card.get_by_role("button", name="Rotate the key of edge now")).to_be_visible()
    expect(card.locator("[data-fact='still-know']")).to_contain_text(
        "Removed from the group but still knowing its private key: g2")
    assert order(card) == ["g1", "g3"]
    expect(card.locator("[data-fact='active']")).to_have_text("g1 (epoch 2)")
    assert call(stack, "GET", f"{base}/gateway-groups/{gid}", None, admin)[1]["key"]["still_know"] == \
        [hosts["g2"]["id"]]
    shoot(page, "22-gateway-group-member-removed")
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):  # the group alone, to look at closely
        page.set_viewport_size(size)
        card.screenshot(path=str(SHOTS / f"22-gateway-group-card-{label}.png"))
    page.set_viewport_size(DESKTOP)

    # Delete is refused while laptop names the group: the API's reason and what to do here.
    status, refused = call(stack, "DELETE", f"{base}/gateway-groups/{gid}", None, admin)
    assert status == 409 and refused["error"]["code"] == "group_in_use", refused
    page.get_by_role("button", name="Delete group edge").click()
    page.get_by_role("button", name="Delete", exact=True).click()
    alert = card.get_by_role("alert")
    expect(alert).to_contain_text(refused["error"]["message"])
    expect(alert).to_contain_text('delete those clients under "Remote-access clients" below')
    expect(card).to_be_visible()
    shoot(page, "23-gateway-group-delete-refused")

    # Rotate-key from the removal's offer: a member makes the new key; client files must be fetched again.
    card.get_by_role("button", name="Rotate the key of edge now").click()
    expect(card.get_by_role("status")).to_contain_text("makes key version 2")
    expect(card.get_by_role("status")).to_contain_text("must be downloaded again")
    expect(card.get_by_role("status")).to_contain_text("Clients of this group: laptop")
    assert call(stack, "GET", f"{base}/gateway-groups/{gid}", None, admin)[1]["key_rotation_requested"] == 2
    expect(key_fact).to_contain_text("A new key (version 2) was asked for")
    assert page.evaluate("window.__sameDocument") is True

    # Once no client names it, the group is deleted.
    page.get_by_role("button", name="Delete client laptop").click()
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(card.locator("[data-fact='clients']")).to_have_text("Clients served: none")
    page.get_by_role("button", name="Delete group edge").click()
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.get_by_text("No gateway groups in this network.")).to_be_visible()
    assert call(stack, "GET", f"{base}/gateway-groups", None, admin)[1]["groups"] == []
