"""/v1/hosts"""

from __future__ import annotations

from ..domain import protocol
from ..domain.models import AUTO
from ..errors import ForbiddenError, InvalidInputError
from . import schemas as s
from . import serialize
from .endpoints import ADMIN, ADMIN_OR_HOST, ENROLLMENT, HOST, Api, Call

api = Api(__name__, "hosts")


@api.route("/v1/hosts", "POST", auth=ENROLLMENT, body=s.HostRegister, response=s.HostRegistered,
           status=201, summary="Register a host with an enrollment token")
def register_host(call: Call) -> s.HostRegistered:
    b: s.HostRegister = call.body
    reg = call.service.hosts.register(
        call.caller, name=b.name, wg_public_key=b.wg_public_key, listen_port=b.listen_port,
        endpoints=b.endpoints, csr_pem=b.csr_pem, source_ip=call.source_ip)
    host_id = reg.host.id
    return s.HostRegistered(
        host=serialize.host(reg.host),
        certificate_pem=reg.certificate.certificate_pem,
        ca_pem=reg.certificate.ca_pem,
        mqtt=s.MqttAccess(
            endpoint=reg.mqtt_endpoint, port=reg.mqtt_port, client_id=host_id,
            topics=s.MqttTopics(
                subscribe=[protocol.host_inbox_topic(host_id)]
                + [protocol.network_topic(n) for n in reg.host.network_ids],
                publish=[reg.status_topic],
            ),
        ),
        host_token=reg.host_token,
    )


@api.route("/v1/hosts", "GET", auth=ADMIN, response=s.HostList, query_model=s.ListQuery,
           summary="List hosts, one page at a time")
def list_hosts(call: Call) -> s.HostList:
    page = call.service.hosts.list(call.args.limit, call.args.cursor)
    return s.HostList(hosts=[serialize.host(h) for h in page.items], next_cursor=page.cursor)


@api.route("/v1/hosts/{host_id}", "GET", auth=ADMIN_OR_HOST, response=s.Host,
           summary="Get a host (admin, or the host itself)")
def get_host(call: Call) -> s.Host:
    return serialize.host(call.service.hosts.get(call.params["host_id"]))


@api.route("/v1/hosts/{host_id}", "PATCH", auth=ADMIN_OR_HOST, body=s.HostPatch, response=s.Host,
           summary="Change a host: endpoints, port, name; key rotation by the host itself")
def patch_host(call: Call) -> s.Host:
    b: s.HostPatch = call.body
    if call.is_admin and b.wg_public_key is not None:
        raise ForbiddenError("only the host itself rotates its WireGuard key (its private key "
                             "never leaves it); use the host token")
    if not call.is_admin and b.tags is not None:
        raise ForbiddenError("tags are set by an admin")
    return serialize.host(call.service.hosts.update(
        call.params["host_id"], name=b.name, wg_public_key=b.wg_public_key,
        listen_port=b.listen_port, endpoints=b.endpoints, tags=b.tags,
        source_ip=None if call.is_admin else call.source_ip))


@api.route("/v1/hosts/{host_id}", "DELETE", auth=ADMIN_OR_HOST, status=204,
           summary="Delete a host: leaves every network, frees its addresses, revokes its certificate")
def delete_host(call: Call) -> None:
    call.service.hosts.delete(call.params["host_id"])


@api.route("/v1/hosts/{host_id}/config", "GET", auth=HOST, response=s.HostConfig,
           query_model=s.ConfigQuery,
           summary="Configuration of each of the host's networks: a full snapshot, or what it missed")
def host_config(call: Call) -> s.HostConfig:
    speaks = call.args.v or 1
    # Catch-ups are deltas of the current schema: an older agent gets full snapshots, and is
    # told to upgrade rather than given a device without what its schema cannot carry.
    cfg = call.service.hosts.config(call.caller, call.args.seqs() if speaks >= protocol.VERSION else None)
    if speaks < protocol.VERSION:
        for need, what in (_schema_needed(c.snapshot) for c in cfg.snapshots):
            if need > speaks:
                raise InvalidInputError(
                    f"this agent speaks schema {speaks} of the wire protocol and its networks use {what}, "
                    f"which need schema {need}: upgrade skymesh-agent", code="agent_outdated")
    return s.HostConfig(host_id=call.caller.id,
                        networks=[serialize.network_config(c) for c in cfg.snapshots],
                        catch_ups=[serialize.catch_up(u) for u in cfg.catch_ups])


def _schema_needed(snap: protocol.Snapshot) -> tuple[int, str]:
    """The oldest schema that can say what this snapshot holds, and what needs it."""
    if snap.groups:
        return 5, "gateway groups"
    if any(m.role.pair_relays for m in snap.members):
        return 4, "automatic relays"
    if any(m.role.internet_gateway == AUTO for m in snap.members):
        # a schema-3 agent reads "auto" as no member: no full tunnel, and the old pair rule
        return 4, "automatic internet gateways"
    if any(m.role.relayed_by is not None for m in snap.members):
        return 3, "relays"
    if snap.clients or any(m.role for m in snap.members):
        return 2, "gateways or clients"
    return 1, ""
