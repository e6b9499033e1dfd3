"""``skymesh network|key|host``: the admin CLI over REST API v1 (standard library only).

Where to talk to, lowest precedence first: ``$SKYMESH_HOME/local.json`` (home
``./.skymesh`` by default; keys ``api_url`` and ``admin_key``, as ``skymesh
local up`` writes them), then ``$SKYMESH_API`` / ``$SKYMESH_ADMIN_KEY``, then
``--api`` / ``--key``.

Output is an aligned table for people; ``--json`` prints the API's JSON body
instead (nothing for calls that answer 204). Exit codes: 0 done, 1 the API or
the command line refused (``error: <message>`` on stderr), 2 the API could not
be reached. Arguments argparse itself rejects exit with its usual 2.

``add_commands`` registers the three groups on the ``skymesh`` parser; every
leaf parser sets ``func``, so the caller runs ``sys.exit(args.func(args))``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "EXIT_ERROR",
    "EXIT_UNREACHABLE",
    "ApiClient",
    "ApiError",
    "CliError",
    "Settings",
    "add_commands",
    "format_table",
    "list_all",
    "main",
    "parse_duration",
    "parse_time",
    "relative_time",
    "resolve_settings",
]

EXIT_OK, EXIT_ERROR, EXIT_UNREACHABLE = 0, 1, 2
ENV_HOME, ENV_API, ENV_ADMIN_KEY = "SKYMESH_HOME", "SKYMESH_API", "SKYMESH_ADMIN_KEY"
DEFAULT_HOME = ".skymesh"
CONFIG_NAME = "local.json"
TIMEOUT = 30.0


# --- errors -------------------------------------------------------------------------------


class CliError(Exception):
    """An expected failure: printed as ``error: <message>`` (plus an optional hint), no traceback."""

    def __init__(self, message: str, *, exit_code: int = EXIT_ERROR, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint


class ApiError(CliError):
    """The API answered with an error status; ``code`` is its machine code (``http_<status>`` if none)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


# --- settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Where the API is and the admin key to call it with."""

    api_url: str
    admin_key: str


def read_local_config(home: Path) -> dict[str, str]:
    """``api_url`` / ``admin_key`` from ``home/local.json``; ``{}`` when there is no such file.

    Raises :class:`CliError` naming the file when it exists but is not a JSON object.
    """
    path = home / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise CliError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise CliError(f"{path} is not a JSON object")
    return {k: data[k] for k in ("api_url", "admin_key") if isinstance(data.get(k), str) and data[k]}


def resolve_settings(api_flag: str | None, key_flag: str | None, env: Mapping[str, str]) -> Settings:
    """The API URL and admin key: ``local.json`` < environment < flags.

    Raises :class:`CliError` saying how to provide whichever is missing, or when
    the URL is not ``http(s)://host[:port][/path]``.
    """
    config = read_local_config(Path(env.get(ENV_HOME) or DEFAULT_HOME))
    api = api_flag or env.get(ENV_API) or config.get("api_url")
    key = key_flag or env.get(ENV_ADMIN_KEY) or config.get("admin_key")
    if not api:
        raise CliError(f"no API URL: pass --api URL, set {ENV_API}, or start `skymesh local up` "
                       f"(it writes $SKYMESH_HOME/{CONFIG_NAME})")
    parts = urllib.parse.urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"API URL {api!r} is not an http:// or https:// URL")
    if not key:
        raise CliError(f"no admin key: pass --key ADMIN_KEY, set {ENV_ADMIN_KEY}, or start "
                       f"`skymesh local up` (it writes $SKYMESH_HOME/{CONFIG_NAME})")
    return Settings(api.rstrip("/"), key)


# --- HTTP ---------------------------------------------------------------------------------


Opener = Callable[..., Any]


