"""The agent's API client against a real HTTP server on loopback: what it sends, how each failure reads.

A small stdlib server answers what each test scripts, so the shapes the real API
never sends (a proxy's HTML page, an empty body, silence) are covered too; the
real API's answers are covered by ``test_agent_cli.py``.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent.api import ApiClient, ApiError, Unreachable
from chalicelib.domain import protocol

from .conftest import serving


class Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.reply: tuple[int, bytes, str] = (204, b"", "application/json")
        self.seen: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                 "body": json.loads(body) if body else None})
        status, payload, ctype = self.server.reply
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Scripted]:
    with serving(Scripted) as s:
        yield s


def test_an_api_error_carries_the_apis_status_code_and_message(server):
    server.reply = (409, json.dumps({"error": {"code": "name_taken", "message": "a host named web-1 exists"}})
                    .encode(), "application/json")
    with pytest.raises(ApiError) as e:
        ApiClient(server.url).register("skm_ek_x", name="web-1", wg_public_key="k", listen_port=51820,
                                       endpoints=[], csr_pem="csr")
    assert (e.value.status, e.value.code, e.value.message) == (409, "name_taken", "a host named web-1 exists")
    assert "HTTP 409 name_taken" in str(e.value)


def test_an_error_page_that_is_not_the_apis_has_no_code_and_is_cut_short(server):
    server.reply = (502, b"<html>" + b"x" * 5000 + b"</html>", "text/html")
    with pytest.raises(ApiError) as e:
        ApiClient(server.url, "skm_ht_t").config("host_1")
    assert e.value.status == 502 and e.value.code == "" and e.value.message.startswith("<html>")
    assert len(e.value.message) == 200
    server.reply = (403, b"", "text/plain")
    with pytest.raises(ApiError) as e:
        ApiClient(server.url, "skm_ht_t").config("host_1")
    assert e.value.status == 403 and e.value.code == "" and e.value.message == "Forbidden"


def test_requests_carry_the_right_token_and_body(server):
    api = ApiClient(server.url + "/", "skm_ht_host")
    server.reply = (201, json.dumps({"host": {}}).encode(), "application/json")
    assert api.register("skm_ek_enroll", name="h", wg_public_key="k", listen_port=1,
                        endpoints=["198.18.0.1:1"], csr_pem="csr") == {"host": {}}
    server.reply = (200, b"{}", "application/json")
    api.update_endpoints("host_1", ["198.18.0.2:51820"])
    server.reply = (204, b"", "application/json")
    assert api.delete_host("host_1") is None
    reg, patch, delete = server.seen
    assert reg["headers"]["Authorization"] == "Bearer skm_ek_enroll"  # enrolling: the key, not the host token
    assert reg["body"]["endpoints"] == ["198.18.0.1:1"]
    assert reg["headers"]["Content-Type"] == "application/json"
    assert reg["headers"]["User-Agent"].startswith("skymesh-agent/")
    assert (patch["method"], patch["path"], patch["body"]) == ("PATCH", "/v1/hosts/host_1",
                                                               {"endpoints": ["198.18.0.2:51820"]})
    assert (delete["method"], delete["path"], delete["headers"]["Authorization"]) == (
        "DELETE", "/v1/hosts/host_1", "Bearer skm_ht_host")


def test_a_config_the_agent_cannot_read_is_a_protocol_error(server):
    unreadable = {"host_id": "host_1", "networks": [{"seq": 3}]}
    server.reply = (200, json.dumps(unreadable).encode(), "application/json")
    with pytest.raises(protocol.ProtocolError, match="bad /config answer"):
        ApiClient(server.url, "t").config("host_1")


def test_a_server_that_does_not_answer_is_unreachable_within_the_timeout():
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(Unreachable, match=f"cannot reach {url}"):
            ApiClient(url, "t", timeout=0.5).config("host_1")
        assert time.monotonic() - start < 5


def test_nothing_listening_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(Unreachable, match="refused"):
            ApiClient(f"http://127.0.0.1:{port}").delete_host("host_1")
