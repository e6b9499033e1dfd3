"""The admin CLI end to end: real HTTP from ``skymesh.admin`` to a server that forwards each
request to the Chalice app (chalice.test.Client) on DynamoDB Local."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from skymesh import admin

from .conftest import Api, host_body

pytestmark = pytest.mark.memory_store  # about the API, not the database: no DynamoDB Local

_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive"}


def _forwarding_handler(api: Api) -> type[BaseHTTPRequestHandler]:
    """A handler that replays each HTTP request through ``api.http`` and sends back its answer."""

    class Forward(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            resp = api.http.request(self.command, self.path, headers=headers, body=body)
            payload = resp.body if isinstance(resp.body, bytes) else str(resp.body or "").encode()
            self.send_response(resp.status_code)
            for key, value in resp.headers.items():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass

    return Forward


@pytest.fixture
def api_url(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The base URL of a threaded HTTP server on 127.0.0.1 in front of the app."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _forwarding_handler(api))
    thread = threading.Thread(target=server.serve_forever, name="admin-cli-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Result]


@pytest.fixture
def cli(api: Api, api_url: str, tmp_path: Path) -> Cli:
    """Runs ``skymesh <argv> --api URL --key ADMIN_KEY`` in-process; flags can be left off."""

    def run(*argv: str, flags: bool = True, env: dict[str, str] | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        full = [*argv, "--api", api_url, "--key", api.admin_key] if flags else list(argv)
        code = admin.main(full, env={"SKYMESH_HOME": str(tmp_path / "home"), **(env or {})},
                          out=out, err=err)
        assert "Traceback" not in err.getvalue()
        return Result(code, out.getvalue(), err.getvalue())

    return run


def _ok(result: Result) -> Result:
    assert result.code == 0, result
    assert result.err == "", result
    return result


def test_network_create_list_show_update(cli: Cli, api: Api) -> None:
    out = _ok(cli("network", "create", "office", "--ipv4", "100.64.0.0/16", "--mtu", "1380")).out
    assert out.startswith("network office created (net_")
    net = api.ok("GET", "/v1/networks")["networks"][0]
    assert "MTU:          1380" in out and f"ID:           {net['id']}" in out

    lines = _ok(cli("network", "list")).out.splitlines()
    assert lines[0].split() == ["NAME", "ID", "IPV4", "IPV6", "HOSTS", "ONLINE", "CREATED"]
    assert lines[1].split()[:6] == ["office", net["id"], "100.64.0.0/16", net["ipv6_cidr"], "0", "0"]
    assert lines[1].endswith((" ago", " just now"))
    assert len(lines) == 2

    assert _ok(cli("network", "list", "--json")).json() == api.ok("GET", "/v1/networks")
    assert _ok(cli("network", "show", "office", "--json")).json() == net
    assert "Hosts: none yet" in _ok(cli("network", "show", net["id"])).out

    out = _ok(cli("network", "update", "office", "--name", "hq", "--keepalive", "0")).out
    assert out.startswith(f"network hq updated ({net['id']})") and "Keepalive:    off" in out
    assert api.ok("GET", f"/v1/networks/{net['id']}")["name"] == "hq"


def test_key_create_prints_the_token_once_then_list_and_revoke(cli: Cli, api: Api) -> None:
    _ok(cli("network", "create", "office", "--ipv4", "100.64.0.0/16"))
    _ok(cli("network", "create", "lab", "--ipv4", "100.65.0.0/16"))
    result = _ok(cli("key", "create", "--network", "office", "--network", "lab", "--uses", "2",
                     "--expires-in", "7d", "--tag", "ci"))
    token = next(line.strip() for line in result.out.splitlines() if line.strip().startswith("skm_ek_"))
    assert result.out.count(token) == 1 and "shown only once" in result.out
    assert "office, lab" in result.out and "2/2 left" in result.out and "in 7d" in result.out
    key_id = token.split("_")[2] + "_" + token.split("_")[3]

    # The token enrolls a host into both networks, with the tag.
    host = api.ok("POST", "/v1/hosts", host_body("web"), token=token)["host"]
    assert len(host["addresses"]) == 2 and host["tags"] == ["ci"]

    created = _ok(cli("key", "create", "--network", "lab", "--unlimited", "--json")).json()
    assert created["unlimited"] and created["token"].startswith("skm_ek_")

    lines = _ok(cli("key", "list")).out.splitlines()
    assert len(lines) == 3
    row = next(line for line in lines if line.startswith(key_id))
    assert "office,lab" in row and "1/2 left" in row and "ci" in row and "usable" in row

    assert _ok(cli("key", "revoke", key_id)).out == f"enrollment key {key_id} revoked\n"
    keys = {k["id"]: k for k in _ok(cli("key", "list", "--json")).json()["enrollment_keys"]}
    assert keys[key_id]["revoked"] and "revoked" in _ok(cli("key", "list")).out


def test_network_delete_needs_force_while_hosts_are_members(cli: Cli, api: Api) -> None:
    _ok(cli("network", "create", "office", "--ipv4", "100.64.0.0/16"))
    net_id = api.ok("GET", "/v1/networks")["networks"][0]["id"]
    token = _ok(cli("key", "create", "--network", "office", "--uses", "1", "--json")).json()["token"]
    host = api.ok("POST", "/v1/hosts", host_body("web"), token=token)["host"]

    lines = _ok(cli("network", "list")).out.splitlines()
    assert lines[1].split()[4:6] == ["1", "0"]
    shown = _ok(cli("network", "show", "office")).out
    assert "Hosts: 1, 0 online" in shown and host["id"] in shown

    refused = cli("network", "delete", "office")
    assert refused.code == 1 and refused.out == ""
    assert refused.err == (f"error: network {net_id} still has 1 host(s); remove them first\n"
                           "hint: pass --force to take its hosts out of it and delete it\n")
    assert api.ok("GET", f"/v1/networks/{net_id}")["id"] == net_id

    assert _ok(cli("network", "delete", "office", "--force")).out == f"network office deleted ({net_id})\n"
    assert api.call("GET", f"/v1/networks/{net_id}")[0] == 404
    assert "no networks yet" in _ok(cli("network", "list")).out
    row = _ok(cli("host", "list")).out.splitlines()[1].split()
    assert row[:4] == ["web", host["id"], "-", "-"]


def test_hosts_show_update_delete_and_ambiguous_names(cli: Cli, api: Api) -> None:
    _ok(cli("network", "create", "office", "--ipv4", "100.64.0.0/16"))
    token = _ok(cli("key", "create", "--network", "office", "--uses", "2", "--json")).json()["token"]
    a = api.ok("POST", "/v1/hosts", host_body("web"), token=token)["host"]
    b = api.ok("POST", "/v1/hosts", host_body("web"), token=token)["host"]

    ambiguous = cli("host", "show", "web")
    assert ambiguous.code == 1
    assert ambiguous.err == (f"error: 2 hosts are named 'web': {', '.join(sorted((a['id'], b['id'])))}; "
                             "give an id instead\n")

    shown = _ok(cli("host", "show", a["id"])).out
    assert "Status:" in shown and "offline" in shown and a["addresses"][0]["ipv4"] in shown
    assert _ok(cli("host", "show", a["id"], "--json")).json() == api.ok("GET", f"/v1/hosts/{a['id']}")

    out = _ok(cli("host", "update", a["id"], "--name", "db", "--tag", "prod", "--tag", "eu",
                  "--endpoint", "198.18.0.20:51820")).out
    assert out == f"host db updated ({a['id']})\n"
    got = api.ok("GET", f"/v1/hosts/{a['id']}")
    assert (got["name"], got["tags"], got["endpoints"]) == ("db", ["prod", "eu"], ["198.18.0.20:51820"])
    _ok(cli("host", "update", "db", "--no-tags"))
    assert api.ok("GET", f"/v1/hosts/{a['id']}")["tags"] == []

    assert _ok(cli("host", "delete", "web")).out == f"host web deleted ({b['id']})\n"
    assert [h["id"] for h in api.ok("GET", "/v1/hosts")["hosts"]] == [a["id"]]


def test_api_errors_are_one_line_on_stderr_with_exit_1(cli: Cli, api: Api) -> None:
    bad = cli("network", "create", "x", "--ipv4", "10.0.0.1/24")
    assert bad.code == 1 and bad.out == ""
    assert bad.err.startswith("error: ") and "did you mean 10.0.0.0/24" in bad.err
    assert bad.err.count("\n") == 1

    _ok(cli("network", "create", "a", "--ipv4", "100.64.0.0/16"))
    taken = cli("network", "create", "a", "--ipv4", "100.70.0.0/16", "--json")
    assert taken.code == 1 and taken.out == "" and taken.err.startswith("error: ")

    missing = cli("network", "show", "nope")
    assert (missing.code, missing.err) == (1, "error: no network has the id or name 'nope'\n")
    assert cli("key", "revoke", "key_doesnotexist").code == 1



def test_settings_from_local_json_and_env(cli: Cli, api: Api, api_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "local.json").write_text(json.dumps({"api_url": api_url, "admin_key": api.admin_key}))
    assert _ok(cli("network", "list", flags=False)).out.startswith("no networks yet")

    unauthorized = cli("network", "list", flags=False, env={"SKYMESH_ADMIN_KEY": "skm_ak_adm_x_y"})
    assert unauthorized.code == 1 and unauthorized.err.startswith("error: ")


def test_an_api_that_is_not_running_is_exit_2(cli: Cli) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port now (it was bound, never listened on, and closed).
    out, err = io.StringIO(), io.StringIO()
    code = admin.main(["network", "list", "--api", f"http://127.0.0.1:{port}", "--key", "k"],
                      env={}, out=out, err=err)
    assert code == 2 and out.getvalue() == ""
    assert err.getvalue() == (f"error: cannot reach the skymesh API at http://127.0.0.1:{port}: "
                              "is `skymesh local up` running?\n")


def test_lists_and_name_lookups_follow_every_page(cli: Cli, api: Api) -> None:
    nets = [api.ok("POST", "/v1/networks", {"name": f"n{i}", "ipv4_cidr": f"100.64.{i}.0/24"})
            for i in range(5)]
    keys = [api.ok("POST", "/v1/enrollment-keys", {"networks": [n["id"]], "uses": 5}) for n in nets]
    hosts = [api.ok("POST", "/v1/hosts", host_body(f"h{i}"), token=keys[0]["token"])["host"]
             for i in range(5)]
    assert api.ok("GET", "/v1/hosts?limit=2")["next_cursor"], "more than one page of each"

    for group, made, key in (("network", nets, "networks"), ("key", keys, "enrollment_keys"),
                             ("host", hosts, "hosts")):
        rows = _ok(cli(group, "list", "--page-size", "2")).out.splitlines()[1:]
        assert sorted(r.split()[1 if group != "key" else 0] for r in rows) == sorted(m["id"] for m in made)
        listed = _ok(cli(group, "list", "--json", "--page-size", "2")).json()
        assert sorted(x["id"] for x in listed[key]) == sorted(m["id"] for m in made)
        assert listed["next_cursor"] is None

    # Names resolve on any page; the network list counts hosts found on any page.
    last = api.ok("GET", "/v1/hosts?limit=4")
    beyond = api.ok("GET", f"/v1/hosts?cursor={last['next_cursor']}")["hosts"][0]
    shown = _ok(cli("host", "show", beyond["name"], "--page-size", "1", "--json")).json()
    assert shown["id"] == beyond["id"]
    row = next(r for r in _ok(cli("network", "list", "--page-size", "1")).out.splitlines()
               if r.startswith("n0 "))
    assert row.split()[4] == "5"

    refused = cli("host", "list", "--page-size", "0")
    assert refused.code == 1 and "limit" in refused.err
