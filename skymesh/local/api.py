"""``python -m skymesh.local.api --host H --port P``: the Chalice app over HTTP, threaded.

Chalice's own local server (``chalice.local``), one thread per connection, with
``current_request`` kept per thread. Stops cleanly on SIGTERM/SIGINT.

Where API Gateway and Chalice's local gateway differ in a way a user notices, this
server does what API Gateway does (as configured by ``infra/stack.py``):

- ``requestContext.identity.sourceIp`` is the client's address (the socket's peer);
  Chalice always says 127.0.0.1, so the address a host registered from was never seen.
- A path the API does not have is 404 in our error shape, as the stack's gateway
  responses answer it; Chalice says 403 "Missing Authentication Token".

With ``--dashboard DIR`` (a built ``web/dist``), a GET outside ``/v1/`` is a file of the
web dashboard (:mod:`skymesh.local.dashboard`): the same origin as the API, so no CORS.
"""

from __future__ import annotations

import argparse
import faulthandler
import ipaddress
import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any

from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    CustomLocalChalice,
    LocalChalice,
    LocalDevServer,
    LocalGateway,
    LocalGatewayException,
)

from chalicelib.api.chalice_errors import NO_ROUTE_CODE, no_route_message

from . import dashboard
from .appload import load_app

__all__ = ["main", "make_server"]


class _ThreadedServer(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 resets connections when a few dozen
    # clients (e.g. hosts enrolling together) connect at once.
    request_queue_size = 128


class _ThreadedServer6(_ThreadedServer):
    address_family = socket.AF_INET6


class _NoRoute(LocalGatewayException):
    CODE = 404


def _client_ip(address: str) -> str:
    """The peer as API Gateway reports it: IPv4 for an IPv4 client of a dual-stack socket."""
    try:
        mapped = ipaddress.IPv6Address(address.split("%", 1)[0]).ipv4_mapped
    except ValueError:
        return address
    return str(mapped) if mapped is not None else address


class _Gateway(LocalGateway):
    """Chalice's local API Gateway, with the client's address and our 404 (module docstring)."""

    def __init__(self, app_object: Any, config: Config, source_ip: str) -> None:
        super().__init__(app_object, config)
        self._source_ip = source_ip

    def _generate_lambda_event(self, method: str, path: str, headers: Any, body: bytes | None) -> Any:
        try:
            event = super()._generate_lambda_event(method, path, headers, body)
        except ValueError:  # no route matches the path
            message = no_route_message(method, path.split("?")[0])
            error = {"error": {"code": NO_ROUTE_CODE, "message": message}}
            raise _NoRoute({"Content-Type": "application/json"}, json.dumps(error).encode()) from None
        event["requestContext"]["identity"]["sourceIp"] = self._source_ip
        return event


class _RequestHandler(ChaliceRequestHandler):
    def __init__(self, request: Any, client_address: tuple[str, int], server: Any,
                 app_object: Any, config: Config) -> None:
        # ChaliceRequestHandler.__init__ would make a plain LocalGateway; the request is
        # handled inside BaseHTTPRequestHandler.__init__, so the gateway must exist first.
        self.local_gateway = _Gateway(app_object, config, _client_ip(client_address[0]))
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's name
        if not self._dashboard_file():
            self._generic_handle()

    def do_HEAD(self) -> None:  # noqa: N802
        if not self._dashboard_file(body=False):
            self._generic_handle()

    def _dashboard_file(self, body: bool = True) -> bool:
        """Answer with a dashboard file when the path is the dashboard's; ``False`` when it is
        the API's (or no dashboard is served)."""
        dist: Path | None = getattr(self.server, "dashboard", None)
        if dist is None or self.path.startswith(dashboard.API_PREFIX):
            return False
        found = dashboard.resolve(dist, self.path)
        if found is None:
            return False
        data = found.path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", found.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", found.cache_control)
        for name, value in dashboard.HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)
        return True

    def handle_one_request(self) -> None:
        self._started = time.monotonic()
        super().handle_one_request()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """The access log line, with the time the request took until its answer (in ms)."""
        took = (time.monotonic() - getattr(self, "_started", time.monotonic())) * 1000
        self.log_message('"%s" %s %s %.1fms', self.requestline, str(code), str(size), took)


def make_server(host: str, port: int, module_name: str | None = None,
                dashboard_dir: Path | None = None) -> LocalDevServer:
    """A bound (not yet serving) threaded HTTP server for the app; with ``dashboard_dir``,
    also the web dashboard's files at every path outside ``/v1/``."""
    _module, app = load_app(module_name)
    if not isinstance(app, LocalChalice):  # per-thread current_request (once per process)
        CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
        app.__class__ = CustomLocalChalice
    server_cls = _ThreadedServer6 if ":" in host else _ThreadedServer
    server = LocalDevServer(app, Config(chalice_stage="local"), host, port,
                            handler_cls=_RequestHandler, server_cls=server_cls)
    server.server.dashboard = dashboard_dir  # type: ignore[attr-defined]  # read by _RequestHandler
    return server


def _warm() -> None:
    """Build the service and its database clients before the first request
    (:meth:`DynamoStore.warm`); a stage set up wrongly is left to answer its 500s."""
    from chalicelib.adapters.dynamodb import DynamoStore
    from chalicelib.config import ConfigError
    from chalicelib.wiring import get_service

    try:
        store = get_service().deps.store
    except ConfigError as e:
        print(f"api: {e}", file=sys.stderr, flush=True)
        return
    if isinstance(store, DynamoStore):
        store.warm()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m skymesh.local.api")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787)
    p.add_argument("--app-module", default=None)
    p.add_argument("--dashboard", default=None, type=Path,
                   help="a built web dashboard (web/dist) to serve outside /v1/")
    args = p.parse_args(argv)
    try:
        server = make_server(args.host, args.port, args.app_module, args.dashboard)
    except OSError as e:
        print(f"api: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2

    def stop(_sig: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    _warm()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # `kill -USR1 <pid>` writes every thread's stack to the log: what a stuck request waits on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    print(f"api: serving on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()
    server.server.server_close()
    print("api: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
