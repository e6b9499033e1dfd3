"""The shared REST client without a network: error mapping, paging, what each typed method sends;
and the rule that it is the one client of the admin CLI, the lab and the benches."""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.response
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from skymesh.client import ApiClient, ApiError, list_all
from skymesh.errors import CliError

ROOT = Path(__file__).resolve().parents[2]


# --- HTTP error mapping (a fake opener, no sockets) ---------------------------------------


def _client(exc: BaseException) -> ApiClient:
    def opener(request: Any, timeout: float) -> Any:
        raise exc
    return ApiClient("http://api.test", "k", opener=opener)


def _http_error(status: int, body: bytes) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("http://api.test/x", status, "x", Message(), io.BytesIO(body))


def test_api_errors_carry_the_apis_code_and_message() -> None:
    body = json.dumps({"error": {"code": "name_taken", "message": "a network is named 'a'"}}).encode()
    with pytest.raises(ApiError) as exc:
        _client(_http_error(409, body)).get("/v1/networks")
    assert (exc.value.status, exc.value.code, exc.value.message, exc.value.exit_code) == (
        409, "name_taken", "a network is named 'a'", 1)


@pytest.mark.parametrize(("body", "message"), [
    (b'{"message": "Missing Authentication Token"}', "HTTP 403: Missing Authentication Token"),
    (b"<html>Bad gateway</html>", "HTTP 403: <html>Bad gateway</html>"),
    (b"", "HTTP 403"),
])
def test_other_error_bodies_still_give_a_message(body: bytes, message: str) -> None:
    with pytest.raises(ApiError, match="^" + message + "$"):
        _client(_http_error(403, body)).get("/v1/x")


def test_connection_refused_is_exit_2_with_the_local_up_hint() -> None:
    with pytest.raises(CliError) as exc:
        _client(urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))).get("/v1/x")
    assert exc.value.exit_code == 2
    assert exc.value.message == ("cannot reach the skymesh API at http://api.test: "
                                 "is `skymesh local up` running?")


def test_other_network_failures_are_exit_2_with_the_reason() -> None:
    with pytest.raises(CliError, match="cannot reach the skymesh API at http://api.test: timed out") as exc:
        _client(TimeoutError("timed out")).get("/v1/x")
    assert exc.value.exit_code == 2



def test_list_all_follows_next_cursor_to_the_last_page_and_stops_on_a_repeated_one() -> None:
    pages = {None: {"hosts": [1, 2], "next_cursor": "a"}, "a": {"hosts": [3], "next_cursor": "b"},
             "b": {"hosts": [], "next_cursor": None}}
    sent: list[dict[str, str]] = []

    def get(query: Any) -> Any:
        sent.append(dict(query))
        return pages[query.get("cursor")]

    assert list_all(get, "hosts", 2) == [1, 2, 3]
    assert sent == [{"limit": "2"}, {"limit": "2", "cursor": "a"}, {"limit": "2", "cursor": "b"}]
    with pytest.raises(CliError, match="same hosts page twice"):
        list_all(lambda query: {"hosts": [], "next_cursor": "same"}, "hosts")


def test_a_body_that_is_not_the_apis_error_shape_has_no_code() -> None:
    # As the agent's client: an empty code says "not the API's own answer" (a proxy, a gateway).
    with pytest.raises(ApiError) as exc:
        _client(_http_error(404, b"<html>Not Found</html>")).get("/v1/x")
    assert (exc.value.status, exc.value.code) == (404, "")


# --- typed methods (a recording opener, no sockets) ----------------------------------------


class Recorder:
    """An opener that records each request and answers 200 with the next of ``answers`` (the last
    one again when they run out)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers) or [None]
        self.sent: list[tuple[str, str, Any, str | None, float]] = []

    def __call__(self, request: Any, timeout: float) -> Any:
        body = json.loads(request.data) if request.data else None
        self.sent.append((request.get_method(), request.full_url, body,
                          request.get_header("Authorization"), timeout))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        raw = b"" if answer is None else json.dumps(answer).encode()
        return urllib.response.addinfourl(io.BytesIO(raw), Message(), request.full_url, 200)


def test_typed_methods_send_their_route_with_ids_quoted_and_a_bounded_timeout() -> None:
    rec = Recorder({"ok": True})
    api = ApiClient("http://api.test/base/", "admin-key", timeout=7, opener=rec)
    api.create_network("office", "100.64.0.0/24", mtu=1380)
    api.update_host("host_a/../x", {"endpoints": []})
    api.delete_network("net_1", force=True)
    api.create_enrollment_key(["net_1"], uses=3)
    api.register_host("enroll-token", {"name": "h1"})
    assert rec.sent == [
        ("POST", "http://api.test/base/v1/networks", {"name": "office", "ipv4_cidr": "100.64.0.0/24",
                                                      "mtu": 1380}, "Bearer admin-key", 7),
        ("PATCH", "http://api.test/base/v1/hosts/host_a%2F..%2Fx", {"endpoints": []}, "Bearer admin-key", 7),
        ("DELETE", "http://api.test/base/v1/networks/net_1?force=true", None, "Bearer admin-key", 7),
        ("POST", "http://api.test/base/v1/enrollment-keys", {"networks": ["net_1"], "uses": 3},
         "Bearer admin-key", 7),
        ("POST", "http://api.test/base/v1/hosts", {"name": "h1"}, "Bearer enroll-token", 7),
    ]


def test_lists_follow_every_page() -> None:
    rec = Recorder({"hosts": [{"id": "a"}], "next_cursor": "c1"},
                   {"hosts": [{"id": "b"}], "next_cursor": None})
    api = ApiClient("http://api.test", "k", opener=rec)
    assert [h["id"] for h in api.list_hosts(page_size=1)] == ["a", "b"]
    assert [url for _, url, *_ in rec.sent] == ["http://api.test/v1/hosts?limit=1",
                                               "http://api.test/v1/hosts?limit=1&cursor=c1"]


# --- one client ----------------------------------------------------------------------------


def test_the_admin_cli_the_lab_and_the_benches_call_the_api_only_through_skymesh_client() -> None:
    # A bearer token in a request is the mark of a REST client. bench/status_size.py,
    # bench/config_handler.py and bench/latency_matrix.py call the app in process
    # (chalice.test.Client), not over HTTP.
    allowed = {"skymesh/client.py", "bench/status_size.py", "bench/config_handler.py",
               "bench/latency_matrix.py"}
    found = sorted(str(p.relative_to(ROOT)) for d in ("skymesh", "bench") for p in (ROOT / d).rglob("*.py")
                   if re.search(r"Bearer \{", p.read_text()) and str(p.relative_to(ROOT)) not in allowed)
    assert found == []
