"""The web dashboard as an operator uses it: a real headless Chromium against a real local stack.

One journey, in the order a first-time operator takes it: sign in (a wrong key first), create a
network (a bad range first, to see the API's own message), create an enrollment key and copy
its token (shown once), edit the network (a refused MTU first), join a host with that token (a
real ``skymesh-agent`` process; its WireGuard device is the in-memory backend, as in
tests/integration/test_agent_cli.py, so no root is needed) and watch it come online without
reloading, make it a gateway and add a remote-access client (its QR code, read back with
zbarimg, is the file the API answered), disable the client, revoke the key, delete the network
(refused while the host is in it, then with its hosts), sign out. Then a failing API (500,
unreachable) must show a message a person can act on, never a blank page.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from chalicelib.domain import protocol
from tests.integration.conftest import MqttTestClient
from tests.integration.test_agent_offline import join_host
from tests.integration.test_local_stack import call, enroll

from .conftest import DESKTOP, PHONE, SHOTS, shoot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ONLINE_WAIT_MS = 45_000  # join → MQTT connect → first status report → bridge → DynamoDB → next refresh
OFFLINE_WAIT_MS = 8_000  # the agent's offline report (≈ 0.1 s to the API) + one refresh (3 s), with margin


def sign_in(page: Any, key: str) -> None:
    page.get_by_label("Admin key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def no_key_kept(page: Any, key: str) -> None:
    """The admin key is in no URL and in none of the browser's storage."""
    assert key not in page.url
    stored = page.evaluate("JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage),"
                           " document.cookie])")
    assert key not in stored


def decode_qr(image: Any, path: Path) -> str:
    """What the QR code shown in ``image`` (a locator) says, read back with zbarimg from a screenshot."""
    image.screenshot(path=str(path))
    read = subprocess.run(["zbarimg", "--raw", "-q", str(path)], capture_output=True, timeout=30, check=False)
    assert read.returncode == 0, read.stderr
    return read.stdout.decode().strip()


