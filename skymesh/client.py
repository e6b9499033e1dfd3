"""The Python client of REST API v1, shared by the admin CLI, the lab and the benches (stdlib only).

>>> api = ApiClient("http://127.0.0.1:8787", admin_key)               # doctest: +SKIP
>>> net = api.create_network("office", "100.64.0.0/24")
>>> key = api.create_enrollment_key([net["id"]], uses=3)
>>> api.list_hosts()                                                  # every page

One method per route, each with a bounded timeout. An error answer raises :class:`ApiError`
with the API's status, ``code`` and ``message`` (from its ``{"error": {"code", "message"}}``
shape, or the best message another body gives); no answer at all raises :class:`Unreachable`.
Both are kinds of :class:`~skymesh.errors.CliError`: a command prints them as ``error: <message>``
and exits 1 or 2.

:func:`send` is the level below: one exchange with any URL, where an error status is an
answer too and no answer is urllib's own ``OSError`` (the lab's health probes want exactly
that). ``opener`` has the signature of ``urllib.request.urlopen(request, timeout=)``; the lab
passes one that makes the exchange inside a network namespace.

The host agent keeps its own client (``agent/api.py``): ``agent/`` imports nothing of ``skymesh``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import EXIT_UNREACHABLE, CliError

__all__ = [
    "DEFAULT_TIMEOUT",
    "Answer",
    "ApiClient",
    "ApiError",
    "Unreachable",
    "error_from_answer",
    "list_all",
    "send",
]

DEFAULT_TIMEOUT = 30.0
USER_AGENT = "skymesh-cli"

Opener = Callable[..., Any]


class ApiError(CliError):
    """The API answered with an error status.

    ``code`` is the API's machine code, ``""`` when the body was not the API's error shape
    (a proxy's or a gateway's page); ``message`` is its text, meant for a person.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Unreachable(CliError):
    """No answer from the API (connection refused, timeout, reset, name not resolved)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=EXIT_UNREACHABLE)


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: its status and its body as sent."""

    status: int
    raw: bytes

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The decoded JSON body, ``None`` when it is empty. ``ValueError`` when it is not JSON."""
        return json.loads(self.raw) if self.raw.strip() else None


def send(method: str, url: str, body: Any = None, token: str | None = None, *,
         timeout: float = DEFAULT_TIMEOUT, opener: Opener = urllib.request.urlopen,
         accept: str = "application/json") -> Answer:
    """One JSON request to ``url``; an error status is an :class:`Answer` too.

    ``token`` goes out as ``Authorization: Bearer``; ``accept`` as ``Accept`` (a binary answer,
    a PNG, is only sent to a request that accepts it). Raises the ``OSError`` urllib raised
    (``URLError``, ``TimeoutError``, ...) when there is no answer within ``timeout`` seconds.
    """
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": accept, "User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with opener(request, timeout=timeout) as resp:
            return Answer(resp.status, resp.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, _read_quietly(e))


def _read_quietly(e: urllib.error.HTTPError) -> bytes:
    try:
        return e.read() or b""
    except OSError:
        return b""


def error_from_answer(status: int, raw: bytes) -> ApiError:
    """The API's ``{"error": {"code", "message"}}``; for other bodies, the best message there is."""
    try:
        payload = json.loads(raw) if raw.strip() else None
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return ApiError(status, str(err.get("code") or ""), err["message"])
        if isinstance(payload.get("message"), str):  # API Gateway's own errors
            return ApiError(status, "", f"HTTP {status}: {payload['message']}")
    text = raw.decode("utf-8", "replace").strip().splitlines()
    return ApiError(status, "", f"HTTP {status}" + (f": {text[0][:200]}" if text else ""))


