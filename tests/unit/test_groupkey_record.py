"""Issue 11, the key: what the control plane holds and decides about a group's key
(chalicelib/domain/groupkey.py), without ever being able to open it.

The flows run with real sealed copies (agent/groupkey.py), as members would make them.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import groupkey as member
from chalicelib import wgkeys
from chalicelib.domain.errors import ConflictError, ForbiddenError, InvalidInputError, SkymeshError
from chalicelib.domain.groupkey import (
    MAX_ENTRIES,
    Accepted,
    GroupKeyRecord,
    KeyUpload,
    SealContext,
    SealedEntry,
    accept_upload,
    coverage,
    remove_member,
    rotation_plan,
    seal_work,
)
from chalicelib.domain.ids import HostId, NetworkId

NET, GROUP = NetworkId("net_abcd1234"), "grp_edge"
HOSTS = [HostId(f"host_{name}000") for name in "abcdefgh"]
KEYS = {host: wgkeys.new_key_pair() for host in HOSTS}
a, b, c, d = HOSTS[:4]


def pubs(*hosts: HostId, keys: Mapping[HostId, wgkeys.KeyPair] = KEYS) -> dict[HostId, str]:
    return {host: keys[host].public_key for host in hosts}


def sealed_upload(sender: HostId, group: wgkeys.KeyPair, version: int, recipients: Mapping[HostId, str],
                  keys: Mapping[HostId, wgkeys.KeyPair] = KEYS) -> KeyUpload:
    """What the member ``sender`` uploads: ``group`` sealed to each recipient (real crypto)."""
    entries = []
    for host, public_key in recipients.items():
        context = SealContext(NET, GROUP, version, group.public_key, keys[sender].public_key, public_key)
        entries.append(SealedEntry(host, public_key, sender, keys[sender].public_key,
                                   member.seal(group.private_key, context, keys[sender].private_key)))
    return KeyUpload(group.public_key, version, tuple(entries))


def accept(record: GroupKeyRecord | None, upload: KeyUpload, uploader: HostId,
           members: Mapping[HostId, str]) -> Accepted:
    return accept_upload(record, upload, network_id=NET, group_id=GROUP, uploader=uploader, members=members)


def create(members: Mapping[HostId, str], maker: HostId = a) -> tuple[wgkeys.KeyPair, GroupKeyRecord]:
    group = member.new_group_key()
    return group, accept(None, sealed_upload(maker, group, 1, members), maker, members).record


# --- create --------------------------------------------------------------------------------


def test_create_every_member_opens_the_key_and_nobody_is_pending() -> None:
    members = pubs(a, b, c)
    group, record = create(members)
    assert (record.version, record.public_key) == (1, group.public_key)
    assert coverage(record, members).current == (a, b, c) and coverage(record, members).complete
    for host in (a, b, c):
        assert member.open_entry(record, host, KEYS[host].private_key) == group.private_key


def test_create_may_leave_members_pending_and_any_holder_then_seals_to_them() -> None:
    members = pubs(a, b, c)
    group = member.new_group_key()
    accepted = accept(None, sealed_upload(a, group, 1, pubs(a)), a, members)
    assert accepted.coverage.pending == (b, c)
    assert seal_work(accepted.record, members, b) == {}  # b has no copy: it cannot seal
    work = seal_work(accepted.record, members, a)
    assert work == pubs(b, c)
    done = accept(accepted.record, sealed_upload(a, group, 1, work), a, members)
    assert done.coverage.complete and not done.new_key
    assert member.open_entry(done.record, c, KEYS[c].private_key) == group.private_key


def test_a_new_key_must_carry_its_makers_own_copy() -> None:
    with pytest.raises(InvalidInputError, match="copy sealed to its maker"):
        accept(None, sealed_upload(a, member.new_group_key(), 1, pubs(b)), a, pubs(a, b))


def test_the_first_version_is_one() -> None:
    with pytest.raises(ConflictError, match="not current"):
        accept(None, sealed_upload(a, member.new_group_key(), 2, pubs(a)), a, pubs(a))


# --- what members may upload ---------------------------------------------------------------


def test_only_members_upload_and_only_copies_they_sealed_themselves() -> None:
    members = pubs(a, b)
    group = member.new_group_key()
    with pytest.raises(ForbiddenError, match="not a member"):
        accept(None, sealed_upload(c, group, 1, pubs(a, b)), c, members)
    # b uploads a copy that names a as its sender.
    with pytest.raises(InvalidInputError, match="names sender"):
        accept(None, sealed_upload(a, group, 1, pubs(a, b)), b, members)


def test_copies_go_only_to_members_with_their_current_key() -> None:
    members = pubs(a, b)
    group = member.new_group_key()
    with pytest.raises(InvalidInputError, match="not a member"):
        accept(None, sealed_upload(a, group, 1, pubs(a, c)), a, members)
    rotated = {**members, b: wgkeys.new_key_pair().public_key}
    with pytest.raises(ConflictError, match="no longer uses") as caught:
        accept(None, sealed_upload(a, group, 1, pubs(a, b)), a, rotated)
    assert caught.value.code == "stale_member_key"


def test_one_copy_per_member() -> None:
    group = member.new_group_key()
    upload = sealed_upload(a, group, 1, pubs(a, b))
    doubled = KeyUpload(upload.public_key, 1, upload.entries + upload.entries[1:])
    with pytest.raises(InvalidInputError, match="two copies"):
        accept(None, doubled, a, pubs(a, b))


def test_versions_only_go_up_and_a_version_keeps_its_public_key() -> None:
    members = pubs(a, b)
    group, record = create(members)
    newer = member.new_group_key()
    v2 = accept(record, sealed_upload(b, newer, 2, members), b, members).record
    # A slow member still uploading for version 1, or skipping to 4: refused, the record stays at 2.
    for version, key in ((1, group), (4, member.new_group_key())):
        with pytest.raises(ConflictError, match="not current") as caught:
            accept(v2, sealed_upload(a, key, version, members), a, members)
        assert caught.value.code == "stale_version"
    with pytest.raises(ConflictError, match="another public key"):
        accept(v2, sealed_upload(a, member.new_group_key(), 2, members), a, members)
    with pytest.raises(InvalidInputError, match="new key pair"):
        accept(v2, sealed_upload(a, newer, 3, members), a, members)


@pytest.mark.parametrize(("body", "message"), [
    ([], "expected an object"),
    ({"version": 1, "entries": []}, "public_key is missing"),
    ({"public_key": "x", "version": 1, "entries": []}, "not a WireGuard public key"),
    ({"public_key": KEYS[a].public_key, "version": True, "entries": []}, "whole number"),
    ({"public_key": KEYS[a].public_key, "version": 0, "entries": []}, "whole number"),
    ({"public_key": KEYS[a].public_key, "version": 1, "entries": []}, "1 to"),
    ({"public_key": KEYS[a].public_key, "version": 1, "entries": [{}] * (MAX_ENTRIES + 1)}, "1 to"),
    ({"public_key": KEYS[a].public_key, "version": 1, "entries": ["x"]}, "is an object"),
    ({"public_key": KEYS[a].public_key, "version": 1,
      "entries": [{"recipient": a, "recipient_public_key": KEYS[a].public_key, "sender": a,
                   "sender_public_key": KEYS[a].public_key, "ciphertext": "AAAA"}]},
     "not a sealed group key"),
    ({"public_key": KEYS[a].public_key, "version": 1,
      "entries": [{"recipient": "bob", "recipient_public_key": KEYS[a].public_key, "sender": a,
                   "sender_public_key": KEYS[a].public_key, "ciphertext": "A" * 108}]}, "not a host id"),
    ({"public_key": KEYS[a].public_key, "version": 1,
      "entries": [{"recipient": a, "sender": a, "sender_public_key": KEYS[a].public_key,
                   "ciphertext": "A" * 108}]}, "recipient_public_key is missing"),
])
def test_malformed_uploads_get_a_message_saying_what_to_fix(body: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        KeyUpload.from_body(body)  # type: ignore[arg-type]


def test_a_well_formed_body_parses_to_the_upload_a_member_made() -> None:
    upload = sealed_upload(a, member.new_group_key(), 1, pubs(a, b))
    body = json.loads(json.dumps({"public_key": upload.public_key, "version": 1,
                                  "entries": [entry.to_item() for entry in upload.entries]}))
    assert KeyUpload.from_body(body) == upload


def test_the_record_survives_its_stored_form() -> None:
    _, record = create(pubs(a, b))
    record = remove_member(record, b).record
    assert GroupKeyRecord.from_item(json.loads(json.dumps(record.to_item()))) == record


# --- add, key change, remove, rotate -------------------------------------------------------


def test_a_member_whose_own_key_rotated_is_stale_until_a_holder_seals_again() -> None:
    members = pubs(a, b)
    group, record = create(members)
    b_new = wgkeys.new_key_pair()
    now = {**members, b: b_new.public_key}
    assert coverage(record, now).stale == (b,)
    with pytest.raises(member.SealedKeyError, match="another WireGuard key"):
        member.open_entry(record, b, b_new.private_key)
    assert seal_work(record, now, a) == {b: b_new.public_key}
    resealed = accept(record, sealed_upload(a, group, 1, {b: b_new.public_key}), a, now).record
    assert coverage(resealed, now).complete
    assert member.open_entry(resealed, b, b_new.private_key) == group.private_key
    # The copy sealed to b's old key is gone from the record.
    assert all(entry.recipient_public_key != KEYS[b].public_key for entry in resealed.entries)


def test_only_a_holder_of_the_current_version_can_seal_to_others() -> None:
    members = pubs(a, b, c)
    group, record = create(pubs(a, b))
    with pytest.raises(ForbiddenError, match="no copy"):
        accept(record, sealed_upload(c, group, 1, pubs(c)), c, members)


def test_removing_a_member_says_it_still_knows_the_key_until_rotate_key() -> None:
    members = pubs(a, b, c)
    group, record = create(members)
    removal = remove_member(record, c)
    assert removal.still_knows_key
    assert "still knows the group's private key (version 1)" in removal.message
    assert "rotate-key" in removal.message
    assert removal.record.entry_for(c) is None and removal.record.former_members == (c,)
    remaining = pubs(a, b)
    assert coverage(removal.record, remaining).still_know == (c,)
    assert removal.record.to_item()["former_members"] == [c]

    plan = rotation_plan(removal.record, remaining)
    assert plan.version == 2 and dict(plan.recipients) == remaining
    newer = member.new_group_key()
    rotated = accept(removal.record, sealed_upload(b, newer, plan.version, plan.recipients), b, remaining)
    assert rotated.new_key and rotated.record.former_members == ()
    assert coverage(rotated.record, remaining).still_know == ()
    assert newer.public_key in rotated.notice and "clients keep their own keys" in rotated.notice
    assert f"{c} no longer know" in rotated.notice
    # c kept its old copy (it always could): it opens version 1, which is no longer the group's key.
    old_copy = record.entry_for(c)
    assert old_copy is not None
    opened = member.open_sealed(old_copy.ciphertext, record.context_for(old_copy), KEYS[c].private_key)
    assert opened == group.private_key
    for host in remaining:
        assert member.open_entry(rotated.record, host, KEYS[host].private_key) == newer.private_key


def test_removing_a_member_that_never_got_the_key_says_so() -> None:
    _, record = create(pubs(a), maker=a)
    removal = remove_member(record, b)
    assert not removal.still_knows_key and "never received" in removal.message
    assert removal.record == record


def test_a_removed_member_added_again_is_pending_not_former() -> None:
    members = pubs(a, b)
    group, record = create(members)
    removed = remove_member(record, b).record
    state = coverage(removed, members)
    assert (state.pending, state.still_know) == ((b,), ())
    resealed = accept(removed, sealed_upload(a, group, 1, seal_work(removed, members, a)), a, members).record
    assert resealed.former_members == () and coverage(resealed, members).complete


def test_an_old_copy_put_into_the_current_record_is_refused_by_the_member() -> None:
    members = pubs(a, b)
    _, v1 = create(members)
    newer = member.new_group_key()
    v2 = accept(v1, sealed_upload(a, newer, 2, members), a, members).record
    # A control plane that swaps b's copy for the old one (keeping or not the new public key).
    swapped = GroupKeyRecord(NET, GROUP, v2.public_key, 2, (v1.entry_for(b),))  # type: ignore[arg-type]
    with pytest.raises(member.SealedKeyError):
        member.open_entry(swapped, b, KEYS[b].private_key)
    rolled_back = GroupKeyRecord(NET, GROUP, v1.public_key, 2, (v1.entry_for(b),))  # type: ignore[arg-type]
    with pytest.raises(member.SealedKeyError):
        member.open_entry(rolled_back, b, KEYS[b].private_key)


# --- the private key never shows on the control plane's side --------------------------------


def _spellings(private_key: str) -> list[str]:
    raw = base64.b64decode(private_key)
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return [private_key, private_key.rstrip("="), urlsafe, raw.hex()]


def test_the_plaintext_key_is_in_no_record_repr_answer_error_or_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # the agent's own logger too: a test that ran the agent in this process may have left it at
    # a higher level, and then nothing would be captured, or searched
    caplog.set_level(logging.DEBUG, logger=member.log.name)
    seen: list[object] = []
    members = pubs(a, b, c)
    group = member.new_group_key()
    created = accept(None, sealed_upload(a, group, 1, pubs(a, b)), a, members)
    work = seal_work(created.record, members, b)
    added = accept(created.record, sealed_upload(b, group, 1, work), b, members)
    removal = remove_member(added.record, c)
    rotated_key = member.new_group_key()
    rotated = accept(removal.record, sealed_upload(a, rotated_key, 2, pubs(a, b)), a, pubs(a, b))
    entries = [entry.to_item() for entry in created.record.entries]
    body = {"public_key": group.public_key, "version": 1, "entries": entries}
    seen += [created, added, removal, rotated, coverage(rotated.record, members),
             rotation_plan(rotated.record, members), KeyUpload.from_body(body), group, rotated_key]
    current = rotated.record.context_for(rotated.record.entries[0])
    for host in (a, b):
        member.open_entry(rotated.record, host, KEYS[host].private_key)
    failures: list[str] = []
    for attempt in (lambda: accept(rotated.record, sealed_upload(a, group, 1, pubs(a)), a, members),
                    lambda: member.open_entry(added.record, c, KEYS[a].private_key),
                    lambda: member.seal(rotated_key.private_key, current, KEYS[c].private_key),
                    lambda: member.seal(group.private_key, current, KEYS[a].private_key)):
        with pytest.raises((SkymeshError, member.GroupKeyError)) as caught:
            attempt()
        failures.append(str(caught.value))
    assert len(failures) == 4 and caplog.records  # the logs are there, and were searched
    stored = [json.dumps(r.to_item()) for r in (created.record, added.record, removal.record, rotated.record)]
    texts = stored + [repr(x) for x in seen] + [str(x) for x in seen] + failures + [caplog.text]
    for secret in (group.private_key, rotated_key.private_key):
        for spelling in _spellings(secret):
            assert not any(spelling in text for text in texts), spelling
    assert group.public_key in stored[0]  # what is searched does hold the group's identity


# --- a model of the flows ------------------------------------------------------------------

ops = st.lists(st.tuples(st.sampled_from(["add", "remove", "rekey_member", "reseal", "rotate"]),
                         st.integers(0, len(HOSTS) - 1), st.integers(0, len(HOSTS) - 1)), max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=ops)
def test_any_script_keeps_versions_rising_and_knowledge_told_truthfully(
        script: list[tuple[str, int, int]]) -> None:
    """Whatever members join, leave, change keys, re-seal and rotate: every member listed as
    current opens the current key; whoever ever opened the current version and is no longer a
    member is listed as still knowing it; versions only rise."""
    keys = dict(KEYS)
    members = pubs(a, b, keys=keys)
    group, record = create(members)
    knew = {a, b}  # who ever received the current version (the model)
    version = 1
    for op, i, j in script:
        host, other = HOSTS[i], HOSTS[j]
        if op == "add" and host not in members:
            members[host] = keys[host].public_key
        elif op == "remove" and host in members and len(members) > 1:
            del members[host]
            record = remove_member(record, host).record
        elif op == "rekey_member" and host in members:
            keys[host] = wgkeys.new_key_pair()
            members[host] = keys[host].public_key
        elif op == "reseal" and other in members and seal_work(record, members, other):
            work = seal_work(record, members, other)
            upload = sealed_upload(other, group, record.version, work, keys)
            record = accept(record, upload, other, members).record
            knew |= set(work)
        elif op == "rotate" and other in members and record.entry_for(other) is not None:
            group = member.new_group_key()
            plan = rotation_plan(record, members)
            record = accept(record, sealed_upload(other, group, plan.version, plan.recipients, keys),
                            other, members).record
            knew = set(members)
        assert record.version >= version
        version = record.version
        state = coverage(record, members)
        assert sorted(state.current + state.pending + state.stale) == sorted(members)
        for host in state.current:
            assert member.open_entry(record, host, keys[host].private_key) == group.private_key
        assert set(state.still_know) == knew - set(members)