def test_an_operator_signs_in_creates_a_network_and_a_key_and_sees_a_host_come_online(page, stack, tmp_path):
    admin = stack["admin_key"]
    assert stack["dashboard_url"].startswith(stack["api_url"])  # the API's own origin: no CORS
    page.goto(stack["dashboard_url"])
    expect(page.get_by_role("heading", name="skymesh")).to_be_visible()
    shoot(page, "01-sign-in")

    # A wrong key: a clear message, still signed out.
    sign_in(page, "skm_ak_" + "x" * 40)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("That admin key was not accepted")
    expect(alert).to_contain_text(".skymesh/local.json")
    shoot(page, "02-sign-in-wrong-key")
    sign_in(page, admin)
    expect(page.get_by_role("heading", name="Networks", exact=True)).to_be_visible()
    no_key_kept(page, admin)

    # A bad range: the API's own validation message, word for word.
    bad = {"name": "office", "ipv4_cidr": "100.64.0.0/33"}
    status, refused = call(stack, "POST", "/v1/networks", bad, admin)
    assert status == 400, refused
    page.get_by_label("Name").fill(bad["name"])
    page.get_by_label("IPv4 range (CIDR)").fill(bad["ipv4_cidr"])
    page.get_by_role("button", name="Create network").click()
    expect(page.get_by_role("alert")).to_contain_text(refused["error"]["message"])
    shoot(page, "03-network-bad-range")
    page.get_by_label("IPv4 range (CIDR)").fill("100.64.0.0/24")
    page.get_by_role("button", name="Create network").click()
    expect(page.get_by_role("status")).to_contain_text("Created office (100.64.0.0/24")
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.get_by_role("link", name="office")).to_be_visible()
    shoot(page, "04-networks")
    status, listed = call(stack, "GET", "/v1/networks", None, admin)
    assert [n["name"] for n in listed["networks"]] == ["office"]  # really created, once

    # An enrollment key: the token is on screen once, and the copy button copies it.
    page.get_by_role("link", name="Enrollment keys").click()
    page.get_by_role("checkbox", name=re.compile("office")).check()
    page.get_by_label("Hosts it may enroll").fill("2")
    page.get_by_role("button", name="Create key").click()
    token_field = page.get_by_role("textbox", name="Enrollment token")
    expect(token_field).to_have_value(re.compile(r"^skm_ek_"))
    token = token_field.input_value()
    page.get_by_role("button", name="Copy the enrollment token").click()
    expect(page.get_by_text("Copied to the clipboard.")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == token
    shoot(page, "05-key-token-once")
    page.get_by_role("button", name="I have copied it").click()
    expect(page.get_by_role("textbox", name="Enrollment token")).to_have_count(0)
    expect(page.get_by_text("1 of 2").or_(page.get_by_text("2 of 2"))).to_be_visible()
    assert token not in page.content()  # gone from the page: shown once
    shoot(page, "06-keys")

    # A host joins with that token; the open hosts page shows it come online without a reload.
    page.get_by_role("link", name="Networks").click()
    page.get_by_role("link", name="office").click()
    expect(page.get_by_role("heading", name="office")).to_be_visible()
    expect(page.get_by_text("No hosts in this network yet")).to_be_visible()

    # Edit its settings: a value the API refuses shows its reason; a good one is saved.
    net_id = listed["networks"][0]["id"]
    status, refused = call(stack, "PATCH", f"/v1/networks/{net_id}", {"mtu": 100}, admin)
    assert status == 400, refused
    page.get_by_role("button", name="Edit settings").click()
    page.get_by_label("MTU").fill("100")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("alert")).to_contain_text(refused["error"]["message"])
    page.get_by_label("MTU").fill("1380")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("button", name="Edit settings")).to_be_visible()
    expect(page.locator(".facts")).to_contain_text("1380")
    assert call(stack, "GET", f"/v1/networks/{net_id}", None, admin)[1]["mtu"] == 1380
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    agent = join_host(stack["api_url"], token, "web-host", tmp_path)
    try:
        row = page.locator("tr[data-host='web-host']")
        expect(row).to_be_visible()
        expect(row.get_by_text("Online", exact=True)).to_be_visible(timeout=ONLINE_WAIT_MS)
        status, hosts = call(stack, "GET", "/v1/hosts", None, admin)
        (host,) = hosts["hosts"]
        expect(row).to_contain_text(host["addresses"][0]["ipv4"])
        expect(row).to_contain_text("198.18.12.1:51820")
        expect(row).to_contain_text(host["status"]["agent_version"])
        assert page.evaluate("window.__sameDocument") is True
        shoot(page, "07-network-hosts")

        # Make it a gateway with remote access, add a client: its file and QR code are shown
        # once, and the QR code on the page decodes to the very file the API answered.
        page.get_by_label("Host", exact=True).select_option(label="web-host")
        page.get_by_role("button", name="Make gateway").click()
        expect(page.locator("tr[data-gateway='web-host']")).to_contain_text("198.18.12.1:51820")
        page.get_by_label("Client name").fill("phone")
        with page.expect_response(lambda r: r.request.method == "POST" and "/clients" in r.url) as answer:
            page.get_by_role("button", name="Add client").click()
        created = answer.value.json()
        assert answer.value.status == 201, created
        qr = page.get_by_role("img", name="QR code of the WireGuard file of phone, for the WireGuard app")
        expect(qr).to_be_visible()
        expect(page.get_by_role("textbox", name="WireGuard file")).to_have_value(created["config"])
        assert decode_qr(qr, tmp_path / "qr.png") == created["config"].strip()
        download = page.get_by_role("link", name="Download phone.conf")
        expect(download).to_have_attribute("download", "phone.conf")
        shoot(page, "08-client-file-once")
        page.get_by_role("button", name="Done").click()
        expect(qr).to_have_count(0)
        client_row = page.locator("tr[data-client='phone']")
        expect(client_row).to_contain_text("Not connected")
        expect(client_row).to_contain_text(created["client"]["ipv4"])
        page.get_by_role("button", name="Disable client phone").click()
        expect(client_row).to_contain_text("Disabled")
        assert call(stack, "GET", f"/v1/networks/{net_id}/clients/{created['client']['id']}", None,
                    admin)[1]["enabled"] is False
        shoot(page, "09-gateways-and-clients")

        # Its agent stops (as systemd stops it): the open page shows the host offline within
        # seconds, without a reload (the agent's last word, not the 660 s silence rule).
        agent.proc.send_signal(signal.SIGTERM)
        expect(row.get_by_text("Offline", exact=True)).to_be_visible(timeout=OFFLINE_WAIT_MS)
        assert agent.proc.wait(timeout=30) == 0
        expect(page.get_by_text("0 of 1 online.")).to_be_visible()
        assert page.evaluate("window.__sameDocument") is True
        shoot(page, "09b-host-offline")
    finally:
        agent.stop()

    # Revoke the key: the list says so, and the API refuses its token from now on.
    page.get_by_role("link", name="Enrollment keys").click()
    (key,) = call(stack, "GET", "/v1/enrollment-keys", None, admin)[1]["enrollment_keys"]
    page.get_by_role("button", name=f"Revoke key {key['id']}").click()
    page.get_by_role("button", name="Revoke", exact=True).click()
    expect(page.locator(f"tr[data-key='{key['id']}']")).to_contain_text("Revoked")
    assert call(stack, "GET", f"/v1/enrollment-keys/{key['id']}", None, admin)[1]["revoked"] is True

    # Delete the network: refused while a host is in it (the API's reason on screen), then
    # deleted with its hosts removed once the operator confirms that.
    status, refused = call(stack, "DELETE", f"/v1/networks/{net_id}", None, admin)
    assert status == 409, refused
    page.get_by_role("link", name="Networks").click()
    page.get_by_role("button", name="Delete network office").click()
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text(refused["error"]["message"])
    shoot(page, "10-network-delete-refused")
    page.get_by_role("button", name="Remove its hosts and delete office").click()
    page.get_by_role("button", name="Remove hosts and delete").click()
    expect(page.get_by_text("No networks yet")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)
    assert call(stack, "GET", "/v1/networks", None, admin)[1]["networks"] == []

    # Signing out forgets the key: the app asks for it again wherever one goes.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Admin key")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("signed out")
    page.goto(stack["dashboard_url"] + "#/keys")
    expect(page.get_by_label("Admin key")).to_be_visible()
    no_key_kept(page, admin)


