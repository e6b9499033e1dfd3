"""The admin CLI without a network: formatting, parsing, settings precedence, error mapping."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest

from skymesh import admin
from skymesh.admin import (
    CliError,
    Context,
    Settings,
    format_fields,
    format_table,
    human_bytes,
    human_duration,
    parse_duration,
    parse_time,
    relative_time,
    resolve,
    resolve_settings,
)
from skymesh.client import ApiClient

NOW = dt.datetime(2030, 6, 1, 12, 0, 0, tzinfo=dt.UTC)


# --- formatting ---------------------------------------------------------------------------


def test_table_columns_are_aligned_to_the_widest_cell_without_trailing_blanks() -> None:
    out = format_table(("NAME", "ID", "HOSTS"), [("office", "net_1", 3), ("a", "net_22222", None)])
    assert out.splitlines() == [
        "NAME     ID          HOSTS",
        "office   net_1       3",
        "a        net_22222",
    ]


def test_table_with_no_rows_is_just_the_header() -> None:
    assert format_table(("A", "BB"), []) == "A   BB"


def test_fields_align_values_after_their_labels() -> None:
    assert format_fields([("Name", "x"), ("Listen port", 51820)]).splitlines() == [
        "Name:         x", "Listen port:  51820"]


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (86399, "23h"),
    (86400, "1d"), (30 * 86400, "30d"), (-120, "2m"),
])
def test_human_duration_uses_the_largest_unit_that_fits(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_relative_times_past_future_now_and_never() -> None:
    assert relative_time("2030-06-01T11:58:00Z", NOW) == "2m ago"
    assert relative_time("2030-06-08T12:00:00+00:00", NOW) == "in 7d"
    assert relative_time(NOW, NOW) == "just now"
    assert relative_time(None, NOW) == "never"
    assert relative_time(None, NOW, never="-") == "-"
    # An offset other than UTC is honoured.
    assert relative_time("2030-06-01T13:59:00+02:00", NOW) == "1m ago"


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 3 * 1024**3)] == ["0 B", "1023 B", "1.5 KiB", "3.0 GiB"]


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("1h", 3600), ("7d", 7 * 86400), ("2w", 14 * 86400),
    ("1h30m", 5400), ("1D", 86400), (" 5m ", 300),
])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "h", "1y", "1h 30m", "-1h", "1.5h", "0s", "0h0m", "1h-"])
def test_bad_durations_say_what_a_duration_looks_like(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_rfc3339_times_need_a_zone() -> None:
    assert parse_time("2030-01-01T00:00:00Z") == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert parse_time("2030-01-01T02:00:00+02:00").astimezone(dt.UTC).hour == 0
    with pytest.raises(argparse.ArgumentTypeError, match="time zone"):
        parse_time("2030-01-01T00:00:00")
    with pytest.raises(argparse.ArgumentTypeError, match="RFC 3339"):
        parse_time("tomorrow")


def test_argparse_reports_bad_options_as_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    parser = admin.build_parser()
    for argv in (["key", "create", "--network", "n", "--expires-in", "1h", "--unlimited"],
                 ["key", "create", "--network", "n", "--expires-in", "soon"],
                 ["network", "create", "x"],
                 ["network", "update", "x", "--mtu", "-5"]):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2, argv
    assert "not a duration" in capsys.readouterr().err


def test_every_leaf_sets_func_and_takes_the_common_options() -> None:
    parser = admin.build_parser()
    for argv in (["network", "list"], ["network", "show", "x"], ["key", "list"], ["key", "revoke", "k"],
                 ["host", "list"], ["host", "delete", "h"]):
        args = parser.parse_args([*argv, "--api", "http://x", "--key", "k", "--json"])
        assert args.func is admin.run_command and (args.api, args.key, args.json) == ("http://x", "k", True)


def test_add_commands_works_on_another_programs_parser() -> None:
    parser = argparse.ArgumentParser(prog="skymesh")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("local").add_argument("action")
    admin.add_commands(sub)
    args = parser.parse_args(["network", "delete", "office", "--force"])
    assert args.func is admin.run_command and args.force and args.network == "office"
    assert parser.parse_args(["local", "up"]).action == "up"


# --- settings -----------------------------------------------------------------------------


def _home(tmp_path: Path, **config: Any) -> dict[str, str]:
    (tmp_path / "local.json").write_text(json.dumps(config))
    return {"SKYMESH_HOME": str(tmp_path)}


def test_settings_come_from_local_json_then_env_then_flags(tmp_path: Path) -> None:
    env = _home(tmp_path, api_url="http://file:1/", admin_key="k-file")
    assert resolve_settings(None, None, env) == Settings("http://file:1", "k-file")
    env |= {"SKYMESH_API": "http://env:2", "SKYMESH_ADMIN_KEY": "k-env"}
    assert resolve_settings(None, None, env) == Settings("http://env:2", "k-env")
    assert resolve_settings("https://flag:3/base", "k-flag", env) == Settings("https://flag:3/base", "k-flag")
    assert resolve_settings(None, "k-flag", env) == Settings("http://env:2", "k-flag")


def test_settings_home_defaults_to_dot_skymesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".skymesh").mkdir()
    _home(tmp_path / ".skymesh", api_url="http://here:1", admin_key="k")
    monkeypatch.chdir(tmp_path)
    assert resolve_settings(None, None, {}) == Settings("http://here:1", "k")


def test_missing_settings_say_how_to_provide_them(tmp_path: Path) -> None:
    env = {"SKYMESH_HOME": str(tmp_path)}
    with pytest.raises(CliError, match="--api URL, set SKYMESH_API"):
        resolve_settings(None, "k", env)
    with pytest.raises(CliError, match="--key ADMIN_KEY, set SKYMESH_ADMIN_KEY"):
        resolve_settings("http://x", None, env)
    with pytest.raises(CliError, match="not an http"):
        resolve_settings("localhost:8000", "k", env)


def test_a_broken_local_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "local.json").write_text("{nope")
    with pytest.raises(CliError, match="local.json"):
        resolve_settings("http://x", "k", {"SKYMESH_HOME": str(tmp_path)})
    (tmp_path / "local.json").write_text("[]")
    with pytest.raises(CliError, match="not a JSON object"):
        resolve_settings("http://x", "k", {"SKYMESH_HOME": str(tmp_path)})


# --- name resolution ----------------------------------------------------------------------


def test_resolve_prefers_ids_then_unique_names_and_lists_ambiguous_matches() -> None:
    items = [{"id": "host_a", "name": "web"}, {"id": "host_b", "name": "web"},
             {"id": "host_c", "name": "host_a"}, {"id": "host_d", "name": "db"}]
    assert resolve(items, "host_a", "host")["id"] == "host_a"
    assert resolve(items, "db", "host")["id"] == "host_d"
    with pytest.raises(CliError, match=r"2 hosts are named 'web': host_a, host_b; give an id"):
        resolve(items, "web", "host")
    with pytest.raises(CliError, match="no host has the id or name 'x'"):
        resolve(items, "x", "host")


# --- commands against a fake client -------------------------------------------------------


class FakeClient(ApiClient):
    """Canned answers per (method, path); records what was sent."""

    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        super().__init__("http://fake.test")
        self.answers = answers
        self.sent: list[tuple[str, str, Any, Any]] = []

    def call(self, method: str, path: str, body: Any = None, query: Any = None) -> Any:
        self.sent.append((method, path, body, query))
        return self.answers[(method, path)]

    def get(self, path: str) -> Any:
        return self.call("GET", path)


def _net(i: str, name: str) -> dict[str, Any]:
    return {"id": i, "name": name, "ipv4_cidr": "100.64.0.0/16", "ipv6_cidr": "fd00:1::/64",
            "listen_port": 51820, "keepalive": 25, "mtu": 1420, "seq": 0,
            "created_at": "2030-06-01T10:00:00Z"}


def _host(i: str, name: str, net: str, online: bool, last_seen: str | None) -> dict[str, Any]:
    return {"id": i, "name": name, "wg_public_key": f"pk-{i}", "listen_port": 51820, "endpoints": [],
            "observed_endpoint": None, "tags": [], "enrollment_key_id": None,
            "created_at": "2030-05-01T00:00:00Z",
            "addresses": [{"network_id": net, "ipv4": "100.64.0.1", "ipv6": "fd00:1::1"}],
            "status": {"online": online, "last_seen": last_seen, "agent_version": None,
                       "reported_endpoints": [], "peers": []}}


def _run(command: admin.Command, client: FakeClient, argv: dict[str, Any]) -> str:
    out = io.StringIO()
    command(Context(client, argparse.Namespace(json=False, **argv), out, NOW))  # type: ignore[arg-type]
    return out.getvalue()


def test_network_list_counts_hosts_and_online_ones() -> None:
    client = FakeClient({
        ("GET", "/v1/networks"): {"networks": [_net("net_1", "office"), _net("net_2", "lab")]},
        ("GET", "/v1/hosts"): {"hosts": [_host("host_1", "a", "net_1", True, "2030-06-01T11:59:30Z"),
                                         _host("host_2", "b", "net_1", False, None)]},
    })
    assert _run(admin.network_list, client, {}).splitlines() == [
        "NAME     ID      IPV4            IPV6          HOSTS   ONLINE   CREATED",
        "office   net_1   100.64.0.0/16   fd00:1::/64   2       1        2h ago",
        "lab      net_2   100.64.0.0/16   fd00:1::/64   0       0        2h ago",
    ]


def test_key_list_shows_uses_expiry_and_why_a_key_is_unusable() -> None:
    base = {"networks": ["net_1", "net_gone"], "tags": [], "revoked": False, "unlimited": False,
            "created_at": "2030-06-01T11:00:00Z"}
    keys = [
        base | {"id": "key_a", "uses_total": 3, "uses_left": 2, "expires_at": None, "usable": True,
                "tags": ["ci", "x"]},
        base | {"id": "key_b", "uses_total": None, "uses_left": None, "usable": False,
                "expires_at": "2030-06-01T11:00:00Z"},
        base | {"id": "key_c", "uses_total": 1, "uses_left": 0, "usable": False,
                "expires_at": "2030-06-02T12:00:00Z"},
        base | {"id": "key_d", "uses_total": None, "uses_left": None, "usable": False, "revoked": True,
                "expires_at": None, "unlimited": True},
    ]
    client = FakeClient({("GET", "/v1/enrollment-keys"): {"enrollment_keys": keys},
                         ("GET", "/v1/networks"): {"networks": [_net("net_1", "office")]}})
    lines = _run(admin.key_list, client, {}).splitlines()
    assert lines[0].split() == ["ID", "NETWORKS", "USES", "EXPIRES", "TAGS", "STATUS", "CREATED"]
    assert "office,net_gone (deleted)   2/3 left    never" in lines[1] and "ci,x   usable" in lines[1]
    assert "unlimited" in lines[2] and "expired 1h ago" in lines[2] and "expired   1h ago" in lines[2]
    assert "0/1 left" in lines[3] and "in 1d" in lines[3] and "used up" in lines[3]
    assert "revoked" in lines[4]


def test_key_create_needs_a_lifetime_before_calling_the_api() -> None:
    client = FakeClient({})
    with pytest.raises(CliError, match="--uses N, --expires-in DURATION, --expires-at TIME, or --unlimited"):
        _run(admin.key_create, client, {"network": ["n"], "uses": None, "expires_in": None,
                                        "expires_at": None, "unlimited": False, "tag": None})
    assert client.sent == []


def test_key_create_sends_ids_and_an_absolute_expiry_and_shows_the_token_once() -> None:
    token = "skm_ek_key_a_SECRET"
    created = {"id": "key_a", "networks": ["net_1"], "uses_total": 2, "uses_left": 2,
               "expires_at": "2030-06-08T12:00:00Z", "unlimited": False, "tags": ["ci"], "revoked": False,
               "usable": True, "created_at": "2030-06-01T12:00:00Z", "token": token}
    client = FakeClient({("GET", "/v1/networks"): {"networks": [_net("net_1", "office")]},
                         ("POST", "/v1/enrollment-keys"): created})
    out = _run(admin.key_create, client, {"network": ["office", "net_1"], "uses": 2, "expires_in": 7 * 86400,
                                          "expires_at": None, "unlimited": False, "tag": ["ci"]})
    assert client.sent[-1][2] == {"networks": ["net_1"], "tags": ["ci"], "uses": 2,
                                  "expires_at": "2030-06-08T12:00:00Z"}
    assert out.count(token) == 1 and f"\n    {token}\n" in out
    assert "shown only once" in out and "office" in out and "in 7d" in out


def test_updates_with_nothing_to_change_are_refused_locally() -> None:
    client = FakeClient({})
    with pytest.raises(CliError, match="nothing to change"):
        _run(admin.network_update, client, {"network": "n", "new_name": None, "keepalive": None,
                                            "mtu": None, "listen_port": None})
    with pytest.raises(CliError, match="nothing to change"):
        _run(admin.host_update, client, {"host": "h", "new_name": None, "listen_port": None,
                                         "endpoint": None, "no_endpoints": False, "tag": None,
                                         "no_tags": False})
    assert client.sent == []


def test_run_command_prints_error_and_hint_on_stderr_and_returns_the_exit_code(tmp_path: Path) -> None:
    def failing(ctx: Context) -> None:
        raise CliError("it broke", hint="try again", exit_code=2)

    args = argparse.Namespace(api="http://x", key="k", json=False, admin_command=failing)
    out, err = io.StringIO(), io.StringIO()
    assert admin.run_command(args, env={"SKYMESH_HOME": str(tmp_path)}, out=out, err=err) == 2
    assert err.getvalue() == "error: it broke\nhint: try again\n" and out.getvalue() == ""
