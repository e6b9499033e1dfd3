"""Where each record lives in the one table: its partition and sort key.

The table is described in :mod:`.items`; this module is the only place that spells a
key, so a key change is made once and every writer and reader follows.
"""

from __future__ import annotations

from ...domain.changes import ChangeId

__all__ = [
    "REGISTRY_PK", "REGISTRY_SK", "META", "PENDING", "CLAIM", "PENDING_PREFIX", "MEMBER_PREFIX",
    "DELTA_PREFIX", "NETWORK_PREFIX", "HOST_PREFIX", "KEY_PREFIX", "ADMIN_PREFIX", "CLIENT_PREFIX",
    "GROUP_PREFIX", "group_sk", "group_key_sk", "group_vote_sk",
    "network_pk", "member_sk", "client_sk", "ip_sk", "wgkey_pk", "identity_pk", "host_pk", "key_pk",
    "admin_pk", "change_sk", "change_id",
]

REGISTRY_PK, REGISTRY_SK = "REGISTRY", "NETWORKS"
META = "META"  # the record itself, beside what is stored under the same partition
PENDING = "PENDING"  # sort key of a registration under way
CLAIM = "CLAIM"  # sort key of a WireGuard key's claim

# The prefixes of listed records also start their cursors (see :mod:`.cursor`).
NETWORK_PREFIX, HOST_PREFIX, KEY_PREFIX, ADMIN_PREFIX = "NET#", "HOST#", "KEY#", "ADMIN#"
MEMBER_PREFIX, PENDING_PREFIX, DELTA_PREFIX = "MEMBER#", "PEND#", "DELTA#"
# A remote-access client lives in its network's partition. Its sort key sorts before ``META``,
# so the network's record and its pending changes stay next to each other (``network_head``).
CLIENT_PREFIX = "CLIENT#"
# issue 11: a gateway group, its key record and the control plane's voter promise, in the network's
# partition too (all sort before ``META``, like clients).
GROUP_PREFIX, GROUP_KEY_PREFIX, GROUP_VOTE_PREFIX = "GROUP#", "GKEY#", "GVOTE#"


def network_pk(network_id: str) -> str:
    return f"{NETWORK_PREFIX}{network_id}"


def member_sk(host_id: str) -> str:
    return f"{MEMBER_PREFIX}{host_id}"


def client_sk(client_id: str) -> str:
    return f"{CLIENT_PREFIX}{client_id}"


def group_sk(group_id: str) -> str:
    return f"{GROUP_PREFIX}{group_id}"


def group_key_sk(group_id: str) -> str:
    return f"{GROUP_KEY_PREFIX}{group_id}"


def group_vote_sk(group_id: str) -> str:
    return f"{GROUP_VOTE_PREFIX}{group_id}"


def delta_sk(seq: int) -> str:
    """A logged broadcast's sort key, zero-padded so that sort order is seq order."""
    return f"{DELTA_PREFIX}{seq:012d}"


def ip_sk(address: str) -> str:
    return f"IP#{address}"


def wgkey_pk(public_key: str) -> str:
    return f"WGKEY#{public_key}"


def identity_pk(host_id: str) -> str:
    return f"IDENTITY#{host_id}"


def host_pk(host_id: str) -> str:
    return f"{HOST_PREFIX}{host_id}"


def key_pk(key_id: str) -> str:
    return f"{KEY_PREFIX}{key_id}"


def admin_pk(key_id: str) -> str:
    return f"{ADMIN_PREFIX}{key_id}"


def change_sk(change_id: ChangeId) -> str:
    """A pending change's sort key: ``PEND#<created ns, 20 digits>-<nonce>``.

    The creation time comes first and zero-padded, so that the key order is the order
    of :class:`~chalicelib.domain.changes.ChangeId` (pending changes are read oldest first).
    """
    return f"{PENDING_PREFIX}{change_id.created_ns:020d}-{change_id.nonce}"


def change_id(sk: str) -> ChangeId:
    """The id a pending change's sort key holds (the inverse of :func:`change_sk`)."""
    created, _, nonce = sk.removeprefix(PENDING_PREFIX).partition("-")
    return ChangeId(int(created), nonce)
