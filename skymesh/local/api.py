"""``python -m skymesh.local.api --host H --port P``: the Chalice app over HTTP, threaded.

Chalice's own local server (``chalice.local``), one thread per connection, with
``current_request`` kept per thread. Stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from http.server import HTTPServer
from socketserver import ThreadingMixIn
from typing import Any

from chalice.config import Config
from chalice.local import CustomLocalChalice, LocalChalice, LocalDevServer

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


def make_server(host: str, port: int, module_name: str | None = None) -> LocalDevServer:
    """A bound (not yet serving) threaded HTTP server for the app."""
    _module, app = load_app(module_name)
    CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
    app.__class__ = CustomLocalChalice
    server_cls = _ThreadedServer6 if ":" in host else _ThreadedServer
    return LocalDevServer(app, Config(chalice_stage="local"), host, port, server_cls=server_cls)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m skymesh.local.api")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787)
    p.add_argument("--app-module", default=None)
    args = p.parse_args(argv)
    try:
        server = make_server(args.host, args.port, args.app_module)
    except OSError as e:
        print(f"api: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2

    def stop(_sig: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"api: serving on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()
    server.server.server_close()
    print("api: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