def list_all(get_page: Callable[[Mapping[str, str]], Any], key: str,
             page_size: int | None = None) -> list[dict[str, Any]]:
    """Every record of a paged list route, following ``next_cursor`` to the last page.

    ``get_page(query)`` answers one ``GET`` of the route with these query parameters;
    ``key`` names the list in each answer (``hosts``). ``page_size`` is sent as ``limit``
    (default: the API's). Raises :class:`~skymesh.errors.CliError` if the API hands out a
    cursor twice, which would otherwise never end.

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


def _path(*parts: str) -> str:
    """``/v1/hosts/<id>`` with every part quoted, so an id cannot change the route."""
    return "/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)


def _given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class ApiClient:
    """Calls to REST API v1 at ``api_url`` with ``token`` (an admin key, unless a method takes its own).

    Every call is bounded by ``timeout`` seconds; errors are :class:`ApiError` (the API said
    no) and :class:`Unreachable` (no answer).
    """

    def __init__(self, api_url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                 opener: Opener = urllib.request.urlopen) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._open = opener

    # --- any route ------------------------------------------------------------------------

    def url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        """The full URL of ``path`` with ``query``."""
        return self.api_url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def answer(self, method: str, path: str, body: Any = None, *, query: Mapping[str, str] | None = None,
               token: str | None = None, accept: str = "application/json") -> Answer:
        """One call, whatever its status (for callers that look at the status themselves).

        Raises :class:`Unreachable` when the API does not answer.
        """
        try:
            return send(method, self.url(path, query), body, token or self.token, timeout=self.timeout,
                        opener=self._open, accept=accept)
        except urllib.error.URLError as e:
            raise self._unreachable(e.reason) from None
        except OSError as e:  # timeouts and resets after the connection was made
            raise self._unreachable(e) from None

    def call(self, method: str, path: str, body: Any = None, *, query: Mapping[str, str] | None = None,
             token: str | None = None) -> Any:
        """The decoded JSON answer (``None`` for an empty one).

        Raises :class:`ApiError` for an error status, :class:`Unreachable` when the API does
        not answer, and a :class:`~skymesh.errors.CliError` when a 2xx body is not JSON.
        """
        answer = self.answer(method, path, body, query=query, token=token)
        if not answer.ok:
            raise error_from_answer(answer.status, answer.raw)
        try:
            return answer.json()
        except ValueError:
            raise CliError(f"the API at {self.url(path, query)} answered with something that is not JSON"
                           ) from None

    def get(self, path: str) -> Any:
        """``GET path``, decoded."""
        return self.call("GET", path)

    def list_records(self, resource: str, key: str, page_size: int | None = None) -> list[dict[str, Any]]:
        """Every record of ``GET /v1/<resource>``, however many pages it takes."""
        return list_all(lambda query: self.call("GET", f"/v1/{resource}", query=query or None), key,
                        page_size)

    def _unreachable(self, reason: object) -> Unreachable:
        if isinstance(reason, ConnectionRefusedError):
            return Unreachable(f"cannot reach the skymesh API at {self.api_url}: "
                               "is `skymesh local up` running?")
        detail = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        return Unreachable(f"cannot reach the skymesh API at {self.api_url}: {detail}")

    # --- meta -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``."""
        return self.call("GET", "/v1/health")

    # --- networks -------------------------------------------------------------------------

    def create_network(self, name: str, ipv4_cidr: str, *, ipv6_cidr: str | None = None,
                       listen_port: int | None = None, keepalive: int | None = None,
                       mtu: int | None = None) -> dict[str, Any]:
        """The new network; settings left ``None`` take the API's defaults (IPv6: a random ULA /64)."""
        body = {"name": name, "ipv4_cidr": ipv4_cidr, **_given(
            ipv6_cidr=ipv6_cidr, listen_port=listen_port, keepalive=keepalive, mtu=mtu)}
        return self.call("POST", "/v1/networks", body)

    def list_networks(self, page_size: int | None = None) -> list[dict[str, Any]]:
        """Every network, however many pages it takes."""
        return self.list_records("networks", "networks", page_size)

    def get_network(self, network_id: str) -> dict[str, Any]:
        return self.get(_path("v1", "networks", network_id))

    def update_network(self, network_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH`` with ``changes`` (name, keepalive, mtu, listen_port); the network as it is now."""
        return self.call("PATCH", _path("v1", "networks", network_id), dict(changes))

    def delete_network(self, network_id: str, *, force: bool = False) -> None:
        """Without ``force`` a network with hosts is refused (``network_not_empty``)."""
        self.call("DELETE", _path("v1", "networks", network_id), query={"force": "true"} if force else None)

    # --- enrollment keys ------------------------------------------------------------------

    def create_enrollment_key(self, networks: Iterable[str], *, uses: int | None = None,
                              unlimited: bool = False, expires_at: str | None = None,
                              tags: Iterable[str] | None = None, relay: str | None = None) -> dict[str, Any]:
        """The created key; its one-time ``token`` is in the answer. ``expires_at`` is RFC 3339;
        ``relay``: the host that relays every host enrolled with it."""
        body: dict[str, Any] = {"networks": list(networks)}
        if relay is not None:
            body["relay"] = relay
        if tags is not None:
            body["tags"] = list(tags)
        body |= _given(uses=uses, unlimited=True if unlimited else None, expires_at=expires_at)
        return self.call("POST", "/v1/enrollment-keys", body)

    def list_enrollment_keys(self, page_size: int | None = None) -> list[dict[str, Any]]:
        """Every enrollment key (no secrets), however many pages it takes."""
        return self.list_records("enrollment-keys", "enrollment_keys", page_size)

    def revoke_enrollment_key(self, key_id: str) -> None:
        """The key enrolls no more hosts; those it enrolled stay."""
        self.call("DELETE", _path("v1", "enrollment-keys", key_id))

    # --- hosts ----------------------------------------------------------------------------

    def register_host(self, enrollment_token: str, registration: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/hosts`` with an enrollment token: the host, its token, certificate and broker."""
        return self.call("POST", "/v1/hosts", dict(registration),
                         token=enrollment_token)

    def list_hosts(self, page_size: int | None = None) -> list[dict[str, Any]]:
        """Every host, however many pages it takes."""
        return self.list_records("hosts", "hosts", page_size)

    def get_host(self, host_id: str) -> dict[str, Any]:
        return self.get(_path("v1", "hosts", host_id))

    def host_addresses(self, host_id: str) -> list[dict[str, str]]:
        """``[{network_id, ipv4, ipv6}]`` of a host (overlay addresses, without prefix length)."""
        return self.get_host(host_id)["addresses"]

    def update_host(self, host_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH`` with ``changes`` (name, endpoints, listen_port, tags); the host as it is now."""
        return self.call("PATCH", _path("v1", "hosts", host_id), dict(changes))

    def delete_host(self, host_id: str) -> None:
        """It leaves every network and its certificate is revoked."""
        self.call("DELETE", _path("v1", "hosts", host_id))

    # --- gateways and members' internet use (issue 9) -------------------------------------

    def put_gateway(self, network_id: str, host_id: str, role: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT`` the member's gateway role (remote_access, egress, internet, endpoint; fields left
        out keep their value); the gateway as it is now."""
        return self.call("PUT", _path("v1", "networks", network_id, "gateways", host_id), dict(role))

    def get_gateway(self, network_id: str, host_id: str) -> dict[str, Any]:
        return self.get(_path("v1", "networks", network_id, "gateways", host_id))

    def list_gateways(self, network_id: str) -> list[dict[str, Any]]:
        """Every gateway of the network."""
        return self.get(_path("v1", "networks", network_id, "gateways"))["gateways"]

    # --- latency (issue 10: probes) ------------------------------------------------------

    def latency(self, network_id: str) -> dict[str, Any]:
        """The network's latency matrix: ``{network_id, rows: [{from, to, rtt_ms, loss_pct, up, age_s}]}``."""
        return self.get(_path("v1", "networks", network_id, "latency"))

    def delete_gateway(self, network_id: str, host_id: str, *, force: bool = False) -> None:
        """Without ``force`` a gateway that clients or hosts use is refused (``gateway_in_use``)."""
        self.call("DELETE", _path("v1", "networks", network_id, "gateways", host_id),
                  query={"force": "true"} if force else None)

    def update_member(self, network_id: str, host_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH`` the member's internet_gateway (a host id, "auto" or None), full_tunnel and pinned
        (range → gateway host id, or None: automatic); the member now."""
        return self.call("PATCH", _path("v1", "networks", network_id, "members", host_id), dict(changes))

    # --- relays (issue 10) ----------------------------------------------------------------

    def put_relay(self, network_id: str, relay_id: str, relayed: Iterable[str]) -> dict[str, Any]:
        """``PUT`` the hosts ``relay_id`` relays, exactly; the relay with its hosts as they are now."""
        return self.call("PUT", _path("v1", "networks", network_id, "relays", relay_id),
                         {"relayed": list(relayed)})

    def list_relays(self, network_id: str) -> list[dict[str, Any]]:
        """Every relay of the network with the hosts it relays."""
        return self.relays(network_id)["relays"]

    def relays(self, network_id: str) -> dict[str, Any]:
        """The network's relays (``relays``) and the pairs relayed automatically (``pairs``)."""
        return self.get(_path("v1", "networks", network_id, "relays"))  # type: ignore[no-any-return]

    def delete_relay(self, network_id: str, relay_id: str) -> None:
        """Every host ``relay_id`` relays goes direct again (404 when it relays none)."""
        self.call("DELETE", _path("v1", "networks", network_id, "relays", relay_id))

    # --- HA gateway groups (issue 11) -----------------------------------------------------

    def create_group(self, network_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST`` a gateway group (name, members in priority order, floating_endpoint)."""
        return self.call("POST", _path("v1", "networks", network_id, "gateway-groups"), dict(body))

    def list_groups(self, network_id: str) -> list[dict[str, Any]]:
        return self.get(_path("v1", "networks", network_id, "gateway-groups"))["groups"]

    def get_group(self, network_id: str, group_id: str) -> dict[str, Any]:
        return self.get(_path("v1", "networks", network_id, "gateway-groups", group_id))

    def update_group(self, network_id: str, group_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH`` (add, remove, priority, name, floating_endpoint): ``{group, removed}``."""
        return self.call("PATCH", _path("v1", "networks", network_id, "gateway-groups", group_id),
                         dict(changes))

    def remove_group_member(self, network_id: str, group_id: str, host_id: str) -> dict[str, Any]:
        """The member leaves the group; the answer says whether it still knows the group's key."""
        return self.call("DELETE", _path("v1", "networks", network_id, "gateway-groups", group_id,
                                         "members", host_id))

    def rotate_group_key(self, network_id: str, group_id: str) -> dict[str, Any]:
        return self.call("POST", _path("v1", "networks", network_id, "gateway-groups", group_id,
                                       "rotate-key"))

    def delete_group(self, network_id: str, group_id: str) -> None:
        self.call("DELETE", _path("v1", "networks", network_id, "gateway-groups", group_id))

    # --- remote-access clients ------------------------------------------------------------

    def create_client(self, network_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST …/clients``: ``{client, config, qr_svg}`` (a file only when the server made the key)."""
        return self.call("POST", _path("v1", "networks", network_id, "clients"), dict(body))

    def list_clients(self, network_id: str, page_size: int | None = None) -> list[dict[str, Any]]:
        """Every client of the network with its connected fields, however many pages it takes."""
        path = _path("v1", "networks", network_id, "clients")
        return list_all(lambda query: self.call("GET", path, query=query or None), "clients", page_size)

    def get_client(self, network_id: str, client_id: str) -> dict[str, Any]:
        return self.get(_path("v1", "networks", network_id, "clients", client_id))

    def update_client(self, network_id: str, client_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH`` with ``changes`` (name, enabled, gateway, public_key, dns, ...); the client now."""
        return self.call("PATCH", _path("v1", "networks", network_id, "clients", client_id), dict(changes))

    def delete_client(self, network_id: str, client_id: str) -> None:
        self.call("DELETE", _path("v1", "networks", network_id, "clients", client_id))

    def client_config(self, network_id: str, client_id: str, fmt: str = "conf") -> bytes:
        """The client's wg-quick file (``conf``, without its private key) or its QR code (``png``,
        ``svg``)."""
        accept = {"conf": "text/plain", "png": "image/png", "svg": "image/svg+xml"}[fmt]
        path = _path("v1", "networks", network_id, "clients", client_id, "config")
        answer = self.answer("GET", path, query={"format": fmt}, accept=accept)
        if not answer.ok:
            raise error_from_answer(answer.status, answer.raw)
        return answer.raw
