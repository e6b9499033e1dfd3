"""Input that broke the API (issue 7): each is a 4xx in the error shape, with no traceback logged."""

from __future__ import annotations

import logging

import pytest

from chalicelib.adapters.dynamodb.store import DynamoStore

from .conftest import host_body

DEEP = b"[" * 50_000  # json.loads alone raises RecursionError on this


@pytest.fixture
def net(api):
    return api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/24"})


@pytest.fixture
def key(api, net):
    return api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 10})


@pytest.fixture
def host(api, key):
    return api.ok("POST", "/v1/hosts", host_body("h1"), token=key["token"])


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def assert_no_trace(log) -> None:
    """Nothing at ERROR or with a traceback: a hostile request is not a bug to log."""
    bad = [r for r in log.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def assert_error(code_and_body, status: int, *words: str) -> dict:
    code, out = code_and_body
    assert code == status, (code, out)
    assert set(out) == {"error"} and set(out["error"]) == {"code", "message"}, out
    for w in words:
        assert w in out["error"]["message"], out
    return out


# --- 1. deep nesting; authentication before the body -------------------------------------------

@pytest.mark.parametrize("route", [("POST", "/v1/networks"), ("POST", "/v1/enrollment-keys"),
                                   ("POST", "/v1/hosts"), ("PATCH", "/v1/hosts/host_abcdabcdabcd")])
@pytest.mark.parametrize("token", [None, "skm_ak_adm_aaaaaaaa_wrong"])
def test_a_body_without_valid_credentials_is_401_whatever_it_holds(api, log, route, token):
    assert_error(api.call(*route, token=token, raw=DEEP), 401)
    assert_error(api.call(*route, token=token, raw=b"not json"), 401)
    assert_no_trace(log)


@pytest.mark.parametrize("raw", [
    DEEP,
    b'{"name": ' + DEEP,
    b'{"name": "n", "tags": ' + b"[" * 40 + b"]" * 40 + b"}",  # valid JSON, just deeper than any body
])
def test_deeply_nested_body_is_400_before_the_parser_recurses(api, log, raw):
    assert_error(api.call("POST", "/v1/networks", raw=raw), 400, "nested deeper than 32 levels")
    assert_no_trace(log)


def test_brackets_inside_strings_do_not_count_as_nesting(api, net, log):
    out = assert_error(api.call("POST", "/v1/networks", raw=b'{"name": "' + b"[" * 1000 + b'", '
                                b'"ipv4_cidr": "100.65.0.0/24"}'), 400, "name")
    assert "nested" not in out["error"]["message"]
    assert_no_trace(log)


# --- 2. an endpoint's port of thousands of digits ---------------------------------------------

@pytest.mark.parametrize("endpoint", ["198.18.0.1:" + "9" * 5000, "198.18.0.1:" + "0" * 5000 + "1",
                                      "198.18.0.1:999999"])
def test_endpoint_port_with_too_many_digits_is_400(api, key, host, log, endpoint):
    assert_error(api.call("POST", "/v1/hosts", host_body("h2", endpoints=[endpoint]), token=key["token"]),
                 400, "endpoints")
    assert_error(api.call("PATCH", f"/v1/hosts/{host['host']['id']}", {"endpoints": [endpoint]},
                          token=host["host_token"]), 400, "endpoints")
    assert_no_trace(log)


def test_endpoint_port_digits_are_refused_by_the_domain_without_int_conversion():
    from chalicelib.domain import validate
    from chalicelib.errors import InvalidInputError
    with pytest.raises(InvalidInputError, match="out of range: use 1-65535"):
        validate.endpoint("198.18.0.1:" + "9" * 5000)


# --- 3. path ids that cannot exist ------------------------------------------------------------

ROUTES = [("GET", "/v1/networks/{}", "network"), ("PATCH", "/v1/networks/{}", "network"),
          ("DELETE", "/v1/networks/{}", "network"), ("GET", "/v1/enrollment-keys/{}", "key"),
          ("DELETE", "/v1/enrollment-keys/{}", "key"), ("GET", "/v1/hosts/{}", "host"),
          ("PATCH", "/v1/hosts/{}", "host"), ("DELETE", "/v1/hosts/{}", "host")]
BODIES = {"PATCH": {"name": "x"}}


@pytest.fixture
def store_reads(monkeypatch):
    """Every id the store was asked to read (the real store still answers)."""
    seen: list[str] = []
    for name in ("get_network", "get_host", "get_enrollment_key"):
        real = getattr(DynamoStore, name)

        def spy(self, record_id, _real=real):
            seen.append(record_id)
            return _real(self, record_id)
        monkeypatch.setattr(DynamoStore, name, spy)
    return seen


@pytest.mark.parametrize("method, path, kind", ROUTES)
def test_an_id_that_cannot_exist_is_404_without_a_database_read(api, log, store_reads, method, path, kind):
    prefix = {"network": "net", "key": "key", "host": "host"}[kind]
    for record_id in (f"{prefix}_" + "a" * 4000, f"{prefix}_ABCD", f"{prefix}_a", "nothing",
                      f"{prefix}_abcd%0a", f"{prefix}_" + "a" * 41):
        out = assert_error(api.call(method, path.format(record_id), BODIES.get(method)), 404,
                           f"{prefix}_ and 4-40 lowercase letters or digits")
        assert out["error"]["code"] == "not_found"
        assert len(out["error"]["message"]) < 300, "the message does not echo a huge id"
    assert not store_reads, store_reads
    assert_no_trace(log)


def test_a_well_formed_unknown_id_still_reads_and_is_404(api, store_reads):
    assert_error(api.call("GET", "/v1/networks/net_abcdefabcdef"), 404, "does not exist")
    assert store_reads == ["net_abcdefabcdef"]


def test_an_id_that_cannot_exist_needs_credentials_first(api, log):
    assert_error(api.call("GET", "/v1/networks/net_" + "a" * 4000, token=None), 401)
    assert_no_trace(log)


def test_host_routes_refuse_a_foreign_or_malformed_host_id_without_leaking(api, host, log):
    for host_id in ("host_" + "a" * 4000, "host_ABCD"):
        for method, path in (("GET", f"/v1/hosts/{host_id}/config"), ("GET", f"/v1/hosts/{host_id}")):
            code, out = api.call(method, path, token=host["host_token"])
            assert code in (403, 404) and "database" not in out["error"]["message"], out
    assert_no_trace(log)


def test_network_ids_in_a_key_body_must_be_ids(api, log):
    out = assert_error(api.call("POST", "/v1/enrollment-keys", {"networks": ["net_" + "a" * 4000],
                                                                "uses": 1}), 400, "networks.0")
    assert "database" not in out["error"]["message"]
    assert_no_trace(log)


# --- 4. strict types ----------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("listen_port", True), ("keepalive", False), ("mtu", True), ("listen_port", "51820"),
    ("keepalive", 25.0), ("mtu", "1420"),
])
def test_network_settings_take_json_integers_only(api, net, log, field, value):
    body = {"name": "n2", "ipv4_cidr": "100.65.0.0/24", field: value}
    assert_error(api.call("POST", "/v1/networks", body), 400, field, "valid integer")
    assert_error(api.call("PATCH", f"/v1/networks/{net['id']}", {field: value}), 400, field)
    assert_no_trace(log)


