"""/v1/networks/{network_id}/gateway-groups: HA gateway groups (issue 11).

Admins create and change groups; members (their host token) read and upload the group's key
(ciphertext only: docs/ha-groups.md) and ask the control plane for its vote in the group's election.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, Field

from ..domain.groupkey import MAX_ENTRIES, SEALED_B64_LENGTH, Coverage, GroupKeyRecord
from ..domain.ids import id_pattern
from ..domain.models import MAX_GROUP_MEMBERS, ElasticIp, Host
from ..service.groups import GroupView, KeyView, Removed
from . import schemas as s
from .endpoints import ADMIN, MEMBER, Api, Call

api = Api(__name__, "gateway-groups")

_BASE = "/v1/networks/{network_id}/gateway-groups"
_ONE = _BASE + "/{group_id}"

HostRef = Annotated[str, Field(pattern=id_pattern("host"))]
Members = Annotated[list[HostRef], Field(min_length=1, max_length=MAX_GROUP_MEMBERS)]
Floating = Annotated[str, Field(max_length=64, description="ADDR:PORT, ADDR an IPv4 or [IPv6] literal; the "
                                "port differs from every member's mesh port and mesh port + 1")]


AllocationId = Annotated[str, Field(pattern=r"^eipalloc-[0-9a-f]{8,17}$",
                                    examples=["eipalloc-0a1b2c3d4e5f67890"])]
AwsTarget = Annotated[str, Field(pattern=r"^(eni-|i-)[0-9a-f]{8,17}$", description="eni-… or i-…")]


# ----------------------------------------------------------------------------- bodies
class AwsAddress(s._In):
    """An AWS Elastic IP that the control plane moves to the active member (``ec2:AssociateAddress``)."""

    allocation_id: AllocationId
    members: dict[HostRef, AwsTarget] = Field(
        max_length=MAX_GROUP_MEMBERS, description="for every member: the network interface (eni-…) or "
        "instance (i-…, one with exactly one interface) the address goes to while it is active")


class GroupCreate(s._In):
    name: s.Name = Field(examples=["edge"])
    members: Members = Field(description="remote-access gateways of the network (1 to 4), first = preferred")
    floating_endpoint: Floating = Field(examples=["198.51.100.10:51900"])
    priority: Members | None = Field(default=None, description="the members in priority order, when it "
                                     "differs from members'")
    aws: AwsAddress | None = Field(default=None, description="on AWS: the Elastic IP of floating_endpoint")


class GroupPatch(s._In):
    name: s.Name | None = None
    add: list[HostRef] | None = Field(default=None, max_length=MAX_GROUP_MEMBERS,
                                      description="members to add (last in priority unless priority "
                                      "orders them)")
    remove: list[HostRef] | None = Field(default=None, max_length=MAX_GROUP_MEMBERS,
                                         description="members to remove; the answer says whether each still "
                                         "knows the group's key")
    priority: Members | None = Field(default=None, description="every member, in the new priority order")
    floating_endpoint: Floating | None = None
    aws: AwsAddress | None = Field(default=None, description="replaces the group's Elastic IP (every "
                                   "member's target); null removes it")


class SealedCopy(s._In):
    recipient: HostRef
    recipient_public_key: s.WireguardKey
    sender: HostRef
    sender_public_key: s.WireguardKey
    ciphertext: Annotated[str, Field(max_length=SEALED_B64_LENGTH)]


class KeyUploadBody(s._In):
    """What a member uploads (``agent/groupkey.py`` seals it): the group's public key, its version and
    the copies of its private key sealed to members' WireGuard keys. Never a private key."""

    public_key: s.WireguardKey
    version: int = Field(ge=1)
    entries: list[SealedCopy] = Field(min_length=1, max_length=MAX_ENTRIES)


class ClaimBody(s._In):
    member: HostRef = Field(description="the calling member itself")
    epoch: int = Field(ge=1, lt=2**63)
    incarnation: int = Field(ge=0, lt=2**63)


# ----------------------------------------------------------------------------- answers
class KeyCoverage(BaseModel):
    current: list[str] = Field(description="members holding the current key")
    pending: list[str] = Field(description="members without a copy yet")
    stale: list[str] = Field(description="members whose copy was sealed to a WireGuard key they no "
                             "longer use")
    still_know: list[str] = Field(description="removed hosts that still know the current key (rotate-key "
                                  "ends that)")


class AwsAddressOut(BaseModel):
    allocation_id: str
    members: dict[str, str]


