"""``skymesh client …`` end to end over real HTTP (issue 9 §5): the key pair is made on the admin's
machine and only its public key reaches the API; NAME.conf (0600) is the one place the private
key is written."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from chalicelib import clientfile, wgkeys
from chalicelib.service import Service

from .conftest import Api, host_body
from .test_admin_cli import Cli, Result, api_url, cli  # noqa: F401 - the admin CLI's fixtures
from .test_clients import make_gateway

pytestmark = pytest.mark.memory_store


def _ok(result: Result) -> Result:
    assert result.code == 0, result
    assert result.err == "", result
    return result


def _private_key(text: str) -> str:
    [key] = [line.split(" = ", 1)[1] for line in text.splitlines() if line.startswith("PrivateKey = ")]
    return key


@pytest.fixture
def mesh(api: Api, service: Service) -> dict[str, Any]:
    net = api.ok("POST", "/v1/networks", {"name": "office", "ipv4_cidr": "100.64.0.0/24"})
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 2})
    gw = api.ok("POST", "/v1/hosts", host_body("gw", endpoints=["198.18.0.1:51820"]),
                token=key["token"])["host"]
    make_gateway(api, net["id"], gw["id"])
    return {"net": net, "gw": gw}


def test_client_create_makes_the_key_here_and_writes_a_0600_file_the_api_never_saw_the_key_of(
        cli: Cli, api: Api, mesh: dict[str, Any], service: Service, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "files"
    out.mkdir()
    result = _ok(cli("client", "create", "office", "phone", "--gateway", "gw", "--dns", "100.64.0.1",
                     "--out", str(out), "--qr"))
    path = out / "phone.conf"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    private = _private_key(text)
    [client] = api.ok("GET", f"/v1/networks/{mesh['net']['id']}/clients")["clients"]
    assert wgkeys.public_key_of(private) == client["public_key"] and not client["server_keyed"]
    assert clientfile.PRIVATE_KEY_PLACEHOLDER not in text and "does not hold" not in text
    assert "DNS = 100.64.0.1" in text and f"PublicKey = {mesh['gw']['wg_public_key']}" in text
    assert result.out.startswith(f"client phone created ({client['id']})") and str(path) in result.out
    assert "▀" in result.out or "█" in result.out or "▄" in result.out  # the QR code, in block characters
    assert private not in repr(vars(service.deps.store))

    refused = cli("client", "create", "office", "phone", "--gateway", "gw", "--out", str(out))
    assert refused.code == 1 and "exists" in refused.err
    assert len(api.ok("GET", f"/v1/networks/{mesh['net']['id']}/clients")["clients"]) == 1

    listed = _ok(cli("client", "list", "office")).out.splitlines()
    assert listed[0].split()[:5] == ["NAME", "ID", "IPV4", "GATEWAY", "STATE"]
    assert listed[1].split()[:5] == ["phone", client["id"], client["ipv4"], "gw", "-"]
    assert _ok(cli("client", "list", "office", "--json")).json() == {"clients": [client], "next_cursor": None}
    assert _ok(cli("client", "show", "office", "phone", "--json")).json() == client
    assert "Public key:" in _ok(cli("client", "show", "office", client["id"])).out

    config = _ok(cli("client", "config", "office", "phone")).out
    assert clientfile.PRIVATE_KEY_PLACEHOLDER in config and private not in config

    svg = tmp_path / "phone.svg"
    _ok(cli("client", "qr", "office", "phone", "--file", str(path), "--svg", str(svg)))
    assert svg.read_bytes().lstrip().startswith(b"<?xml")


def test_client_enable_disable_rotate_key_and_delete(cli: Cli, api: Api, mesh: dict[str, Any],  # noqa: F811
                                                     tmp_path: Path) -> None:
    _ok(cli("client", "create", "office", "laptop", "--gateway", mesh["gw"]["id"], "--out", str(tmp_path)))
    base = f"/v1/networks/{mesh['net']['id']}/clients"
    [client] = api.ok("GET", base)["clients"]
    one = f"{base}/{client['id']}"

    disabled = _ok(cli("client", "disable", "office", "laptop")).out
    assert disabled == f"client laptop disabled ({client['id']})\n"
    assert api.ok("GET", one)["enabled"] is False
    assert "disabled" in _ok(cli("client", "list", "office")).out
    _ok(cli("client", "enable", "office", "laptop"))
    assert api.ok("GET", one)["enabled"] is True

    old = _private_key((tmp_path / "laptop.conf").read_text())
    _ok(cli("client", "rotate-key", "office", "laptop", "--out", str(tmp_path)))
    new = _private_key((tmp_path / "laptop.conf").read_text())
    assert new != old and wgkeys.public_key_of(new) == api.ok("GET", one)["public_key"]

    assert _ok(cli("client", "delete", "office", "laptop")).out == f"client laptop deleted ({client['id']})\n"
    assert api.call("GET", one)[0] == 404
    missing = cli("client", "show", "office", "laptop")
    assert missing.code == 1 and "no client has the id or name 'laptop'" in missing.err
