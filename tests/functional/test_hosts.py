from __future__ import annotations

import ipaddress
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import app as app_module
from chalicelib.domain import protocol

from .conftest import host_body, make_csr, wg_public_key

pytestmark = pytest.mark.memory_store  # about the API, not the database: no DynamoDB Local


@pytest.fixture
def net(api):
    return api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/24",
                                           "ipv6_cidr": "fd00:64::/64"})


@pytest.fixture
def key(api, net):
    return api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 10})


def _pub(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_registration_returns_addresses_certificate_mqtt_access_and_a_host_token(api, net, key):
    from cryptography.hazmat.primitives.asymmetric import ec
    csr, tls_key = make_csr(ec.generate_private_key(ec.SECP256R1()))
    reg = api.ok("POST", "/v1/hosts", {**host_body("web-1"), "csr_pem": csr}, token=key["token"])
    host = reg["host"]
    [addr] = host["addresses"]
    assert ipaddress.ip_address(addr["ipv4"]) in ipaddress.ip_network(net["ipv4_cidr"])
    assert ipaddress.ip_address(addr["ipv6"]) in ipaddress.ip_network(net["ipv6_cidr"])
    cert = x509.load_pem_x509_certificate(reg["certificate_pem"].encode())
    assert _pub(cert.public_key()) == _pub(tls_key.public_key()), "certificate carries the CSR key"
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == host["id"]
    assert reg["mqtt"]["client_id"] == host["id"]
    assert reg["mqtt"]["topics"] == {
        "subscribe": [f"sm/h/{host['id']}/in", f"sm/n/{net['id']}"],
        "publish": [f"sm/h/{host['id']}/status"]}
    assert reg["host_token"].startswith("skm_ht_")
    assert api.ok("GET", f"/v1/enrollment-keys/{key['id']}")["uses_left"] == 9


@pytest.mark.parametrize("field, value, message", [
    ("wg_public_key", "not-a-key", "not a WireGuard public key"),
    ("wg_public_key", "A" * 43 + "=", "all zeros"),
    ("csr_pem", "-----BEGIN CERTIFICATE REQUEST-----\nxx\n-----END CERTIFICATE REQUEST-----",
     "not a valid PEM"),
    ("csr_pem", "hello", "PEM certificate signing request"),
    ("listen_port", 70000, "out of range"),
    ("endpoints", ["1.2.3.4"], "host:port"),
    ("endpoints", ["::1:51820"], "brackets"),
    ("name", "bad name!", "not valid"),
    ("surprise", 1, "not a known field"),
])
def test_malformed_registration_is_400_and_consumes_no_use(api, key, field, value, message):
    code, out = api.call("POST", "/v1/hosts", {**host_body(), field: value}, token=key["token"])
    assert code == 400 and message in out["error"]["message"], out
    assert api.ok("GET", f"/v1/enrollment-keys/{key['id']}")["uses_left"] == 10


def test_a_wireguard_key_can_belong_to_one_host_only(api, key):
    body = host_body("a")
    api.ok("POST", "/v1/hosts", body, token=key["token"])
    code, out = api.call("POST", "/v1/hosts", {**body, "name": "b"}, token=key["token"])
    assert code == 409 and out["error"]["code"] == "public_key_in_use"
    assert api.ok("GET", f"/v1/enrollment-keys/{key['id']}")["uses_left"] == 9


def test_config_is_a_full_snapshot_each_host_sees_the_others(api, net, key):
    regs = [api.ok("POST", "/v1/hosts", host_body(f"h{i}"), token=key["token"]) for i in range(3)]
    me = regs[0]
    cfg = api.ok("GET", f"/v1/hosts/{me['host']['id']}/config", token=me["host_token"])
    [snap] = cfg["networks"]
    assert snap["full"] is True and snap["seq"] == snap["network"]["seq"] >= 1
    assert {m["host"] for m in snap["members"]} == {r["host"]["id"] for r in regs}
    assert sorted(p["host_id"] for p in snap["peers"]) == sorted(r["host"]["id"] for r in regs[1:])
    assert snap["interface"]["addresses"][0].endswith("/24")
    other = regs[1]["host"]
    peer = next(p for p in snap["peers"] if p["host_id"] == other["id"])
    assert peer["allowed_ips"] == [f"{other['addresses'][0]['ipv4']}/32",
                                   f"{other['addresses'][0]['ipv6']}/128"]
    assert snap["routes"] == [snap["network"]["ipv4_cidr"], snap["network"]["ipv6_cidr"]]


def test_host_tokens_work_for_their_own_host_only(api, key):
    a = api.ok("POST", "/v1/hosts", host_body("a"), token=key["token"])
    b = api.ok("POST", "/v1/hosts", host_body("b"), token=key["token"])
    code, out = api.call("GET", f"/v1/hosts/{b['host']['id']}/config", token=a["host_token"])
    assert code == 403 and "another host" in out["error"]["message"]
    code, _ = api.call("GET", "/v1/hosts", token=a["host_token"])
    assert code == 401
    code, _ = api.call("GET", f"/v1/hosts/{a['host']['id']}/config")  # admin key is not a host token
    assert code == 401


def test_every_change_is_one_broadcast_with_the_next_sequence_number(api, service, net, key):
    topic = protocol.network_topic(net["id"])
    a = api.ok("POST", "/v1/hosts", host_body("a"), token=key["token"])
    b = api.ok("POST", "/v1/hosts", host_body("b"), token=key["token"])
    new_key = wg_public_key()
    api.ok("PATCH", f"/v1/hosts/{a['host']['id']}",
           {"wg_public_key": new_key, "endpoints": ["198.18.0.99:51999"], "listen_port": 51999},
           token=a["host_token"])
    api.ok("DELETE", f"/v1/hosts/{b['host']['id']}")

    msgs = [protocol.decode(p) for p in service.deps.publisher.on(topic)]
    assert [m.seq for m in msgs] == [1, 2, 3, 4]
    assert [m.host_id for m in msgs[0].upsert] == [a["host"]["id"]]
    changed = msgs[2].upsert[0]
    assert (changed.public_key, changed.endpoints[0], changed.listen_port) == (
        new_key, "198.18.0.99:51999", 51999)
    assert msgs[3].remove == (b["host"]["id"],) and msgs[3].upsert == ()
    assert api.ok("GET", f"/v1/networks/{net['id']}")["seq"] == 4
    for m in msgs:  # only what changed travels, never the whole network
        assert len(m.upsert) + len(m.remove) == 1


def test_admin_cannot_rotate_a_hosts_wireguard_key(api, key):
    a = api.ok("POST", "/v1/hosts", host_body("a"), token=key["token"])
    code, out = api.call("PATCH", f"/v1/hosts/{a['host']['id']}", {"wg_public_key": wg_public_key()})
    assert code == 403 and "host itself" in out["error"]["message"]
    out = api.ok("PATCH", f"/v1/hosts/{a['host']['id']}", {"name": "renamed", "tags": ["db"]})
    assert (out["name"], out["tags"]) == ("renamed", ["db"])


def test_delete_frees_addresses_and_revokes_the_certificate(api, service, net):
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 300})
    a = api.ok("POST", "/v1/hosts", host_body("a"), token=key["token"])
    host_id = a["host"]["id"]
    cert = x509.load_pem_x509_certificate(a["certificate_pem"].encode())
    api.ok("DELETE", f"/v1/hosts/{host_id}")
    assert api.call("GET", f"/v1/hosts/{host_id}")[0] == 404
    assert format(cert.serial_number, "x") in service.deps.identity.revoked
    assert host_id not in service.deps.identity.networks
    # Its running agent hears at once that it should resync (and so learns it is gone).
    inbox = [protocol.decode(p) for p in service.deps.publisher.on(protocol.host_inbox_topic(host_id))]
    assert inbox == [protocol.Command(name="resync")]
    code, _ = api.call("GET", f"/v1/hosts/{host_id}/config", token=a["host_token"])
    assert code == 401
    # The freed address is assignable again: fill the /24 completely (253 usable after .0/.255).
    taken = {api.ok("POST", "/v1/hosts", host_body(f"f{i}"), token=key["token"])["host"]
             ["addresses"][0]["ipv4"] for i in range(254)}
    assert a["host"]["addresses"][0]["ipv4"] in taken and len(taken) == 254
    code, out = api.call("POST", "/v1/hosts", host_body("full"), token=key["token"])
    assert code == 409 and "no free address" in out["error"]["message"]


