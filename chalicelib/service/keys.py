"""Enrollment keys: how hosts join networks. The token is shown once and stored hashed."""

from __future__ import annotations

from ..domain import validate
from ..domain.ids import EnrollmentKeyId, HostId, NetworkId, new_id, new_token
from ..domain.models import EnrollmentKey
from ..errors import ConflictError, InvalidInputError, NotFoundError
from .deps import Deps
from .ports import PAGE_LIMIT_DEFAULT, Page, page_limit

MAX_USES = 1_000_000


class EnrollmentKeys:
    def __init__(self, deps: Deps) -> None:
        self._d = deps

    def create(self, *, networks: list[str], uses: int | None = None,
               expires_at: int | None = None, unlimited: bool = False,
               tags: list[str] | None = None, relay: str | None = None) -> tuple[EnrollmentKey, str]:
        """A new key and its token (the only time the token is seen).

        ``relay``: every host enrolled with it is relayed by this host from its first config; it
        must be a member of every network of the key (404: no such host; 409 naming the
        network it is not in, or where it is relayed itself)."""
        if not networks:
            raise InvalidInputError("networks must name at least one network id")
        ids = tuple(dict.fromkeys(networks))
        if len(ids) > self._d.settings.max_key_networks:
            raise InvalidInputError(f"a key can join at most {self._d.settings.max_key_networks} networks")
        if unlimited and (uses is not None or expires_at is not None):
            raise InvalidInputError("unlimited cannot be combined with uses or expires_at")
        if not unlimited and uses is None and expires_at is None:
            raise InvalidInputError("say how long the key lives: uses (a count), expires_at (a time) "
                                    "or unlimited: true")
        if uses is not None and not 1 <= uses <= MAX_USES:
            raise InvalidInputError(f"uses {uses} is out of range: use 1-{MAX_USES}")
        now = self._d.clock.now()
        if expires_at is not None and expires_at <= now:
            raise InvalidInputError("expires_at is in the past; give a time in the future")
        for network_id in ids:
            if self._d.store.get_network(network_id) is None:
                raise NotFoundError(f"network {network_id} does not exist")
        if relay is not None:
            self._check_relay(relay, ids)
        key_id = EnrollmentKeyId(new_id("enrollment_key", self._d.rng))  # type: ignore[arg-type]
        token = new_token("enrollment", key_id, self._d.rng)
        key = EnrollmentKey(
            id=key_id, networks=tuple(NetworkId(n) for n in ids), token_hash=token.secret_hash,
            uses_total=uses, uses_left=uses, expires_at=expires_at, unlimited=unlimited,
            tags=validate.tags(tags or []), revoked=False, created_at=now,
            relay=None if relay is None else HostId(relay),
        )
        self._d.store.put_enrollment_key(key)
        return key, str(token)

    def _check_relay(self, relay: str, network_ids: tuple[str, ...]) -> None:
        host = self._d.store.get_host(relay)
        if host is None:
            raise NotFoundError(f"relay {relay} does not exist")
        for network_id in network_ids:
            if network_id not in host.addresses:
                raise ConflictError(f"relay {relay} is not a member of network {network_id}; a key's relay "
                                    "must be a member of every network of the key", code="not_a_member")
            role = host.roles.get(NetworkId(network_id))
            if role is not None and role.relayed_by is not None:
                raise ConflictError(f"relay {relay} is relayed itself in network {network_id} (by "
                                    f"{role.relayed_by}); no relay chains", code="relay_chain")

    def list(self, limit: int = PAGE_LIMIT_DEFAULT, cursor: str | None = None) -> Page[EnrollmentKey]:
        """One page of enrollment keys in id order; see :meth:`Hosts.list <.hosts.Hosts.list>`."""
        return self._d.store.list_enrollment_keys(page_limit(limit), cursor)

    def get(self, key_id: str) -> EnrollmentKey:
        key = self._d.store.get_enrollment_key(key_id)
        if key is None:
            raise NotFoundError(f"enrollment key {key_id} does not exist")
        return key

    def revoke(self, key_id: str) -> EnrollmentKey:
        """From now on the key enrolls nobody; hosts it enrolled stay."""
        self._d.store.revoke_enrollment_key(key_id)
        return self.get(key_id)