class ApiClient:
    """JSON calls to REST API v1 with the admin key; every failure is a :class:`CliError`."""

    def __init__(self, settings: Settings, *, timeout: float = TIMEOUT,
                 opener: Opener = urllib.request.urlopen) -> None:
        self.settings = settings
        self.timeout = timeout
        self._open = opener

    def call(self, method: str, path: str, body: Any = None,
             query: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON answer (``None`` for an empty one).

        Raises :class:`ApiError` for an error status and a :class:`CliError` with
        exit code 2 when the API cannot be reached.
        """
        url = self.settings.api_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.settings.admin_key}",
                   "Accept": "application/json", "User-Agent": "skymesh-cli"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._open(request, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise _api_error(e.code, _read_quietly(e)) from None
        except urllib.error.URLError as e:
            raise self._unreachable(e.reason) from None
        except OSError as e:  # timeouts and resets after the connection was made
            raise self._unreachable(e) from None
        return _decode(raw, url)

    def get(self, path: str) -> Any:
        """``GET path``, decoded."""
        return self.call("GET", path)

    def _unreachable(self, reason: object) -> CliError:
        url = self.settings.api_url
        if isinstance(reason, ConnectionRefusedError):
            return CliError(f"cannot reach the skymesh API at {url}: is `skymesh local up` running?",
                            exit_code=EXIT_UNREACHABLE)
        detail = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        return CliError(f"cannot reach the skymesh API at {url}: {detail}", exit_code=EXIT_UNREACHABLE)


def _read_quietly(e: urllib.error.HTTPError) -> bytes:
    try:
        return e.read() or b""
    except OSError:
        return b""


def _decode(raw: bytes, url: str) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise CliError(f"the API at {url} answered with something that is not JSON") from None


def _api_error(status: int, raw: bytes) -> ApiError:
    """The API's ``{"error": {"code", "message"}}``; for other bodies, the best message there is."""
    try:
        payload = json.loads(raw) if raw.strip() else None
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return ApiError(status, str(err.get("code") or f"http_{status}"), err["message"])
        if isinstance(payload.get("message"), str):  # API Gateway's own errors
            return ApiError(status, f"http_{status}", f"HTTP {status}: {payload['message']}")
    text = raw.decode("utf-8", "replace").strip().splitlines()
    return ApiError(status, f"http_{status}", f"HTTP {status}" + (f": {text[0][:200]}" if text else ""))


def list_all(get_page: Callable[[Mapping[str, str]], Any], key: str,
             page_size: int | None = None) -> list[dict[str, Any]]:
    """Every record of a paged list route, following ``next_cursor`` to the last page.

    ``get_page(query)`` answers one ``GET`` of the route with these query parameters;
    ``key`` names the list in each answer (``hosts``). ``page_size`` is sent as ``limit``
    (default: the API's). Raises :class:`CliError` if the API hands out a cursor twice,
    which would otherwise never end.

    >>> list_all(lambda q: client.call("GET", "/v1/hosts", query=q), "hosts")  # doctest: +SKIP
    """
    query = {} if page_size is None else {"limit": str(page_size)}
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    while True:
        page = get_page(query)
        items.extend(page[key])
        cursor = page.get("next_cursor")
        if not cursor:
            return items
        if cursor in seen:
            raise CliError(f"the API returned the same {key} page twice; listing stopped")
        seen.add(cursor)
        query = {**query, "cursor": cursor}


# --- parsing arguments --------------------------------------------------------------------


_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """Seconds in ``90s``, ``30m``, ``1h``, ``7d``, ``2w`` or a sum such as ``1h30m`` (> 0).

    Raises ``argparse.ArgumentTypeError`` (a ``ValueError``'s sibling argparse reports) otherwise.
    """
    s = text.strip().lower()
    parts = _DURATION_PART.findall(s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use a number and a unit s, m, h, d or w, e.g. 1h, 7d, 1h30m")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be longer than zero")
    return seconds


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time with its offset (``2030-01-01T00:00:00Z``) as an aware datetime."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time such as 2030-01-01T00:00:00Z") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: add Z or an offset like +02:00")
    return when