def test_a_boolean_port_says_what_was_sent(api):
    out = assert_error(api.call("POST", "/v1/networks", {"name": "n2", "ipv4_cidr": "100.65.0.0/24",
                                                         "listen_port": True}), 400)
    assert out["error"]["message"] == "listen_port: Input should be a valid integer, not a JSON boolean"


@pytest.mark.parametrize("body", [{"uses": True}, {"uses": "3"}, {"uses": 2.0}, {"unlimited": 1},
                                  {"unlimited": "true"}, {"expires_at": True}, {"expires_at": 4e9},
                                  {"expires_at": "4000000000"}, {"expires_at": "2099-01-01T00:00:00"},
                                  {"expires_at": 10**30}])
def test_enrollment_key_fields_are_strict(api, net, log, body):
    field = next(iter(body))
    assert_error(api.call("POST", "/v1/enrollment-keys", {"networks": [net["id"]], **body}), 400, field)
    assert_no_trace(log)


@pytest.mark.parametrize("expires_at", ["2099-01-01T00:00:00Z", "2099-01-01T02:00:00+02:00", 4070908800])
def test_expires_at_still_takes_rfc3339_or_unix_seconds(api, net, expires_at):
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "expires_at": expires_at})
    assert key["expires_at"].startswith("2099-01-01T00:00:00")


@pytest.mark.parametrize("field, value", [("listen_port", True), ("listen_port", "51820")])
def test_host_port_is_strict(api, key, host, log, field, value):
    assert_error(api.call("POST", "/v1/hosts", host_body("h2", **{field: value}), token=key["token"]),
                 400, field)
    assert_error(api.call("PATCH", f"/v1/hosts/{host['host']['id']}", {field: value},
                          token=host["host_token"]), 400, field)
    assert_no_trace(log)
