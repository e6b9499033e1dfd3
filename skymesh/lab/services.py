"""Small services on lab nodes for what a test must see from the far end: who is asking, and
WireGuard clients brought up with the real ``wg-quick``.

- :class:`WhoAmI`: a TCP server in a node that answers each connection with the address it
  came from, so a test sees whether traffic was masqueraded, and by whom;
- :func:`ask`: connect from another node and read that answer (bounded);
- :class:`WgQuickClient`: a wg-quick file brought up in a node (``wg-quick up``, which falls
  back to wireguard-go here), and taken down again.
"""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

from .errors import LabError
from .netns import Node

__all__ = ["WhoAmI", "ask", "WgQuickClient"]

_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print('listening', flush=True)
while True:
    c, addr = s.accept()
    with c:
        c.sendall(addr[0].encode())
"""

_CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    c.settimeout(float(sys.argv[3]))
    print(c.recv(256).decode())
except OSError as e:
    print('error:', e, file=sys.stderr)
    sys.exit(1)
"""


class WhoAmI:
    """``python -c`` TCP server on ``node`` at ``address:port`` answering each connection with
    the source address it saw. Stopped by the lab at exit (or :meth:`stop`)."""

    def __init__(self, node: Node, address: str, port: int = 7000) -> None:
        self.node, self.address, self.port = node, address, port
        self.proc = node.popen([sys.executable, "-c", _SERVER, address, str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20.0)
        line = self.proc.stdout.readline().decode(errors="replace") if ready else "(nothing within 20 s)"
        if "listening" not in line:
            raise LabError(f"whoami on {node.name} at {address}:{port} did not start: {line!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def ask(node: Node, address: str, port: int = 7000, timeout: float = 2.0) -> str | None:
    """The source address a :class:`WhoAmI` at ``address:port`` saw for a connection from
    ``node``; None when it could not be reached within ``timeout`` seconds."""
    res = node.run([sys.executable, "-c", _CLIENT, address, str(port), f"{timeout:g}"], timeout=timeout + 10)
    return res.stdout.strip() or None if res.returncode == 0 else None


class WgQuickClient:
    """A client's wg-quick file brought up in ``node`` with the real ``wg-quick``.

    The interface name (the file's name) must be unique on the machine: wireguard-go's
    socket ``/var/run/wireguard/<if>.sock`` is shared by all namespaces. Use a lab name
    (``lab.ifname("c1")``) so the lab's cleanup finds it. A ``DNS =`` line would make
    wg-quick change the machine's resolver: it is refused here.
    """

    def __init__(self, node: Node, ifname: str, text: str) -> None:
        if any(line.strip().lower().startswith("dns") for line in text.splitlines()):
            raise LabError("a DNS line would change this machine's resolver; bring the file up without it")
        self.node, self.ifname = node, ifname
        self.path = Path(node.lab.tempdir(f"wgquick-{ifname}")) / f"{ifname}.conf"
        self.path.write_text(text)
        self.path.chmod(0o600)
        self.up_output = ""

    def up(self, timeout: float = 30.0) -> None:
        res = self.node.run(["wg-quick", "up", str(self.path)], timeout=timeout)
        self.up_output = res.stdout + res.stderr
        if res.returncode != 0:
            raise LabError(f"wg-quick up {self.path.name} in {self.node.name} failed "
                           f"({res.returncode}):\n{self.up_output}")

    def down(self, timeout: float = 30.0) -> None:
        res = self.node.run(["wg-quick", "down", str(self.path)], timeout=timeout)
        if res.returncode != 0:
            raise LabError(f"wg-quick down {self.path.name} failed ({res.returncode}):\n"
                           f"{res.stdout}{res.stderr}")

    def show(self) -> str:
        res = self.node.run(["wg", "show", self.ifname], timeout=10)
        return res.stdout + res.stderr