def _count(text: str) -> int:
    """A whole number >= 0 (the API checks the range that makes sense for each field)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


# --- formatting ---------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], gap: int = 3) -> str:
    """Left-aligned columns as wide as their widest cell, ``gap`` spaces apart; no trailing blanks."""
    cells = [list(headers)] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [(" " * gap).join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    return "\n".join(lines)


def format_fields(pairs: Sequence[tuple[str, object]]) -> str:
    """``Label:  value`` lines with the values aligned."""
    width = max(len(k) for k, _ in pairs) + 1
    return "\n".join(f"{(k + ':').ljust(width)}  {'' if v is None else v}".rstrip() for k, v in pairs)


def human_duration(seconds: float) -> str:
    """``45s``, ``12m``, ``5h``, ``3d``: the largest unit that fits, rounded down."""
    s = int(abs(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def parse_api_time(value: str | None) -> dt.datetime | None:
    """A timestamp from the API (RFC 3339, ``Z`` or offset) or ``None``."""
    if not value:
        return None
    when = dt.datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def relative_time(value: str | dt.datetime | None, now: dt.datetime, *, never: str = "never") -> str:
    """``2m ago``, ``in 6d``, ``just now``, or ``never`` for ``None``."""
    when = parse_api_time(value) if isinstance(value, str) or value is None else value
    if when is None:
        return never
    delta = (now - when).total_seconds()
    if abs(delta) < 1:
        return "just now"
    return f"{human_duration(delta)} ago" if delta > 0 else f"in {human_duration(delta)}"


def human_bytes(n: int) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _dash(values: Iterable[str]) -> str:
    joined = ",".join(values)
    return joined or "-"


# --- command context and name resolution --------------------------------------------------


@dataclass
class Context:
    """What a command gets: the client, its arguments, where to print, and the time now.

    ``now`` is whole seconds, like the API's timestamps, so an expiry computed from
    it (``--expires-in 7d``) reads back as exactly ``in 7d``.
    """

    client: ApiClient
    args: argparse.Namespace
    out: TextIO = field(default_factory=lambda: sys.stdout)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0))

    @property
    def as_json(self) -> bool:
        """Whether to print the API's JSON instead of tables."""
        return bool(getattr(self.args, "json", False))

    def list(self, resource: str, key: str) -> list[dict[str, Any]]:
        """Every record of ``GET /v1/<resource>``, however many pages it takes."""
        return list_all(lambda query: self.client.call("GET", f"/v1/{resource}", query=query or None), key,
                        getattr(self.args, "page_size", None))

    def print(self, text: str = "") -> None:
        """One block of text on stdout."""
        print(text, file=self.out)

    def print_json(self, payload: Any) -> None:
        """The API's answer as JSON (keys in the API's order); nothing for an empty answer."""
        if payload is not None:
            print(json.dumps(payload, indent=2), file=self.out)


def resolve(items: Sequence[Mapping[str, Any]], ref: str, kind: str) -> Mapping[str, Any]:
    """The item whose id is ``ref``, else the one whose name is ``ref``.

    Raises :class:`CliError` when there is none, or when several share the name
    (the message lists their ids, sorted).
    """
    for item in items:
        if item["id"] == ref:
            return item
    named = [item for item in items if item.get("name") == ref]
    if len(named) == 1:
        return named[0]
    if not named:
        raise CliError(f"no {kind} has the id or name {ref!r}")
    ids = ", ".join(sorted(item["id"] for item in named))
    raise CliError(f"{len(named)} {kind}s are named {ref!r}: {ids}; give an id instead")


def _networks(ctx: Context) -> list[dict[str, Any]]:
    return ctx.list("networks", "networks")


def _hosts(ctx: Context) -> list[dict[str, Any]]:
    return ctx.list("hosts", "hosts")


def _keys(ctx: Context) -> list[dict[str, Any]]:
    return ctx.list("enrollment-keys", "enrollment_keys")