class Group(BaseModel):
    id: str
    network_id: str
    name: str
    members: list[str] = Field(description="priority order, first = preferred")
    floating_endpoint: str
    public_key: str | None = Field(description="the group's WireGuard public key (clients' [Peer] "
                                   "PublicKey); null until a member made it")
    key_version: int
    key_rotation_requested: int | None = Field(description="the key version a rotate-key asked for, until "
                                               "it lands")
    active: str | None = Field(description="the member the control plane records as active")
    epoch: int
    key: KeyCoverage | None = Field(description="who holds the group's key; null until it has one")
    aws: AwsAddressOut | None = Field(default=None, description="the Elastic IP that follows the active "
                                      "member (AWS); null when none")
    created_at: dt.datetime


class GroupList(BaseModel):
    groups: list[Group]


class MemberRemoval(BaseModel):
    host_id: str
    still_knows_key: bool
    message: str


class GroupChanged(BaseModel):
    group: Group
    removed: list[MemberRemoval] = Field(default_factory=list)


class MemberRemoved(BaseModel):
    group: Group
    host_id: str
    still_knows_key: bool
    message: str


class KeyMake(BaseModel):
    version: int
    recipients: dict[str, str] = Field(description="member → its WireGuard public key now: seal to each "
                                       "(itself included)")


class GroupKey(BaseModel):
    record: dict[str, Any] | None = Field(description="the key record: public_key, version, entries (sealed "
                                          "copies), former_members; null until a member made the key")
    coverage: KeyCoverage | None
    seal_to: dict[str, str] = Field(description="members the caller should seal the current key to, with "
                                    "their WireGuard public keys")
    make: KeyMake | None = Field(description="set when the caller is asked to make a new key (the group has "
                                 "none, or rotate-key was asked for)")


class KeyStoredAnswer(BaseModel):
    version: int
    public_key: str
    new_key: bool
    coverage: KeyCoverage
    notice: str = Field(description="after a rotation: what changes in clients' files")


class RotationRequested(BaseModel):
    version: int
    maker: str = Field(description="the member asked to make the new key")
    message: str


class VoteAnswer(BaseModel):
    granted: bool = Field(description="the control plane's vote for this claim; one voter of several, "
                                      "so no lease by itself")
    epoch: int = Field(description="the highest epoch the control plane has promised")


# ----------------------------------------------------------------------------- serialize
def _coverage(c: Coverage | None) -> KeyCoverage | None:
    if c is None:
        return None
    return KeyCoverage(current=list(c.current), pending=list(c.pending), stale=list(c.stale),
                       still_know=list(c.still_know))


def _group(v: GroupView) -> Group:
    g = v.group
    return Group(id=g.id, network_id=g.network_id, name=g.name, members=list(g.members),
                 floating_endpoint=g.floating_endpoint, public_key=g.public_key, key_version=g.key_version,
                 key_rotation_requested=g.key_rotation or None, active=g.active, epoch=g.epoch,
                 key=_coverage(v.coverage), aws=_aws(g.aws),
                 created_at=dt.datetime.fromtimestamp(g.created_at, dt.UTC))


def _aws(a: ElasticIp | None) -> AwsAddressOut | None:
    return None if a is None else AwsAddressOut(allocation_id=a.allocation_id,
                                                members={str(h): t for h, t in a.targets})


def _aws_in(a: AwsAddress | None) -> tuple[str, dict[str, str]] | None:
    return None if a is None else (a.allocation_id, dict(a.members))


def _removal(r: Removed) -> MemberRemoval:
    return MemberRemoval(host_id=r.host_id, still_knows_key=r.still_knows_key, message=r.message)


def _record(r: GroupKeyRecord | None) -> dict[str, Any] | None:
    return None if r is None else r.to_item()


def _key(k: KeyView) -> GroupKey:
    make = None if k.make is None else KeyMake(version=k.make.version,
                                               recipients={str(h): p for h, p in k.make.recipients.items()})
    return GroupKey(record=_record(k.record), coverage=_coverage(k.coverage),
                    seal_to={str(h): p for h, p in k.seal_to.items()}, make=make)


# ----------------------------------------------------------------------------- routes
@api.route(_BASE, "POST", auth=ADMIN, body=GroupCreate, response=Group, status=201,
           summary="Create an HA gateway group: members share one identity and a floating endpoint")
def create_group(call: Call) -> Group:
    b: GroupCreate = call.body
    groups = call.service.groups
    g = groups.create(call.params["network_id"], name=b.name, members=b.members,
                      floating_endpoint=b.floating_endpoint, priority=b.priority, aws=_aws_in(b.aws))
    return _group(GroupView(g, None))