def test_a_failing_api_shows_what_to_do_not_a_blank_page(page, stack):
    page.goto(stack["dashboard_url"])
    sign_in(page, stack["admin_key"])
    expect(page.get_by_role("heading", name="Networks", exact=True)).to_be_visible()

    # The API answers 500 without its error shape (a crashed handler, a proxy's page).
    page.route("**/v1/enrollment-keys*", lambda route: route.fulfill(status=500, body="<h1>oops</h1>"))
    page.get_by_role("link", name="Enrollment keys").click()
    alert = page.get_by_role("alert").filter(has_text="HTTP 500")
    expect(alert).to_contain_text("Try again in a moment")
    expect(alert.get_by_role("button", name="Try again")).to_be_visible()
    shoot(page, "11-api-500")

    # Then the API cannot be reached at all; the retry says so, and works once it is back.
    page.unroute("**/v1/enrollment-keys*")
    page.route("**/v1/enrollment-keys*", lambda route: route.abort("connectionrefused"))
    alert.get_by_role("button", name="Try again").click()
    down = page.get_by_role("alert").filter(has_text="could not be reached")
    expect(down).to_contain_text("make up")
    shoot(page, "12-api-unreachable")
    page.unroute("**/v1/enrollment-keys*")
    down.get_by_role("button", name="Try again").click()
    expect(page.get_by_role("alert")).to_have_count(0)
    listed = page.get_by_role("table", name="Enrollment keys").or_(
        page.get_by_text("No enrollment keys yet."))
    expect(listed).to_be_visible()

    # An answer the dashboard does not expect (an API newer or older than it): a message, and
    # the rest of the dashboard still works.
    page.route("**/v1/enrollment-keys*", lambda route: route.fulfill(
        status=200, content_type="application/json",
        body=json.dumps({"enrollment_keys": [{"id": "key_unexpected"}], "next_cursor": None})))
    page.get_by_role("link", name="Networks").click()
    page.get_by_role("link", name="Enrollment keys").click()
    expect(page.get_by_role("alert")).to_contain_text("This page could not be shown")
    shoot(page, "13-unexpected-answer")
    page.unroute("**/v1/enrollment-keys*")
    page.get_by_role("link", name="Networks").click()
    expect(page.get_by_role("heading", name="Create a network")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)

    page.reload()  # the key lived in the page's memory only: a reload asks for it again
    expect(page.get_by_label("Admin key")).to_be_visible()
    no_key_kept(page, stack["admin_key"])


