"""Who is calling: admin keys, host tokens, enrollment tokens. All stored hashed."""

from __future__ import annotations

import random
from typing import Protocol

from ..domain.ids import Token, new_id, new_token, parse_token, secret_matches
from ..domain.models import AdminKey, EnrollmentKey, Host
from ..errors import ForbiddenError, UnauthorizedError
from .ports import Clock, Store


class AuthDeps(Protocol):
    """What :class:`Auth` uses of the service's dependencies (a ``Deps`` has them all)."""

    @property
    def store(self) -> Store: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def rng(self) -> random.Random: ...


def _token(raw: str | None, kind: str, what: str) -> Token:
    if not raw:
        raise UnauthorizedError(f"this call needs `Authorization: Bearer <{what}>`")
    token = parse_token(raw)
    if token is None or token.kind != kind:
        raise UnauthorizedError(f"the bearer token is not {what}")
    return token


class Auth:
    def __init__(self, deps: AuthDeps) -> None:
        self._d = deps

    def admin(self, raw: str | None) -> AdminKey:
        token = _token(raw, "admin", "an admin key")
        key = self._d.store.get_admin_key(token.record_id)
        if key is None or not secret_matches(token.secret, key.token_hash):
            raise UnauthorizedError("unknown admin key")
        return key

    def host(self, raw: str | None, host_id: str) -> Host:
        """The host whose token ``raw`` is; 403 when it is another host's token."""
        token = _token(raw, "host", "a host token")
        if token.record_id != host_id:
            raise ForbiddenError("this host token belongs to another host")
        host = self._d.store.get_host(host_id)
        if host is None or not secret_matches(token.secret, host.token_hash):
            raise UnauthorizedError("unknown host token (was the host deleted?)")
        return host

    def any_host(self, raw: str | None) -> Host:
        """The host whose token ``raw`` is, whichever host that is (routes without a host id in
        their path: what the host may do there is the use case's to check)."""
        token = _token(raw, "host", "a host token")
        return self.host(raw, token.record_id)

    def enrollment(self, raw: str | None) -> EnrollmentKey:
        """The enrollment key ``raw`` names; 403 with the reason when it cannot enroll now."""
        token = _token(raw, "enrollment", "an enrollment token")
        key = self._d.store.get_enrollment_key(token.record_id)
        if key is None or not secret_matches(token.secret, key.token_hash):
            raise UnauthorizedError("unknown enrollment token")
        reason = key.refusal(self._d.clock.now())
        if reason:
            raise ForbiddenError(reason, code="enrollment_key_refused")
        return key

    def ensure_admin_key(self, existing: str | None = None) -> str:
        """``existing`` when it is a valid admin key; otherwise a new admin key's token."""
        if existing:
            try:
                self.admin(existing)
                return existing
            except UnauthorizedError:
                pass
        key_id = new_id("admin_key", self._d.rng)  # type: ignore[arg-type]
        token = new_token("admin", key_id, self._d.rng)
        self._d.store.put_admin_key(AdminKey(key_id, token.secret_hash, "admin", self._d.clock.now()))
        return str(token)
