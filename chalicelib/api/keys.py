"""/v1/enrollment-keys"""

from __future__ import annotations

from . import schemas as s
from . import serialize
from .endpoints import ADMIN, Api, Call

api = Api(__name__, "enrollment-keys")


@api.route("/v1/enrollment-keys", "POST", auth=ADMIN, body=s.EnrollmentKeyCreate,
           response=s.EnrollmentKeyCreated, status=201,
           summary="Create an enrollment key (its token is shown once)")
def create_key(call: Call) -> s.EnrollmentKeyCreated:
    b: s.EnrollmentKeyCreate = call.body
    key, token = call.service.keys.create(
        networks=b.networks, uses=b.uses, unlimited=b.unlimited, tags=b.tags, relay=b.relay,
        expires_at=None if b.expires_at is None else int(b.expires_at.timestamp()))
    now = call.service.deps.clock.now()
    return s.EnrollmentKeyCreated(**serialize.enrollment_key(key, now), token=token)


@api.route("/v1/enrollment-keys", "GET", auth=ADMIN, response=s.EnrollmentKeyList,
           query_model=s.ListQuery, summary="List enrollment keys (no secrets), one page at a time")
def list_keys(call: Call) -> s.EnrollmentKeyList:
    now = call.service.deps.clock.now()
    page = call.service.keys.list(call.args.limit, call.args.cursor)
    return s.EnrollmentKeyList(enrollment_keys=[
        s.EnrollmentKey(**serialize.enrollment_key(k, now)) for k in page.items], next_cursor=page.cursor)


@api.route("/v1/enrollment-keys/{key_id}", "GET", auth=ADMIN, response=s.EnrollmentKey,
           summary="Get an enrollment key (no secret)")
def get_key(call: Call) -> s.EnrollmentKey:
    now = call.service.deps.clock.now()
    return s.EnrollmentKey(**serialize.enrollment_key(call.service.keys.get(call.params["key_id"]), now))


@api.route("/v1/enrollment-keys/{key_id}", "DELETE", auth=ADMIN, status=204,
           summary="Revoke an enrollment key (hosts it enrolled stay)")
def revoke_key(call: Call) -> None:
    call.service.keys.revoke(call.params["key_id"])