def test_the_latency_heat_map_shows_what_the_hosts_measured(page, stack, tmp_path):
    """Reports travel the real path (MQTT as the host → bridge → DynamoDB → API → page)."""
    admin = stack["admin_key"]
    _, net = call(stack, "POST", "/v1/networks", {"name": "lab", "ipv4_cidr": "100.64.9.0/24"}, admin)
    _, key = call(stack, "POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 3}, admin)
    hosts = {n: enroll(stack, key["token"], n, tmp_path) for n in ("alpha", "beta", "gamma")}
    ids = {n: reg["host"]["id"] for n, (reg, _) in hosts.items()}
    measured = {
        "alpha": [{"host": ids["beta"], "rtt": 4.2, "loss": 0, "up": True},
                  {"host": ids["gamma"], "rtt": None, "loss": 100, "up": False}],
        "beta": [{"host": ids["alpha"], "rtt": 150.0, "loss": 10, "up": True}],
    }
    clients = []
    try:
        for n, rows in measured.items():
            c = MqttTestClient(stack["mqtt_endpoint"], stack["mqtt_port"], hosts[n][1])
            c.connect()
            clients.append(c)
            report = {"v": protocol.VERSION, "type": "status", "agent_version": "web-test",
                      "endpoints": ["198.18.9.1:51820"], "peers": [], "latency": rows}
            assert not c.publish(f"sm/h/{ids[n]}/status", json.dumps(report).encode()).is_failure
    finally:
        for c in clients:
            c.close()

    page.goto(stack["dashboard_url"] + f"#/networks/{net['id']}")
    sign_in(page, admin)  # the address asked for is kept across signing in
    expect(page.get_by_role("heading", name="lab")).to_be_visible()
    heat = page.get_by_role("table", name=re.compile("^Latency"))
    expect(heat.locator("td[data-from='alpha'][data-to='beta']")).to_have_text("4.2 ms")
    expect(heat.locator("td[data-from='alpha'][data-to='gamma']")).to_have_text("down (100% lost)")
    expect(heat.locator("td[data-from='beta'][data-to='alpha']")).to_have_text("150.0 ms, 10% lost")
    expect(heat.locator("td[data-from='beta'][data-to='gamma']")).to_have_text("not probed")
    rows = call(stack, "GET", f"/v1/networks/{net['id']}/latency", None, admin)[1]["rows"]
    assert len(rows) == 3, rows  # the page shows the API's rows, no more

    # Which host is relayed, and by whom, as the API's relays say: without a reload.
    status, relay = call(stack, "PUT", f"/v1/networks/{net['id']}/relays/{ids['alpha']}",
                         {"relayed": [ids["gamma"]]}, admin)
    assert status == 200, relay
    expect(page.locator("tr[data-host='gamma']")).to_contain_text("via relay alpha")
    expect(page.locator("tr[data-host='alpha']")).to_contain_text("direct · relays 1")
    expect(page.locator("tr[data-host='beta']")).to_contain_text("direct")
    shoot(page, "14-latency-and-relays")


LAN = "10.20.0.0/16"


def test_the_graph_shows_each_hosts_path_and_a_failover_without_a_reload(page, stack, tmp_path):
    """Gateways g1 and g2 serve one LAN, u1 uses it, r relays t. Hosts are MQTT clients with their own
    certificates (no agent: nothing probes anything); u1's report that its gateway is down travels
    the real path (MQTT → bridge → status and failover functions → DynamoDB → API → page)."""
    admin = stack["admin_key"]
    _, net = call(stack, "POST", "/v1/networks", {"name": "campus", "ipv4_cidr": "100.64.20.0/24"}, admin)
    _, key = call(stack, "POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 5}, admin)
    hosts = {n: enroll(stack, key["token"], n, tmp_path) for n in ("g1", "g2", "u1", "r", "t")}
    ids = {n: reg["host"]["id"] for n, (reg, _) in hosts.items()}
    name = {v: k for k, v in ids.items()}
    base = f"/v1/networks/{net['id']}"
    for g in ("g1", "g2"):
        assert call(stack, "PUT", f"{base}/gateways/{ids[g]}", {"egress": [LAN]}, admin)[0] == 200
    assert call(stack, "PUT", f"{base}/relays/{ids['r']}", {"relayed": [ids["t"]]}, admin)[0] == 200

    def uses(host: str) -> str:
        """The gateway the API's topology says ``host`` sends the LAN to now."""
        top = call(stack, "GET", f"{base}/topology", None, admin)[1]
        (h,) = [h for h in top["hosts"] if h["host_id"] == ids[host]]
        (r,) = [r for r in h["routes"] if r["destination"] == LAN]
        return name[r["gateway"]]

    was = uses("u1")
    other = "g2" if was == "g1" else "g1"
    page.goto(stack["dashboard_url"] + f"#/networks/{net['id']}")
    sign_in(page, admin)
    graph = page.get_by_role("img", name=re.compile("^Network graph"))
    expect(graph).to_be_visible()
    expect(graph.locator(f"[data-path='u1>{was}']")).to_have_count(1)
    expect(graph.locator("[data-path='t>r']")).to_have_count(1)  # t reaches everything through r
    expect(graph.locator(f"[data-path='r>{uses('r')}']")).to_have_count(1)  # and r sends the LAN on
    expect(page.locator("tr[data-host='u1'] td[data-label='Gateway']")).to_have_text(f"{LAN} → {was} (of 2)")
    expect(page.locator("tr[data-host='t'] td[data-label='Path']")).to_have_text("via relay r")
    expect(page.locator("li[data-paths='t']")).to_contain_text("reaches everything through relay r")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    shoot(page, "15-network-graph")

    # u1 finds its gateway down and says so: the page shows it moved and the link down, no reload.
    c = MqttTestClient(stack["mqtt_endpoint"], stack["mqtt_port"], hosts["u1"][1])
    c.connect()
    try:
        report = {"v": protocol.VERSION, "type": "status", "agent_version": "web-test", "endpoints": [],
                  "peers": [], "latency": [{"host": ids[was], "rtt": None, "loss": 100, "up": False},
                                           {"host": ids[other], "rtt": 5.0, "loss": 0, "up": True}]}
        assert not c.publish(f"sm/h/{ids['u1']}/status", json.dumps(report).encode()).is_failure
    finally:
        c.close()
    expect(page.locator("tr[data-host='u1'] td[data-label='Gateway']")).to_have_text(
        f"{LAN} → {other} (of 2)")
    expect(graph.locator(f"[data-path='u1>{other}']")).to_have_count(1)
    expect(graph.locator(f"[data-down='u1>{was}']")).to_contain_text("down")
    # the gateways table says which hosts each gateway carries now (HA: the active one)
    expect(page.locator(f"tr[data-gateway='{other}'] td[data-label='Used by']")).to_contain_text("u1")
    expect(page.locator(f"tr[data-gateway='{was}'] td[data-label='Used by']")).not_to_contain_text("u1")
    expect(page.locator("tr[data-host='u1']").get_by_text("Online", exact=True)).to_be_visible()
    assert uses("u1") == other  # the page says what the API says
    assert page.evaluate("window.__sameDocument") is True
    shoot(page, "16-network-graph-failover")
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):  # the picture alone, to look at closely
        page.set_viewport_size(size)
        page.locator("section.graph").screenshot(path=str(SHOTS / f"16-network-graph-only-{label}.png"))
    page.set_viewport_size(DESKTOP)

    # One host's paths only, chosen with a labelled control.
    page.get_by_label("Show the paths of").select_option(label="u1")
    expect(graph.locator("[data-path='t>r']")).to_have_count(0)
    expect(graph.locator(f"[data-path='u1>{other}']")).to_have_count(1)
    expect(page.locator("li[data-paths]")).to_have_count(1)
    shoot(page, "17-network-graph-one-host")


def test_a_network_page_whose_calls_fail_says_what_to_do(page, stack):
    admin = stack["admin_key"]
    _, net = call(stack, "POST", "/v1/networks", {"name": "flaky", "ipv4_cidr": "100.64.30.0/24"}, admin)
    # The topology answers 500 without the error shape: the page says what is not known and how to go on.
    page.route("**/topology", lambda route: route.fulfill(status=500, body="<h1>oops</h1>"))
    page.goto(stack["dashboard_url"] + f"#/networks/{net['id']}")
    sign_in(page, admin)
    expect(page.get_by_role("heading", name="flaky")).to_be_visible()
    alert = page.get_by_role("alert").filter(has_text="Which gateway and relay each host uses is not known")
    expect(alert).to_contain_text("HTTP 500")
    expect(alert).to_contain_text("Try again in a moment")
    shoot(page, "18-topology-500")
    page.unroute("**/topology")
    alert.get_by_role("button", name="Try again").click()
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.get_by_role("heading", name="Network graph")).to_be_visible()

    # A network that is gone (deleted in another tab): the API's own words, and the way back.
    missing = "net_" + "0" * len(net["id"].removeprefix("net_"))
    page.goto(stack["dashboard_url"] + f"#/networks/{missing}")
    expect(page.get_by_role("alert")).to_contain_text(
        f"network {missing} does not exist: it may have been deleted")
    expect(page.get_by_text("No hosts in this network yet")).to_have_count(0)  # nothing of a missing network
    expect(page.get_by_role("link", name="← All networks")).to_be_visible()
    shoot(page, "19-network-not-found")
