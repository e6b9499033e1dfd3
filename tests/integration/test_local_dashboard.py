"""The local API server also serves the web dashboard's files, from the API's own origin.

A GET outside ``/v1/`` is a file of the built dashboard (``skymesh/local/dashboard.py``);
every ``/v1/`` path stays the API's, errors in its shape included. No path reaches a file
outside the dashboard's directory.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skymesh.local.api import make_server
from skymesh.local.proc import free_port

from .conftest import serving
from .test_local_api import (
    assert_our_shape,
    request,
    stage,  # noqa: F401  (a fixture: the app's service on DynamoDB Local)
)

Raw = tuple[int, dict[str, str], bytes]


def raw_get(port: int, path: str) -> Raw:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)  # http.client sends the path as given: no "../" folding
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A built dashboard's shape: index.html and hashed assets; a secret beside it."""
    d = tmp_path / "dist"
    (d / "assets").mkdir(parents=True)
    (d / "index.html").write_text("<!doctype html><title>skymesh</title>")
    (d / "assets" / "index-abc123.js").write_text("console.log('dashboard')")
    (tmp_path / "secret.txt").write_text("not for the web")
    (d / "assets" / "escape.txt").symlink_to(tmp_path / "secret.txt")
    return d


@pytest.fixture
def served(dist: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[str], Raw]]:
    request.getfixturevalue("stage")  # the app's service on DynamoDB Local
    port = free_port()
    with serving(lambda: make_server("127.0.0.1", port, dashboard_dir=dist)):
        yield lambda path: raw_get(port, path)


def test_the_dashboard_is_served_at_the_root_with_a_strict_policy(served):
    status, headers, body = served("/")
    assert status == 200 and body.startswith(b"<!doctype html>")
    assert headers["content-type"].startswith("text/html")
    assert headers["cache-control"] == "no-cache"  # a rebuilt dashboard shows on the next load
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"

    status, headers, body = served("/assets/index-abc123.js")
    assert status == 200 and body == b"console.log('dashboard')"
    assert headers["content-type"].startswith("text/javascript")
    assert "immutable" in headers["cache-control"]


@pytest.mark.parametrize("path", ["/../secret.txt", "/assets/../../secret.txt", "/assets/escape.txt",
                                  "/%2e%2e/secret.txt", "/no/such/page"])
def test_no_path_reaches_a_file_outside_the_dashboard(served, path):
    status, _headers, body = served(path)
    assert status == 200 and b"not for the web" not in body
    assert body.startswith(b"<!doctype html>")  # the app itself, which says where to go


def test_api_paths_stay_the_apis(served):
    status, headers, body = served("/v1/no-such-route")
    assert status == 404 and headers["content-type"] == "application/json"
    assert_our_shape(json.loads(body), "not_found")
    status, _h, body = served("/v1/networks")  # no key: the API's 401, not a page
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"


@pytest.mark.usefixtures("stage")
def test_without_a_built_dashboard_the_root_is_the_apis_404():
    port = free_port()
    with serving(lambda: make_server("127.0.0.1", port)):
        status, _headers, payload = request("127.0.0.1", port, "GET", "/")
    assert status == 404
    assert_our_shape(payload, "not_found")