def _whole_list(key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``--json`` prints for a list: every page's records as one last page."""
    return {key: items, "next_cursor": None}


def _path(*parts: str) -> str:
    return "/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)


def _require_changes(body: Mapping[str, Any], options: str) -> None:
    if not body:
        raise CliError(f"nothing to change: give {options}")


# --- networks -----------------------------------------------------------------------------


def _network_fields(net: Mapping[str, Any], ctx: Context) -> str:
    return format_fields([
        ("Name", net["name"]), ("ID", net["id"]), ("IPv4", net["ipv4_cidr"]), ("IPv6", net["ipv6_cidr"]),
        ("Listen port", net["listen_port"]),
        ("Keepalive", f"{net['keepalive']}s" if net["keepalive"] else "off"),
        ("MTU", net["mtu"]), ("Seq", net["seq"]),
        ("Created", f"{relative_time(net['created_at'], ctx.now)} ({net['created_at']})"),
    ])


def _host_address(host: Mapping[str, Any], network_id: str) -> Mapping[str, Any] | None:
    return next((a for a in host["addresses"] if a["network_id"] == network_id), None)


def network_create(ctx: Context) -> None:
    """``network create NAME --ipv4 CIDR ...``: the new network."""
    a = ctx.args
    body: dict[str, Any] = {"name": a.name, "ipv4_cidr": a.ipv4}
    for key, value in (("ipv6_cidr", a.ipv6), ("listen_port", a.listen_port),
                       ("keepalive", a.keepalive), ("mtu", a.mtu)):
        if value is not None:
            body[key] = value
    net = ctx.client.call("POST", "/v1/networks", body)
    if ctx.as_json:
        return ctx.print_json(net)
    ctx.print(f"network {net['name']} created ({net['id']})")
    ctx.print(_network_fields(net, ctx))


def network_list(ctx: Context) -> None:
    """``network list``: one row per network with its host counts."""
    networks = _networks(ctx)
    if ctx.as_json:
        return ctx.print_json(_whole_list("networks", networks))
    if not networks:
        return ctx.print("no networks yet: create one with `skymesh network create NAME --ipv4 CIDR`")
    hosts = _hosts(ctx)
    rows = []
    for net in networks:
        members = [h for h in hosts if _host_address(h, net["id"])]
        online = sum(1 for h in members if h["status"]["online"])
        rows.append((net["name"], net["id"], net["ipv4_cidr"], net["ipv6_cidr"], len(members), online,
                     relative_time(net["created_at"], ctx.now)))
    ctx.print(format_table(("NAME", "ID", "IPV4", "IPV6", "HOSTS", "ONLINE", "CREATED"), rows))


def network_show(ctx: Context) -> None:
    """``network show ID|NAME``: its settings and its hosts."""
    ref = resolve(_networks(ctx), ctx.args.network, "network")
    net = ctx.client.get(_path("v1", "networks", ref["id"]))
    if ctx.as_json:
        return ctx.print_json(net)
    ctx.print(_network_fields(net, ctx))
    members = [(h, _host_address(h, net["id"])) for h in _hosts(ctx)]
    rows = [(h["name"], h["id"], addr["ipv4"], addr["ipv6"],
             "online" if h["status"]["online"] else "offline",
             relative_time(h["status"]["last_seen"], ctx.now))
            for h, addr in members if addr is not None]
    online = sum(1 for r in rows if r[4] == "online")
    ctx.print()
    if not rows:
        return ctx.print("Hosts: none yet (enroll one with a key from `skymesh key create`)")
    ctx.print(f"Hosts: {len(rows)}, {online} online")
    ctx.print(format_table(("NAME", "ID", "IPV4", "IPV6", "STATUS", "LAST SEEN"), rows))


def network_update(ctx: Context) -> None:
    """``network update ID|NAME [--name] [--keepalive] [--mtu] [--listen-port]``."""
    a = ctx.args
    body = {k: v for k, v in (("name", a.new_name), ("keepalive", a.keepalive), ("mtu", a.mtu),
                              ("listen_port", a.listen_port)) if v is not None}
    _require_changes(body, "--name, --keepalive, --mtu or --listen-port")
    ref = resolve(_networks(ctx), a.network, "network")
    net = ctx.client.call("PATCH", _path("v1", "networks", ref["id"]), body)
    if ctx.as_json:
        return ctx.print_json(net)
    ctx.print(f"network {net['name']} updated ({net['id']})")
    ctx.print(_network_fields(net, ctx))


def network_delete(ctx: Context) -> None:
    """``network delete ID|NAME [--force]``; without ``--force`` a network with hosts is refused."""
    ref = resolve(_networks(ctx), ctx.args.network, "network")
    query = {"force": "true"} if ctx.args.force else None
    try:
        ctx.client.call("DELETE", _path("v1", "networks", ref["id"]), query=query)
    except ApiError as e:
        if e.code != "network_not_empty":
            raise
        raise CliError(e.message.replace(" or delete with ?force=true", ""),
                       hint="pass --force to take its hosts out of it and delete it") from None
    if not ctx.as_json:
        ctx.print(f"network {ref['name']} deleted ({ref['id']})")


# --- enrollment keys ----------------------------------------------------------------------


def _key_status(key: Mapping[str, Any], now: dt.datetime) -> str:
    if key["revoked"]:
        return "revoked"
    if key["usable"]:
        return "usable"
    expires = parse_api_time(key["expires_at"])
    if expires is not None and expires <= now:
        return "expired"
    if key["uses_left"] == 0:
        return "used up"
    return "unusable"


def _key_uses(key: Mapping[str, Any]) -> str:
    if key["uses_total"] is None:
        return "unlimited"
    return f"{key['uses_left']}/{key['uses_total']} left"


def _key_expiry(key: Mapping[str, Any], now: dt.datetime) -> str:
    expires = parse_api_time(key["expires_at"])
    if expires is None:
        return "never"
    text = relative_time(expires, now)
    return f"expired {text}" if expires <= now else text


def _network_names(ids: Iterable[str], networks: Sequence[Mapping[str, Any]]) -> list[str]:
    names = {n["id"]: n["name"] for n in networks}
    return [names.get(i, f"{i} (deleted)") for i in ids]


def key_create(ctx: Context) -> None:
    """``key create --network ID|NAME ...``: prints the new key's token, which is shown only once."""
    a = ctx.args
    if a.uses is None and a.expires_in is None and a.expires_at is None and not a.unlimited:
        raise CliError("say how long the key lives: --uses N, --expires-in DURATION, "
                       "--expires-at TIME, or --unlimited")
    if a.unlimited and a.uses is not None:
        raise CliError("--unlimited cannot be combined with --uses")
    networks = _networks(ctx)
    ids = list(dict.fromkeys(resolve(networks, ref, "network")["id"] for ref in a.network))
    body: dict[str, Any] = {"networks": ids, "tags": list(a.tag or [])}
    if a.uses is not None:
        body["uses"] = a.uses
    if a.unlimited:
        body["unlimited"] = True
    if a.expires_in is not None:
        expires = ctx.now + dt.timedelta(seconds=a.expires_in)
        body["expires_at"] = expires.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    elif a.expires_at is not None:
        body["expires_at"] = a.expires_at.isoformat()
    key = ctx.client.call("POST", "/v1/enrollment-keys", body)
    if ctx.as_json:
        return ctx.print_json(key)
    ctx.print(f"enrollment key {key['id']} created for {', '.join(_network_names(key['networks'], networks))}"
              f" (uses: {_key_uses(key)}; expires: {_key_expiry(key, ctx.now)})")
    ctx.print()
    ctx.print(f"    {key['token']}")
    ctx.print()
    ctx.print("This token is shown only once and cannot be recovered: store it now.")


def key_list(ctx: Context) -> None:
    """``key list``: every enrollment key, without secrets."""
    keys = _keys(ctx)
    if ctx.as_json:
        return ctx.print_json(_whole_list("enrollment_keys", keys))
    if not keys:
        return ctx.print("no enrollment keys: create one with `skymesh key create --network NAME --uses 1`")
    networks = _networks(ctx)
    rows = [(k["id"], ",".join(_network_names(k["networks"], networks)), _key_uses(k),
             _key_expiry(k, ctx.now), _dash(k["tags"]), _key_status(k, ctx.now),
             relative_time(k["created_at"], ctx.now)) for k in keys]
    ctx.print(format_table(("ID", "NETWORKS", "USES", "EXPIRES", "TAGS", "STATUS", "CREATED"), rows))


def key_revoke(ctx: Context) -> None:
    """``key revoke ID``: the key enrolls no more hosts; those it enrolled stay."""
    ctx.client.call("DELETE", _path("v1", "enrollment-keys", ctx.args.key_id))
    if not ctx.as_json:
        ctx.print(f"enrollment key {ctx.args.key_id} revoked")


# --- hosts --------------------------------------------------------------------------------


def _status(host: Mapping[str, Any]) -> str:
    return "online" if host["status"]["online"] else "offline"


def host_list(ctx: Context) -> None:
    """``host list``: one row per host with its networks, addresses and liveness."""
    hosts = _hosts(ctx)
    if ctx.as_json:
        return ctx.print_json(_whole_list("hosts", hosts))
    if not hosts:
        return ctx.print("no hosts yet: enroll one with a key from `skymesh key create`")
    networks = _networks(ctx)
    rows = [(h["name"], h["id"],
             _dash(_network_names((a["network_id"] for a in h["addresses"]), networks)),
             _dash(a["ipv4"] for a in h["addresses"]), _status(h),
             relative_time(h["status"]["last_seen"], ctx.now), relative_time(h["created_at"], ctx.now))
            for h in hosts]
    ctx.print(format_table(("NAME", "ID", "NETWORKS", "IPV4", "STATUS", "LAST SEEN", "CREATED"), rows))


def _host_details(host: Mapping[str, Any], ctx: Context, networks: Sequence[Mapping[str, Any]],
                  hosts: Sequence[Mapping[str, Any]]) -> str:
    st = host["status"]
    blocks = [format_fields([
        ("Name", host["name"]), ("ID", host["id"]), ("Status", _status(host)),
        ("Last seen", relative_time(st["last_seen"], ctx.now)),
        ("Agent", st["agent_version"] or "-"),
        ("Public key", host["wg_public_key"]), ("Listen port", host["listen_port"]),
        ("Endpoints", _dash(host["endpoints"])),
        ("Observed", host["observed_endpoint"] or "-"),
        ("Reported", _dash(st["reported_endpoints"])),
        ("Tags", _dash(host["tags"])), ("Enrolled by", host["enrollment_key_id"] or "-"),
        ("Created", f"{relative_time(host['created_at'], ctx.now)} ({host['created_at']})"),
    ])]
    if host["addresses"]:
        names = _network_names((a["network_id"] for a in host["addresses"]), networks)
        blocks.append(format_table(("NETWORK", "ID", "IPV4", "IPV6"), [
            (name, a["network_id"], a["ipv4"], a["ipv6"])
            for name, a in zip(names, host["addresses"], strict=True)]))
    if st["peers"]:
        by_key = {h["wg_public_key"]: h["name"] for h in hosts}
        blocks.append(format_table(("PEER", "PUBLIC KEY", "HANDSHAKE", "RX", "TX"), [
            (by_key.get(p["public_key"], "?"), p["public_key"],
             "never" if p["latest_handshake_age"] is None
             else f"{human_duration(p['latest_handshake_age'])} ago",
             human_bytes(p["rx_bytes"]), human_bytes(p["tx_bytes"])) for p in st["peers"]]))
    return "\n\n".join(blocks)


def host_show(ctx: Context) -> None:
    """``host show ID|NAME``: its settings, addresses in each network, and peers as it reported them."""
    hosts = _hosts(ctx)
    ref = resolve(hosts, ctx.args.host, "host")
    host = ctx.client.get(_path("v1", "hosts", ref["id"]))
    if ctx.as_json:
        return ctx.print_json(host)
    ctx.print(_host_details(host, ctx, _networks(ctx), hosts))


def host_update(ctx: Context) -> None:
    """``host update ID|NAME [--name] [--endpoint ...] [--listen-port] [--tag ...]``."""
    a = ctx.args
    body: dict[str, Any] = {}
    if a.new_name is not None:
        body["name"] = a.new_name
    if a.listen_port is not None:
        body["listen_port"] = a.listen_port
    if a.endpoint is not None or a.no_endpoints:
        body["endpoints"] = list(a.endpoint or [])
    if a.tag is not None or a.no_tags:
        body["tags"] = list(a.tag or [])
    _require_changes(body, "--name, --endpoint, --no-endpoints, --listen-port, --tag or --no-tags")
    ref = resolve(_hosts(ctx), a.host, "host")
    host = ctx.client.call("PATCH", _path("v1", "hosts", ref["id"]), body)
    if ctx.as_json:
        return ctx.print_json(host)
    ctx.print(f"host {host['name']} updated ({host['id']})")


def host_delete(ctx: Context) -> None:
    """``host delete ID|NAME``: it leaves every network and its certificate is revoked."""
    ref = resolve(_hosts(ctx), ctx.args.host, "host")
    ctx.client.call("DELETE", _path("v1", "hosts", ref["id"]))
    if not ctx.as_json:
        ctx.print(f"host {ref['name']} deleted ({ref['id']})")


# --- argparse -----------------------------------------------------------------------------


Command = Callable[[Context], None]


def run_command(args: argparse.Namespace, *, env: Mapping[str, str] | None = None,
                out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command argparse chose (``args.admin_command``); the exit code, never a traceback for
    an expected failure."""
    err = err or sys.stderr
    try:
        settings = resolve_settings(args.api, args.key, os.environ if env is None else env)
        args.admin_command(Context(ApiClient(settings), args, out or sys.stdout))
    except CliError as e:
        print(f"error: {e.message}", file=err)
        if e.hint:
            print(f"hint: {e.hint}", file=err)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument("--api", metavar="URL",
                       help=f"API base URL (default: ${ENV_API}, else api_url in "
                            f"$SKYMESH_HOME/{CONFIG_NAME})")
    group.add_argument("--key", metavar="ADMIN_KEY",
                       help=f"admin key (default: ${ENV_ADMIN_KEY}, else admin_key in "
                            f"$SKYMESH_HOME/{CONFIG_NAME})")
    group.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    group.add_argument("--page-size", type=_count, metavar="N",
                       help="records per API call when listing (the API says which sizes it takes; "
                            "default: its own); lists are complete either way")
    return common


def _leaf(group: Any, name: str, command: Command, help_text: str,
          common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(name, help=help_text, description=help_text,
                                                       parents=[common])
    parser.set_defaults(func=run_command, admin_command=command)
    return parser


def _group(subparsers: Any, name: str, help_text: str) -> Any:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest=f"{name}_action", metavar="ACTION", required=True)


def _add_network_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    g = _group(subparsers, "network", "create, list, show, change and delete networks")
    p = _leaf(g, "create", network_create, "create a network", common)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--ipv4", required=True, metavar="CIDR", help="IPv4 overlay range, e.g. 100.64.0.0/16")
    p.add_argument("--ipv6", metavar="CIDR", help="IPv6 overlay range (default: a random ULA /64)")
    _network_settings(p)
    _leaf(g, "list", network_list, "list networks", common)
    p = _leaf(g, "show", network_show, "show a network and its hosts", common)
    p.add_argument("network", metavar="ID|NAME")
    p = _leaf(g, "update", network_update, "change a network's name or settings", common)
    p.add_argument("network", metavar="ID|NAME")
    p.add_argument("--name", dest="new_name", metavar="NAME", help="new name")
    _network_settings(p)
    p = _leaf(g, "delete", network_delete, "delete a network", common)
    p.add_argument("network", metavar="ID|NAME")
    p.add_argument("--force", action="store_true", help="take its hosts out of it first")


def _network_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen-port", type=_count, metavar="N", help="default WireGuard port of hosts")
    p.add_argument("--keepalive", type=_count, metavar="N",
                   help="persistent keepalive in seconds (0 = off)")
    p.add_argument("--mtu", type=_count, metavar="N", help="interface MTU, 1280-9000")


def _add_key_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    g = _group(subparsers, "key", "create, list and revoke enrollment keys")
    p = _leaf(g, "create", key_create, "create an enrollment key (its token is shown once)", common)
    p.add_argument("--network", action="append", required=True, metavar="ID|NAME",
                   help="network a host enrolled with it joins (repeat for several)")
    p.add_argument("--uses", type=_count, metavar="N", help="how many hosts may enroll with it")
    life = p.add_mutually_exclusive_group()
    life.add_argument("--expires-in", type=parse_duration, metavar="DURATION",
                      help="valid for this long, e.g. 1h, 7d, 1h30m")
    life.add_argument("--expires-at", type=parse_time, metavar="RFC3339",
                      help="valid until this time, e.g. 2030-01-01T00:00:00Z")
    life.add_argument("--unlimited", action="store_true", help="any number of hosts, no expiry")
    p.add_argument("--tag", action="append", metavar="T", help="tag given to hosts it enrolls (repeatable)")
    _leaf(g, "list", key_list, "list enrollment keys (no secrets)", common)
    p = _leaf(g, "revoke", key_revoke, "revoke an enrollment key (hosts it enrolled stay)", common)
    p.add_argument("key_id", metavar="ID")


def _add_host_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    g = _group(subparsers, "host", "list, show, change and delete hosts")
    _leaf(g, "list", host_list, "list hosts", common)
    p = _leaf(g, "show", host_show, "show a host, its addresses and peers", common)
    p.add_argument("host", metavar="ID|NAME")
    p = _leaf(g, "update", host_update, "change a host's name, endpoints, port or tags", common)
    p.add_argument("host", metavar="ID|NAME")
    p.add_argument("--name", dest="new_name", metavar="NAME", help="new name")
    p.add_argument("--listen-port", type=_count, metavar="N", help="its WireGuard port")
    ends = p.add_mutually_exclusive_group()
    ends.add_argument("--endpoint", action="append", metavar="HOST:PORT",
                      help="where peers reach it; replaces the list (repeatable)")
    ends.add_argument("--no-endpoints", action="store_true", help="clear its endpoints")
    tags = p.add_mutually_exclusive_group()
    tags.add_argument("--tag", action="append", metavar="T", help="replaces its tags (repeatable)")
    tags.add_argument("--no-tags", action="store_true", help="clear its tags")
    p = _leaf(g, "delete", host_delete, "delete a host (it leaves every network)", common)
    p.add_argument("host", metavar="ID|NAME")


def add_commands(subparsers: Any) -> None:
    """Register ``network``, ``key`` and ``host`` on an ``add_subparsers()`` object.

    Each leaf parser sets ``func`` (:func:`run_command`), so the caller runs
    ``sys.exit(args.func(args))`` after parsing.
    """
    common = _common_options()
    _add_network_commands(subparsers, common)
    _add_key_commands(subparsers, common)
    _add_host_commands(subparsers, common)


def build_parser() -> argparse.ArgumentParser:
    """A ``skymesh`` parser with only the admin commands (for ``python -m skymesh.admin`` and tests)."""
    parser = argparse.ArgumentParser(prog="skymesh", description="skymesh admin CLI")
    add_commands(parser.add_subparsers(dest="group", metavar="COMMAND", required=True))
    return parser


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None,
         out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Parse ``argv`` and run it; the exit code (argparse's own usage errors still exit 2)."""
    args = build_parser().parse_args(argv)
    return run_command(args, env=env, out=out, err=err)


if __name__ == "__main__":
    sys.exit(main())
