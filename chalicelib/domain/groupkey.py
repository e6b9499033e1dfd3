"""A gateway group's shared WireGuard key as the control plane holds it: public parts and ciphertext only.

Members of a gateway group share one WireGuard identity so that a client with one ``[Peer]``
follows the floating address to whichever member is active. The group's private key is made
on a member (``agent/groupkey.py``) and sealed from member to member with the members' own
WireGuard keys; the control plane stores and relays the sealed copies and never holds a key
that opens them. So this module can check everything about an upload except the plaintext:
shapes and sizes, who sealed to whom with which public key, the version, who is covered,
who is pending, whose copy is stale, who was removed but still knows the key.

The flows are pure decisions over a :class:`GroupKeyRecord` and the group's members as they
are now (``{host id: its WireGuard public key}``); the service stores what they return with a
conditional write on ``version`` (docs/ha-groups.md).

- create: a member makes version 1 and uploads a copy sealed to itself and to the others
  it knows (:func:`accept_upload`); members it could not seal to yet are ``pending``.
- add member: any member holding the key seals to the new one (:func:`seal_work` says to
  whom), uploaded at the same version.
- a member's own WireGuard key rotated: its copy was sealed to the old key and is ``stale``
  until a key holder re-seals it (same path as add member).
- remove member (:func:`remove_member`): its copy is deleted, but it still knows the key;
  the record and the answer say so until ``rotate-key``.
- rotate-key (:func:`rotation_plan`): a member makes version + 1 and seals to all current
  members; removed members no longer know the group key; clients need the new public key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ConflictError, ForbiddenError, InvalidInputError
from .ids import HostId, NetworkId, is_id
from .validate import wireguard_key

__all__ = [
    "SUITE", "SEALED_SIZE", "SEALED_B64_LENGTH", "MAX_ENTRIES", "KEY_SIZE",
    "SealContext", "SealedEntry", "GroupKeyRecord", "KeyUpload", "Coverage", "Accepted", "Removal",
    "RotationPlan", "associated_data", "coverage", "accept_upload", "remove_member", "seal_work",
    "rotation_plan", "rotation_notice", "sealed_bytes",
]

KEY_SIZE = 32  # an X25519 key, private or public
TAG_SIZE = 16  # Poly1305
SUITE = 1  # X25519 (ephemeral + sender static) -> HKDF-SHA256 -> ChaCha20-Poly1305
# suite byte | ephemeral public key | the sealed 32-byte private key | tag: 81 bytes, 108 in base64.
SEALED_SIZE = 1 + KEY_SIZE + KEY_SIZE + TAG_SIZE
SEALED_B64_LENGTH = 4 * ((SEALED_SIZE + 2) // 3)
# A group is a handful of gateways; the bound keeps a record far below DynamoDB's 400 KB item.
MAX_ENTRIES = 32
# The group id's owner is the group record (not built yet); this is the shape the key accepts.
_LABEL = b"skymesh/gateway-group-key/v1"


def _field(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise InvalidInputError("a sealing context field is longer than 65535 bytes")
    return len(value).to_bytes(2, "big") + value


@dataclass(frozen=True)
class SealContext:
    """Everything a sealed copy is bound to (its associated data): opening it under any other
    network, group, version, group public key, sender or recipient fails."""

    network_id: str
    group_id: str
    version: int
    group_public_key: str
    sender_public_key: str
    recipient_public_key: str

    def associated_data(self) -> bytes:
        return associated_data(self)


def associated_data(context: SealContext) -> bytes:
    """The canonical bytes of ``context``: every field length-prefixed, so that no two
    different contexts give the same bytes (``("ab", "c")`` is not ``("a", "bc")``)."""
    if not 1 <= context.version < 2**63:
        raise InvalidInputError(f"key version {context.version} is out of range: 1 to 2**63 - 1")
    keys = (context.group_public_key, context.sender_public_key, context.recipient_public_key)
    return b"".join([
        _field(_LABEL), _field(context.network_id.encode()), _field(context.group_id.encode()),
        context.version.to_bytes(8, "big"), *(_field(base64.b64decode(key)) for key in keys)])


def sealed_bytes(ciphertext: str, field_name: str = "ciphertext") -> bytes:
    """The raw bytes of a sealed copy, or :class:`InvalidInputError` unless it is canonical
    base64 of exactly :data:`SEALED_SIZE` bytes starting with the suite byte."""
    try:
        raw = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    canonical = base64.b64encode(raw).decode() == ciphertext
    if len(ciphertext) != SEALED_B64_LENGTH or len(raw) != SEALED_SIZE or not canonical:
        raise InvalidInputError(
            f"{field_name} is not a sealed group key: expected {SEALED_B64_LENGTH} characters of base64 "
            f"({SEALED_SIZE} bytes) as the agent's groupkey.seal makes them")
    if raw[0] != SUITE:
        raise InvalidInputError(f"{field_name} uses sealing suite {raw[0]}; this control plane knows "
                                f"suite {SUITE}")
    return raw


@dataclass(frozen=True)
class SealedEntry:
    """One member's copy of the group's private key, sealed by ``sender`` to ``recipient``'s
    WireGuard public key as it was at sealing time."""

    recipient: HostId
    recipient_public_key: str
    sender: HostId
    sender_public_key: str
    ciphertext: str

    def to_item(self) -> dict[str, str]:
        return {"recipient": self.recipient, "recipient_public_key": self.recipient_public_key,
                "sender": self.sender, "sender_public_key": self.sender_public_key,
                "ciphertext": self.ciphertext}

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> SealedEntry:
        """An entry from what a member uploaded (or the store holds); every field checked."""
        if not isinstance(item, Mapping):
            raise InvalidInputError("a sealed entry is an object with recipient, recipient_public_key, "
                                    "sender, sender_public_key and ciphertext")
        values = {}
        for name in ("recipient", "recipient_public_key", "sender", "sender_public_key", "ciphertext"):
            value = item.get(name)
            if not isinstance(value, str):
                raise InvalidInputError(f"sealed entry: {name} is missing or not a string")
            values[name] = value
        for name in ("recipient", "sender"):
            if not is_id("host", values[name]):
                raise InvalidInputError(f"sealed entry: {name} {values[name][:48]!r} is not a host id")
        wireguard_key(values["recipient_public_key"], "recipient_public_key")
        wireguard_key(values["sender_public_key"], "sender_public_key")
        sealed_bytes(values["ciphertext"])
        return cls(HostId(values["recipient"]), values["recipient_public_key"], HostId(values["sender"]),
                   values["sender_public_key"], values["ciphertext"])


@dataclass(frozen=True)
class GroupKeyRecord:
    """The control plane's record of a group's key: its public key, version and sealed copies.

    ``former_members`` are hosts removed from the group that received this version's key:
    they still know it until ``rotate-key`` makes a new version.
    """

    network_id: NetworkId
    group_id: str
    public_key: str
    version: int
    entries: tuple[SealedEntry, ...] = ()
    former_members: tuple[HostId, ...] = ()

    def entry_for(self, host: HostId) -> SealedEntry | None:
        return next((entry for entry in self.entries if entry.recipient == host), None)

    def context_for(self, entry: SealedEntry) -> SealContext:
        """What ``entry`` must have been sealed under to be this record's current key."""
        return SealContext(self.network_id, self.group_id, self.version, self.public_key,
                           entry.sender_public_key, entry.recipient_public_key)

    def to_item(self) -> dict[str, Any]:
        return {"network_id": self.network_id, "group_id": self.group_id, "public_key": self.public_key,
                "version": self.version, "entries": [entry.to_item() for entry in self.entries],
                "former_members": list(self.former_members)}

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> GroupKeyRecord:
        return cls(NetworkId(item["network_id"]), item["group_id"], item["public_key"], int(item["version"]),
                   tuple(SealedEntry.from_item(entry) for entry in item["entries"]),
                   tuple(HostId(host) for host in item["former_members"]))


