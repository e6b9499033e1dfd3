"""Typed identifiers and the secrets shown once to users.

Ids are short, URL-safe and prefixed by kind so that a person reading a log or
a topic knows what they look at (``net_…``, ``host_…``, ``key_…``, ``grp_…``).

Tokens have the form ``skm_<kind>_<id>_<secret>``: the id locates the stored
record in one read, the secret is compared against its stored SHA-256 hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, NewType

if TYPE_CHECKING:
    import random

NetworkId = NewType("NetworkId", str)
HostId = NewType("HostId", str)
EnrollmentKeyId = NewType("EnrollmentKeyId", str)
AdminKeyId = NewType("AdminKeyId", str)
ClientId = NewType("ClientId", str)
GroupId = NewType("GroupId", str)  # an HA gateway group (issue 11): ``grp_…``

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_PREFIXES = {"network": "net", "host": "host", "enrollment_key": "key", "admin_key": "adm", "client": "cli",
               "group": "grp"}
TOKEN_KINDS = {"enrollment": "ek", "host": "ht", "admin": "ak"}


def new_id(kind: str, rng: random.Random, length: int = 12) -> str:
    """A new id such as ``net_4k2j9x0a1b2c`` (base36, ``length`` characters drawn from ``rng``).

    The caller brings the randomness (``random.SystemRandom()`` in the service), so the
    domain reads none itself.
    """
    return ID_PREFIXES[kind] + "_" + "".join(rng.choice(_ALPHABET) for _ in range(length))


def id_pattern(kind: str) -> str:
    """The shape of every id of ``kind`` (also in the OpenAPI document), e.g. ``^net_[0-9a-z]{4,40}$``."""
    return f"^{ID_PREFIXES[kind]}_[0-9a-z]{{4,40}}$"  # [0-9a-z] is _ALPHABET


_ID_SHAPES = {kind: re.compile(id_pattern(kind)) for kind in ID_PREFIXES}


def is_id(kind: str, value: str) -> bool:
    """Whether ``value`` can be an id of ``kind``; anything else names no record."""
    return _ID_SHAPES[kind].fullmatch(value) is not None


@dataclass(frozen=True)
class Token:
    """A bearer token split into the record it names and its secret part."""

    kind: str
    record_id: str
    secret: str

    def __str__(self) -> str:
        return f"skm_{TOKEN_KINDS[self.kind]}_{self.record_id}_{self.secret}"

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret)


def new_token(kind: str, record_id: str, rng: random.Random) -> Token:
    """A token for ``record_id`` with a fresh secret of 256 bits from ``rng`` (URL-safe base64).

    ``rng`` must be a ``random.SystemRandom`` outside tests: the secret is what
    authenticates the bearer (it is what ``secrets.token_urlsafe(32)`` would draw).
    """
    return Token(kind, record_id, base64.urlsafe_b64encode(rng.randbytes(32)).rstrip(b"=").decode("ascii"))


def parse_token(raw: str) -> Token | None:
    """Split ``skm_<kind>_<id>_<secret>``; ``None`` when it is not of that form."""
    if not raw.startswith("skm_"):
        return None
    parts = raw.split("_")
    # skm, kind, id-prefix, id-body, secret...; the secret may itself contain "_".
    if len(parts) < 5:
        return None
    kinds = {v: k for k, v in TOKEN_KINDS.items()}
    kind = kinds.get(parts[1])
    if kind is None:
        return None
    record_id = parts[2] + "_" + parts[3]
    secret = "_".join(parts[4:])
    if not secret or len(raw) > 200:
        return None
    return Token(kind, record_id, secret)


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest. Secrets are 256 random bits, so a fast hash is the right one."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