def test_status_reports_show_hosts_online_until_reports_stop(api, service, key):
    a = api.ok("POST", "/v1/hosts", host_body("a"), token=key["token"])
    host_id = a["host"]["id"]
    assert api.ok("GET", f"/v1/hosts/{host_id}")["status"]["online"] is False
    report = json.loads(protocol.encode(protocol.StatusReport(agent_version="0.1.0",
                                                             endpoints=("198.18.0.10:51820",))))
    out = app_module.host_report({**report, "host_id": host_id}, None)
    assert out == {"recorded": True}
    st = api.ok("GET", f"/v1/hosts/{host_id}")["status"]
    assert st["online"] is True and st["agent_version"] == "0.1.0" and st["last_seen"]
    assert app_module.host_report({"v": 99, "host_id": host_id}, None) == {"recorded": False}

    now = service.deps.clock.now()
    service.deps.clock.now = lambda: now + service.deps.settings.offline_after + 1  # type: ignore
    event = api.client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event",
                                                detail={}, resources=[])
    assert api.client.lambda_.invoke("mark_offline", event).payload == {"offline": [host_id]}
    assert api.ok("GET", f"/v1/hosts/{host_id}")["status"]["online"] is False


def test_a_registration_refused_at_its_commit_leaves_no_certificate_nor_pending_identity(
        api, service, key):
    """The failure path undoes its own identity at once; the sweeper finds nothing left."""
    a = api.ok("POST", "/v1/hosts", host_body("a"), token=key["token"])
    code, out = api.call("POST", "/v1/hosts", {**host_body("b"), "wg_public_key": a["host"]["wg_public_key"]},
                         token=key["token"])
    assert code == 409 and out["error"]["code"] == "public_key_in_use"
    identity = service.deps.identity
    ((refused, certificate_id),) = identity.discarded
    assert certificate_id in identity.revoked and refused not in identity.networks
    assert service.deps.store.pending_identities() == []

    now = service.deps.clock.now()
    service.deps.clock.now = lambda: now + service.deps.settings.orphan_after + 1  # type: ignore
    event = api.client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event",
                                                detail={}, resources=[])
    assert api.client.lambda_.invoke("sweep_orphans", event).payload == {"discarded": []}
    assert api.ok("GET", f"/v1/hosts/{a['host']['id']}")["id"] == a["host"]["id"]  # untouched