@dataclass(frozen=True)
class KeyUpload:
    """What a member sends: the key's public half and version, and the copies it sealed."""

    public_key: str
    version: int
    entries: tuple[SealedEntry, ...]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> KeyUpload:
        """Parse a member's request body; sizes, base64 and ids checked, membership not yet."""
        if not isinstance(body, Mapping):
            raise InvalidInputError("expected an object with public_key, version and entries")
        public_key, version, entries = body.get("public_key"), body.get("version"), body.get("entries")
        if not isinstance(public_key, str):
            raise InvalidInputError("public_key is missing: the group's WireGuard public key")
        wireguard_key(public_key, "public_key")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version < 2**63:
            raise InvalidInputError("version must be a whole number from 1")
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_ENTRIES:
            raise InvalidInputError(f"entries must be a list of 1 to {MAX_ENTRIES} sealed copies")
        return cls(public_key, version,
                   tuple(SealedEntry.from_item(entry) for entry in entries))


@dataclass(frozen=True)
class Coverage:
    """Who holds the current key (``current``), who has no copy (``pending``), whose copy was
    sealed to a WireGuard key they no longer use (``stale``), and removed hosts that still know
    it (``still_know``)."""

    current: tuple[HostId, ...]
    pending: tuple[HostId, ...]
    stale: tuple[HostId, ...]
    still_know: tuple[HostId, ...]

    @property
    def complete(self) -> bool:
        return not self.pending and not self.stale


