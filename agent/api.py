"""The agent's HTTPS client of the skymesh REST API (stdlib only, bounded timeouts)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.domain import protocol

from . import __version__

__all__ = ["ApiClient", "ApiError", "Unreachable", "FullConfig", "CLAIM_TIMEOUT"]

TIMEOUT = 15.0
KEY_TIMEOUT = 5.0  # the group key is read and written from the agent's loop: not its 15 s
CLAIM_TIMEOUT = 1.0  # a vote later than a lease (1.5 s) could only renew a lease already lost


class ApiError(RuntimeError):
    """The API answered with an error (4xx/5xx); ``message`` is the API's own text."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status} {code})")
        self.status, self.code, self.message = status, code, message


class Unreachable(RuntimeError):
    """No answer from the API (connection refused, timeout, DNS)."""


@dataclass(frozen=True)
class FullConfig:
    """The answer of ``/config``: full snapshots, and for networks the agent named, what it missed."""

    host_id: str
    snapshots: tuple[protocol.Snapshot, ...]
    catch_ups: tuple[protocol.CatchUp, ...] = ()


class ApiClient:
    def __init__(self, server: str, token: str | None = None, timeout: float = TIMEOUT) -> None:
        self.server = server.rstrip("/")
        self._token = token
        self._timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              token: str | None = None, timeout: float | None = None) -> dict[str, Any] | None:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("User-Agent", f"skymesh-agent/{__version__}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        bearer = token or self._token
        if bearer:
            req.add_header("Authorization", f"Bearer {bearer}")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self._timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = json.loads(raw)["error"]
                raise ApiError(e.code, str(err.get("code", "")), str(err.get("message", ""))) from None
            except (ValueError, KeyError, TypeError):
                raise ApiError(e.code, "", raw[:200].decode(errors="replace") or e.reason) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise Unreachable(f"cannot reach {self.server}: {reason}") from None
        return json.loads(raw) if raw else None

    def register(self, enrollment_token: str, *, name: str, wg_public_key: str, listen_port: int,
                 endpoints: list[str], csr_pem: str) -> dict[str, Any]:
        out = self._call("POST", "/v1/hosts", {
            "name": name, "wg_public_key": wg_public_key, "listen_port": listen_port,
            "endpoints": endpoints, "csr_pem": csr_pem}, token=enrollment_token)
        assert out is not None
        return out

    def config(self, host_id: str, known: Mapping[str, int] | None = None) -> FullConfig:
        """Every network of this host: a full snapshot, or, for a network in ``known``
        (network id → the seq we have), the deltas missed since, when the API still keeps them."""
        params = {"v": str(protocol.VERSION)}  # the schema it reads: the API refuses what it cannot serve
        if known:
            pairs = sorted(known.items())[: protocol.MAX_KNOWN_NETWORKS]
            params["known"] = ",".join(f"{n}:{q}" for n, q in pairs)
        out = self._call("GET", f"/v1/hosts/{host_id}/config?{urllib.parse.urlencode(params)}")
        assert out is not None
        try:
            snaps = tuple(protocol.Snapshot(
                network=protocol.network_from_wire({**n["network"], "seq": n["seq"]}),
                members=tuple(protocol.member_from_wire(n["network"]["id"], m) for m in n["members"]),
                clients=tuple(protocol.client_from_wire(n["network"]["id"], c) for c in n.get("clients", ())),
                groups=tuple(protocol.group_from_wire(n["network"]["id"], g) for g in n.get("groups", ())),
            ) for n in out["networks"])
            catch_ups = tuple(protocol.CatchUp(
                network_id=str(c["network_id"]), seq=int(c["seq"]),
                deltas=tuple(_delta(d) for d in c["deltas"]),
            ) for c in out.get("catch_ups", ()))
        except (KeyError, TypeError, ValueError) as e:
            raise protocol.ProtocolError(f"bad /config answer: {e}") from None
        return FullConfig(host_id=str(out["host_id"]), snapshots=snaps, catch_ups=catch_ups)

    def update_endpoints(self, host_id: str, endpoints: list[str]) -> None:
        self._call("PATCH", f"/v1/hosts/{host_id}", {"endpoints": endpoints})

    def delete_host(self, host_id: str) -> None:
        self._call("DELETE", f"/v1/hosts/{host_id}")

    def _group_path(self, network_id: str, group_id: str) -> str:
        return (f"/v1/networks/{urllib.parse.quote(network_id, safe='')}/gateway-groups/"
                f"{urllib.parse.quote(group_id, safe='')}")

    def group_key(self, network_id: str, group_id: str, timeout: float = KEY_TIMEOUT) -> dict[str, Any]:
        """A member's read of its group's key: ``{record, coverage, seal_to, make}`` (ciphertext only)."""
        out = self._call("GET", self._group_path(network_id, group_id) + "/key", timeout=timeout)
        if not isinstance(out, dict):
            raise protocol.ProtocolError(f"bad key answer: {out!r:.200}")
        return out

    def put_group_key(self, network_id: str, group_id: str, upload: Mapping[str, Any],
                      timeout: float = KEY_TIMEOUT) -> dict[str, Any]:
        """Upload ``{public_key, version, entries}`` (sealed copies only); the API's answer."""
        out = self._call("PUT", self._group_path(network_id, group_id) + "/key", dict(upload),
                         timeout=timeout)
        return out if isinstance(out, dict) else {}

    def claim_gateway_group(self, network_id: str, group_id: str, *, member: str, epoch: int,
                            incarnation: int, timeout: float = CLAIM_TIMEOUT) -> tuple[bool, int]:
        """The control plane's vote on a member's claim of a gateway group: (granted, the highest
        epoch it promised). Raises :class:`ApiError` (refused), :class:`Unreachable` (no answer within
        ``timeout``) or :class:`protocol.ProtocolError` (an answer not shaped so)."""
        out = self._call("POST", self._group_path(network_id, group_id) + "/claims",
                         {"member": member, "epoch": epoch, "incarnation": incarnation}, timeout=timeout)
        granted, promised = (out or {}).get("granted"), (out or {}).get("epoch")
        if not isinstance(granted, bool) or not isinstance(promised, int) or isinstance(promised, bool) \
                or promised < 0:
            raise protocol.ProtocolError(f"bad claims answer: {out!r:.200}")
        return granted, promised


def _delta(d: Any) -> protocol.Delta:
    if not isinstance(d, dict):
        raise protocol.ProtocolError("a catch-up delta must be a JSON object")
    msg = protocol.decode(d)
    if not isinstance(msg, protocol.Delta):
        raise protocol.ProtocolError(f"a catch-up holds a {msg.type}, not a delta")
    return msg
