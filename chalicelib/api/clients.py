"""/v1/networks/{network_id}/clients: remote-access clients, their wg-quick files and QR codes."""

from __future__ import annotations

from chalice import Response

from . import schemas as s
from . import serialize
from .endpoints import ADMIN, Api, Call

api = Api(__name__, "clients")

_BASE = "/v1/networks/{network_id}/clients"
_ONE = _BASE + "/{client_id}"
_MEDIA = {"conf": "text/plain; charset=utf-8", "png": "image/png", "svg": "image/svg+xml"}


@api.route(_BASE, "POST", auth=ADMIN, body=s.ClientCreate, response=s.ClientIssued, status=201,
           summary="Add a remote-access client (without public_key: its file and QR code, shown once)")
def create_client(call: Call) -> s.ClientIssued:
    b: s.ClientCreate = call.body
    return serialize.client_issued(call.service.clients.create(
        call.params["network_id"], name=b.name, gateway=b.gateway, public_key=b.public_key, dns=b.dns,
        address=b.address, extra_addresses=b.extra_addresses, post_up=b.post_up, post_down=b.post_down,
        full_tunnel=b.full_tunnel, keepalive=b.keepalive))


@api.route(_BASE, "GET", auth=ADMIN, response=s.ClientList, query_model=s.ListQuery,
           summary="List a network's remote-access clients and whether they are connected")
def list_clients(call: Call) -> s.ClientList:
    clients = call.service.clients
    page = clients.list(call.params["network_id"], call.args.limit, call.args.cursor)
    links = clients.connections(page.items)
    return s.ClientList(clients=[serialize.client(c, links[c.id]) for c in page.items],
                        next_cursor=page.cursor)


@api.route(_ONE, "GET", auth=ADMIN, response=s.Client, summary="Get a remote-access client")
def get_client(call: Call) -> s.Client:
    clients = call.service.clients
    c = clients.get(call.params["network_id"], call.params["client_id"])
    return serialize.client(c, clients.connections([c])[c.id])


@api.route(_ONE, "PATCH", auth=ADMIN, body=s.ClientPatch, response=s.Client,
           summary="Change a client: name, enabled, gateway, key, DNS, extra addresses, scripts")
def patch_client(call: Call) -> s.Client:
    b: s.ClientPatch = call.body
    clients = call.service.clients
    c = clients.update(call.params["network_id"], call.params["client_id"], name=b.name, enabled=b.enabled,
                       gateway=b.gateway, public_key=b.public_key, dns=b.dns,
                       extra_addresses=b.extra_addresses, post_up=b.post_up, post_down=b.post_down,
                       full_tunnel=b.full_tunnel, keepalive=b.keepalive)
    return serialize.client(c, clients.connections([c])[c.id])


@api.route(_ONE, "DELETE", auth=ADMIN, status=204,
           summary="Delete a client: its gateway drops its peer, its addresses are freed")
def delete_client(call: Call) -> None:
    call.service.clients.delete(call.params["network_id"], call.params["client_id"])


@api.route(_ONE + "/config", "GET", auth=ADMIN, query_model=s.ClientConfigQuery,
           summary="The client's wg-quick file (text/plain; a placeholder where its private key goes), "
                   "or its QR code (?format=png|svg)")
def client_config(call: Call) -> Response:
    clients, nid, cid = call.service.clients, call.params["network_id"], call.params["client_id"]
    fmt = call.args.format
    body: str | bytes = clients.config(nid, cid) if fmt == "conf" else clients.qr(nid, cid, fmt)
    if fmt == "svg":  # text (XML): only binary types (PNG) may be bytes, which Chalice base64-encodes
        body = body.decode() if isinstance(body, bytes) else body
    return Response(body=body, status_code=200, headers={"Content-Type": _MEDIA[fmt]})


@api.route(_ONE + "/rotate-key", "POST", auth=ADMIN, response=s.ClientIssued,
           summary="Make a new key pair for the client; its new file and QR code are shown once")
def rotate_client_key(call: Call) -> s.ClientIssued:
    return serialize.client_issued(call.service.clients.rotate_key(call.params["network_id"],
                                                                   call.params["client_id"]))