@dataclass(frozen=True)
class Accepted:
    """An upload the control plane may store (conditional on the previous ``version``), and
    what it left undone."""

    record: GroupKeyRecord
    coverage: Coverage
    new_key: bool
    notice: str = ""


@dataclass(frozen=True)
class Removal:
    record: GroupKeyRecord
    still_knows_key: bool
    message: str


@dataclass(frozen=True)
class RotationPlan:
    """What the rotating member must produce: a new key of ``version``, sealed to each of
    ``recipients`` (``{host: its WireGuard public key now}``, itself included)."""

    version: int
    recipients: Mapping[HostId, str] = field(default_factory=dict)


def _sorted(hosts: Iterable[HostId]) -> tuple[HostId, ...]:
    return tuple(sorted(hosts))


def coverage(record: GroupKeyRecord, members: Mapping[HostId, str]) -> Coverage:
    """Each member's state for the record's current version, and who still knows it though removed.

    >>> record = GroupKeyRecord(NetworkId("net_x1"), "g", "A" * 43 + "=", 1)
    >>> coverage(record, {HostId("host_a1"): "B" * 43 + "="}).pending
    ('host_a1',)
    """
    current, pending, stale = [], [], []
    for host, public_key in members.items():
        entry = record.entry_for(host)
        if entry is None:
            pending.append(host)
        elif entry.recipient_public_key != public_key:
            stale.append(host)
        else:
            current.append(host)
    # A removed host that was added again is a member (pending until someone seals to it).
    still_know = {host for host in (*record.former_members, *(e.recipient for e in record.entries))
                  if host not in members}
    return Coverage(_sorted(current), _sorted(pending), _sorted(stale), _sorted(still_know))


def _check_entries(upload: KeyUpload, uploader: HostId, members: Mapping[HostId, str]) -> None:
    seen: set[HostId] = set()
    for entry in upload.entries:
        if entry.sender != uploader or entry.sender_public_key != members[uploader]:
            raise InvalidInputError(
                f"a copy for {entry.recipient} names sender {entry.sender}; a member uploads only copies it "
                f"sealed itself, with its current WireGuard key")
        if entry.recipient in seen:
            raise InvalidInputError(f"two copies for {entry.recipient}; send one per member")
        seen.add(entry.recipient)
        if entry.recipient not in members:
            raise InvalidInputError(f"{entry.recipient} is not a member of the group; seal only to members")
        if entry.recipient_public_key != members[entry.recipient]:
            raise ConflictError(
                f"the copy for {entry.recipient} is sealed to a WireGuard key it no longer uses; "
                "fetch the group again and seal to its current key", code="stale_member_key")