@api.route(_BASE, "GET", auth=ADMIN, response=GroupList, summary="List a network's gateway groups")
def list_groups(call: Call) -> GroupList:
    return GroupList(groups=[_group(v) for v in call.service.groups.list(call.params["network_id"])])


@api.route(_ONE, "GET", auth=ADMIN, response=Group,
           summary="Get a gateway group: members, active member, key version and who holds the key")
def get_group(call: Call) -> Group:
    return _group(call.service.groups.view(call.params["network_id"], call.params["group_id"]))


@api.route(_ONE, "PATCH", auth=ADMIN, body=GroupPatch, response=GroupChanged,
           summary="Change a gateway group: add or remove members, priority, name, floating endpoint")
def patch_group(call: Call) -> GroupChanged:
    b: GroupPatch = call.body
    groups, nid, gid = call.service.groups, call.params["network_id"], call.params["group_id"]
    _, removed = groups.update(nid, gid, name=b.name, add=b.add, remove=b.remove, priority=b.priority,
                               floating_endpoint=b.floating_endpoint,
                               **({"aws": _aws_in(b.aws)} if "aws" in b.model_fields_set else {}))
    return GroupChanged(group=_group(groups.view(nid, gid)), removed=[_removal(r) for r in removed])


@api.route(_ONE, "DELETE", auth=ADMIN, status=204,
           summary="Delete a gateway group (409 while clients name it)")
def delete_group(call: Call) -> None:
    call.service.groups.delete(call.params["network_id"], call.params["group_id"])


@api.route(_ONE + "/members/{host_id}", "DELETE", auth=ADMIN, response=MemberRemoved,
           summary="Remove a member; the answer says whether it still knows the group's key")
def remove_member(call: Call) -> MemberRemoved:
    groups, nid, gid = call.service.groups, call.params["network_id"], call.params["group_id"]
    _, r = groups.remove_member(nid, gid, call.params["host_id"])
    return MemberRemoved(group=_group(groups.view(nid, gid)), host_id=r.host_id,
                         still_knows_key=r.still_knows_key, message=r.message)


@api.route(_ONE + "/rotate-key", "POST", auth=ADMIN, response=RotationRequested, status=202,
           summary="Ask for a new group key (made by a member; clients then need the new [Peer] PublicKey)")
def rotate_key(call: Call) -> RotationRequested:
    nid, gid = call.params["network_id"], call.params["group_id"]
    version, maker = call.service.groups.rotate_key(nid, gid)
    return RotationRequested(version=version, maker=maker, message=(
        f"{maker} makes key version {version} of group {gid}; once GET shows key_version {version}, every "
        "client file of the group needs the new [Peer] PublicKey (clients keep their own keys), and removed "
        "members no longer know the group's key"))


@api.route(_ONE + "/key", "GET", auth=MEMBER, response=GroupKey,
           summary="The group's key record (sealed copies only), for its members")
def get_key(call: Call) -> GroupKey:
    host: Host = call.caller
    return _key(call.service.groups.key(call.params["network_id"], call.params["group_id"], host))


@api.route(_ONE + "/key", "PUT", auth=MEMBER, body=KeyUploadBody, response=KeyStoredAnswer,
           summary="Upload the group's key sealed to members (a member's first key, a requested rotation, "
                   "or more copies)")
def put_key(call: Call) -> KeyStoredAnswer:
    b: KeyUploadBody = call.body
    stored = call.service.groups.put_key(call.params["network_id"], call.params["group_id"], call.caller,
                                         b.model_dump())
    coverage = _coverage(stored.coverage)
    assert coverage is not None
    return KeyStoredAnswer(version=stored.record.version, public_key=stored.record.public_key,
                           new_key=stored.new_key, coverage=coverage, notice=stored.notice)


@api.route(_ONE + "/claims", "POST", auth=MEMBER, body=ClaimBody, response=VoteAnswer,
           summary="A member's claim in the group's election: the control plane's vote only (the active "
                   "member is recorded from members' status reports, never from a vote)")
def claim(call: Call) -> VoteAnswer:
    """The control plane is one voter of several: a granted vote writes its promise and no more (no
    record of the active member, no Elastic IP move)."""
    b: ClaimBody = call.body
    vote = call.service.groups.claim(call.params["network_id"], call.params["group_id"], call.caller,
                                     member=b.member, epoch=b.epoch, incarnation=b.incarnation)
    return VoteAnswer(granted=vote.granted, epoch=vote.epoch)