def accept_upload(record: GroupKeyRecord | None, upload: KeyUpload, *, network_id: NetworkId, group_id: str,
                  uploader: HostId, members: Mapping[HostId, str]) -> Accepted:
    """Decide whether ``uploader``'s ``upload`` becomes the group's key record.

    - A new key (create, rotate-key): ``version`` is exactly one above the record's (1 when
      there is none), the public key is new, and the uploader sealed a copy to itself; removed
      members no longer know this key. Others may be left ``pending``.
    - More copies of the current key (a member added, a member's WireGuard key rotated): same
      version and public key; the uploader holds a copy of this version itself.

    Anything older is a :class:`ConflictError` (a stale writer never replaces a newer key);
    a sender that is not the uploader, a recipient that is not a member, or a copy sealed to
    a member's former WireGuard key is refused; nothing is half applied.
    """
    if not is_id("group", group_id):
        raise InvalidInputError(f"group id {group_id[:64]!r} is not a gateway group id (grp_…)")
    if uploader not in members:
        raise ForbiddenError(f"{uploader} is not a member of group {group_id}; only members hold its key")
    if len(members) > MAX_ENTRIES:
        raise InvalidInputError(f"a group has at most {MAX_ENTRIES} members")
    _check_entries(upload, uploader, members)
    current_version = record.version if record else 0
    if upload.version == current_version + 1:
        if record is not None and upload.public_key == record.public_key:
            raise InvalidInputError("rotate-key needs a new key pair; this is the current public key")
        if not any(entry.recipient == uploader for entry in upload.entries):
            raise InvalidInputError(f"a new key must include a copy sealed to its maker {uploader}")
        entries = tuple(sorted(upload.entries, key=lambda entry: entry.recipient))
        new = GroupKeyRecord(network_id, group_id, upload.public_key, upload.version, entries)
        notice = "" if record is None else rotation_notice(record, new)
        return Accepted(new, coverage(new, members), new_key=True, notice=notice)
    if record is None or upload.version != current_version:
        raise ConflictError(f"version {upload.version} is not current (the group's key is at version "
                            f"{current_version}); fetch the group again", code="stale_version")
    if upload.public_key != record.public_key:
        raise ConflictError(f"version {record.version} has another public key; a new key takes version "
                            f"{record.version + 1}", code="stale_version")
    if record.entry_for(uploader) is None:
        raise ForbiddenError(f"{uploader} has no copy of version {record.version}; only a member that "
                             "holds the key can seal it to others")
    fresh = {entry.recipient: entry for entry in upload.entries}
    kept = tuple(entry for entry in record.entries if entry.recipient not in fresh)
    merged = replace(record, entries=tuple(sorted(kept + upload.entries, key=lambda e: e.recipient)),
                     former_members=tuple(h for h in record.former_members if h not in fresh))
    return Accepted(merged, coverage(merged, members), new_key=False)


def remove_member(record: GroupKeyRecord, host: HostId) -> Removal:
    """Drop ``host``'s copy. If it ever received this version it still knows the key, and the
    record and the message say so until ``rotate-key``."""
    knew = record.entry_for(host) is not None or host in record.former_members
    entries = tuple(entry for entry in record.entries if entry.recipient != host)
    former = record.former_members + ((host,) if knew and host not in record.former_members else ())
    new = replace(record, entries=entries, former_members=_sorted(former))
    if knew:
        message = (f"{host} is removed from group {record.group_id} but still knows the group's private key "
                   f"(version {record.version}); run rotate-key to replace it (client configs then need the "
                   f"group's new public key)")
    else:
        message = f"{host} is removed from group {record.group_id}; it never received the group's key"
    return Removal(new, knew, message)


def seal_work(record: GroupKeyRecord, members: Mapping[HostId, str], host: HostId) -> dict[HostId, str]:
    """The members ``host`` should seal the current key to (pending or stale ones, with their
    WireGuard public keys now), if ``host`` holds a copy of it; otherwise nothing."""
    if host not in members or record.entry_for(host) is None:
        return {}
    state = coverage(record, members)
    return {member: members[member] for member in (*state.pending, *state.stale)}


def rotation_plan(record: GroupKeyRecord | None, members: Mapping[HostId, str]) -> RotationPlan:
    """What rotate-key (or create, with no record) asks of the member that makes the key."""
    return RotationPlan((record.version if record else 0) + 1, dict(sorted(members.items())))


def rotation_notice(old: GroupKeyRecord, new: GroupKeyRecord) -> str:
    """What the answer to rotate-key tells the admin: clients keep their own keys, but their
    ``[Peer] PublicKey`` changes."""
    gone = f"; {', '.join(old.former_members)} no longer know the group's key" if old.former_members else ""
    return (f"group {new.group_id} has a new key (version {new.version}): every client config needs "
            f"[Peer] PublicKey = {new.public_key} (clients keep their own keys){gone}")
