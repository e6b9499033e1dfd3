"""``skymesh-agent``: join a host to skymesh, keep it converged, show and end it.

    skymesh-agent join --server URL --token TOKEN [--name N] [--interface IF]
                       [--backend auto|uapi|netlink] [--endpoint HOST:PORT ...]
                       [--listen-port P] [--state-dir DIR]
    skymesh-agent run [--state-dir DIR]
    skymesh-agent status [--json] [--state-dir DIR]
    skymesh-agent leave [--force] [--state-dir DIR]

``--state-dir`` (default ``$SKYMESH_STATE_DIR``, else /var/lib/skymesh) goes before or
after the subcommand.

One process owns a state directory's device at a time: ``run`` holds its
``run.lock`` (see :mod:`agent.state`). ``leave`` deregisters the host, then stops
a running agent (SIGTERM, bounded wait) and removes the interface and the state
while it holds the lock itself, so no agent "repairs" the interface it removes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

from chalicelib.domain import validate

from . import __version__, keys
from .api import ApiClient, ApiError, Unreachable
from .converge import Tracker
from .probe import ProbeSettings
from .state import DEFAULT_STATE_DIR, AgentState, NotJoinedError, RunLock, StateDir

log = logging.getLogger("skymesh.agent")

DEFAULT_INTERFACE = "skymesh0"
DEFAULT_PORT = 51820
BACKENDS = ("auto", "uapi", "netlink")
STATE_DIR_ENV = "SKYMESH_STATE_DIR"
STOP_TIMEOUT = 20.0  # how long `leave` waits for a running agent to stop (the unit's TimeoutStopSec)
LEAVE_WAIT = 30.0  # how long `run` waits for a `leave` that holds the state directory
EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake the person running the command can fix; printed without a traceback."""


class AgentRunningError(Exception):
    """Another ``run`` already owns this state directory."""


def _default_name() -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0]).strip("-._")
    return (name or "host")[:63]


def _backend(state: AgentState):  # noqa: ANN202
    from .wg import make_backend
    return make_backend(state.backend, state.interface)


def discover_endpoints(interface: str, port: int) -> list[str]:
    """This host's global addresses on other interfaces, as WireGuard endpoints."""
    from .netconf import local_addresses
    return [validate.format_endpoint(a, port) for a in local_addresses([interface])][:validate.MAX_ENDPOINTS]


# ---------------------------------------------------------------------- join
def cmd_join(args: argparse.Namespace) -> int:
    sd = StateDir(args.state_dir)
    if sd.exists():
        st = sd.load()
        raise UsageError(f"this host already joined as {st.name} ({st.host_id}) with state in "
                         f"{sd.path}; run `skymesh-agent leave` first")
    name = args.name or _default_name()
    validate.name(name, "--name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", args.interface):
        raise UsageError(f"--interface {args.interface!r}: use 1-15 letters, digits, '_', '.' or '-'")
    wg_key, tls_key = keys.new_wireguard_key(), keys.new_tls_key()
    endpoints = list(args.endpoint) if args.endpoint else discover_endpoints(args.interface, args.listen_port)
    api = ApiClient(args.server)
    reg = api.register(args.token, name=name, wg_public_key=keys.wireguard_public_key(wg_key),
                       listen_port=args.listen_port, endpoints=endpoints,
                       csr_pem=keys.csr_pem(tls_key, name))
    host, mqtt = reg["host"], reg["mqtt"]
    state = AgentState(
        server=args.server, host_id=host["id"], name=host["name"], host_token=reg["host_token"],
        interface=args.interface, backend=args.backend, listen_port=args.listen_port,
        mqtt_endpoint=mqtt["endpoint"], mqtt_port=int(mqtt["port"]), client_id=mqtt["client_id"],
        endpoints=tuple(args.endpoint or ()), auto_endpoints=() if args.endpoint else tuple(endpoints),
        status_topic=next(iter(mqtt.get("topics", {}).get("publish", ())), ""),
    )
    sd.create()
    sd.save_secrets(wg_key=wg_key, tls_key=tls_key)
    sd.save_credentials(certificate_pem=reg["certificate_pem"], ca_pem=reg["ca_pem"])
    sd.save(state)
    try:  # so that `run` brings the tunnels up even if the control plane is down by then
        sd.save_cache(list(ApiClient(args.server, state.host_token).config(state.host_id).snapshots))
    except (ApiError, Unreachable) as e:
        log.warning("joined, but could not fetch the config yet (%s); `run` will", e)
    print(f"joined as {state.name} ({state.host_id})")
    for a in host["addresses"]:
        print(f"  network {a['network_id']}: {a['ipv4']}, {a['ipv6']}")
    print(f"state in {sd.path}; now start the agent: skymesh-agent run --state-dir {sd.path}")
    return 0


# ----------------------------------------------------------------------- run
def _lock_for_run(sd: StateDir) -> RunLock:
    """Own the state directory, or raise :class:`AgentRunningError`.

    A ``leave`` holds it while it removes everything: wait for it (bounded); the state is gone then.
    """
    deadline = time.monotonic() + LEAVE_WAIT
    while (lock := sd.try_lock("run")) is None:
        holder = sd.lock_holder()
        if holder is not None and holder.command == "run":
            raise AgentRunningError(f"an agent already runs for {sd.path} (pid {holder.pid}); "
                                    "stop it first, or give another --state-dir")
        if time.monotonic() > deadline:
            raise UsageError(f"{sd.path} is held by pid {holder.pid if holder else '?'} "
                             f"({holder.command if holder else 'unknown'}) for over {LEAVE_WAIT:.0f}s")
        time.sleep(0.1)  # polling a lock another process holds for a short while
    return lock


def cmd_run(args: argparse.Namespace) -> int:
    sd = StateDir(args.state_dir)
    sd.load()  # NotJoinedError before anything else
    with _lock_for_run(sd):
        return _run(sd, sd.load(), _probe_settings(args))  # loaded again: a `leave` may have wiped it


def _probe_settings(args: argparse.Namespace) -> ProbeSettings:
    fast = ProbeSettings.fast if args.probe_interval is None else args.probe_interval
    slow = ProbeSettings.slow if args.probe_slow_interval is None else args.probe_slow_interval
    if not (0.05 <= fast <= 60 and 0.05 <= slow <= 600):
        raise UsageError("--probe-interval takes 0.05 to 60 seconds, --probe-slow-interval 0.05 to 600")
    # a probe is missed when unanswered within an interval (at most a second): a target is down
    # after three intervals, so failover at 0.3 s probes notices within about a second
    return ProbeSettings(fast=fast, slow=slow, timeout=min(1.0, fast))


def _run(sd: StateDir, state: AgentState, probes: ProbeSettings | None = None) -> int:
    from .election_loop import ElectionLoop, control_plane_vote, next_incarnation
    from .floating import GroupDataPlane
    from .fulltunnel import FullTunnel, table_for
    from .gateway import Forwarding
    from .groups import GroupMembership
    from .mqtt import MqttLink
    from .netconf import NetConf
    from .probe import Prober
    from .runner import EXIT_HOST_DELETED, Agent, offline_message
    from .underlay import Underlay

    wg_key = sd.wg_key()  # stays in this process: the underlay echo derives its MAC keys from it
    api = ApiClient(state.server, state.host_token)
    # issue 11: the gateway groups this host is a member of: their key, interface and election
    groups = GroupMembership(
        sd, state.host_id, wg_key, api, interface=state.interface,
        planes=lambda ifname: GroupDataPlane(ifname, backend=state.backend),
        election=lambda: ElectionLoop(next_incarnation(sd.path),
                                      vote=control_plane_vote(api.claim_gateway_group)))
    agent = Agent(
        sd, backend=_backend(state), netsetup=NetConf(state.interface),
        routing=FullTunnel(state.interface, table_for(state.listen_port)),
        forwarding=Forwarding(state.interface, sd.forwarding_memo),
        link_factory=lambda events: MqttLink(
            endpoint=state.mqtt_endpoint, port=state.mqtt_port, client_id=state.client_id,
            cert_path=sd.tls_cert_path, key_path=sd.tls_key_path,
            ca_path=sd.ca_path if sd.ca_path.exists() and sd.ca_path.stat().st_size else None,
            events=events, will=offline_message(state.host_id)),
        discover_endpoints=lambda: discover_endpoints(state.interface, state.listen_port),
        prober=Prober(probes or ProbeSettings()),
        underlay=Underlay(wg_key, keys.wireguard_public_key(wg_key), state.listen_port),
        api=api, groups=groups,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    log.info("skymesh-agent %s: %s (%s) on %s", __version__, state.name, state.host_id, state.interface)
    agent.run()
    if agent.deleted:
        return EXIT_HOST_DELETED
    log.info("stopped; %s stays up with its last config", state.interface)
    return 0


# -------------------------------------------------------------------- status
def cmd_status(args: argparse.Namespace) -> int:
    from .status import collect, render

    sd = StateDir(args.state_dir)
    state = sd.load()
    backend = _backend(state)
    stats = backend.stats() if backend.exists() else None
    holder = sd.lock_holder()
    st = collect(state, Tracker(state.host_id, sd.load_cache()), stats, sd.load_runtime(), backend.name,
                 alive=holder is not None and holder.command == "run")
    print(json.dumps(st, indent=2) if args.json else render(st))
    return 0


# --------------------------------------------------------------------- leave
def _systemd_unit(pid: int) -> str | None:
    """The systemd service ``pid`` runs in, if any (from its cgroup)."""
    try:
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    units = re.findall(r"/([^/\n]+\.service)(?:/|$)", cgroup, re.M)
    return units[-1] if units else None


def _stop_agent(sd: StateDir, timeout: float = STOP_TIMEOUT) -> RunLock:
    """Stop the agent that runs for ``sd`` (if one does) and own the directory; bounded by ``timeout``.

    The pid comes from ``run.lock``, which only a live ``run`` of this very directory
    holds, so a stale pid file can never make us signal an unrelated process.
    """
    deadline = time.monotonic() + timeout
    signalled: list[int] = []
    while (lock := sd.try_lock("leave")) is None:
        holder = sd.lock_holder()
        if holder is not None and holder.pid and holder.pid not in signalled:
            if holder.command != "run":
                raise UsageError(f"another `skymesh-agent {holder.command}` (pid {holder.pid}) "
                                 f"holds {sd.path}")
            try:
                os.kill(holder.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            except PermissionError:
                raise UsageError(f"the agent (pid {holder.pid}) runs as another user; stop it first "
                                 "(e.g. `systemctl stop skymesh-agent`), then run `skymesh-agent leave` "
                                 "again") from None
            signalled.append(holder.pid)
            unit = _systemd_unit(holder.pid)
            print(f"stopping the running agent (pid {holder.pid}"
                  + (f", {unit}: it will not come back, `systemctl disable {unit}` keeps it off at boot)"
                     if unit else ")"))
        if time.monotonic() > deadline:
            pids = ", ".join(map(str, signalled)) or "?"
            raise UsageError(f"the running agent (pid {pids}) did not stop within {timeout:.0f}s; the "
                             "host is deregistered already: stop it (kill -9) and run `skymesh-agent leave` "
                             "again")
        time.sleep(0.05)  # polling a lock until its holder exits, bounded above
    return lock


def _remove_roles(sd: StateDir, state: AgentState) -> None:
    """Remove the full-tunnel rules and routes and the gateway's table, and put back the
    forwarding sysctls, before the state (which remembers them) goes."""
    from .fulltunnel import FullTunnel, table_for
    from .gateway import Forwarding
    from .netconf import NetConfError

    try:
        FullTunnel(state.interface, table_for(state.listen_port)).clear()
        Forwarding(state.interface, sd.forwarding_memo).clear()
    except NetConfError as e:
        raise UsageError(f"{e}; the host is deregistered already: fix that and run `skymesh-agent leave` "
                         "again") from None


def _remove_groups(sd: StateDir, state: AgentState) -> None:
    """Remove the group interface (and what an active member added) of each gateway group whose key
    is kept here (issue 11); the keys go with the state directory."""
    from .floating import FloatingError, GroupDataPlane
    from .groups import group_ifname

    for group_id in sd.group_key_ids():
        try:
            GroupDataPlane(group_ifname(group_id, state.interface), backend=state.backend).close()
        except FloatingError as e:
            log.warning("%s", e)


def cmd_leave(args: argparse.Namespace) -> int:
    from .netconf import NetConf

    sd = StateDir(args.state_dir)
    state = sd.load()
    # Deregister first: when the API cannot be reached (and no --force), nothing has changed yet
    # and a running agent keeps the tunnels up.
    try:
        ApiClient(state.server, state.host_token).delete_host(state.host_id)
    except ApiError as e:
        if e.status not in (401, 404):  # already gone is fine
            raise
    except Unreachable as e:
        if not args.force:
            raise UsageError(f"{e}; the host is still registered. Retry when the API is reachable, "
                             "or use --force to remove it locally only (an admin then deletes it)") from None
        log.warning("%s; removing locally only", e)
    with _stop_agent(sd):  # no agent may "repair" what is removed here
        _remove_roles(sd, state)
        NetConf(state.interface).clear()
        _remove_groups(sd, state)
        backend = _backend(state)
        if backend.exists():
            backend.delete()
        sd.wipe()
    print(f"{state.name} ({state.host_id}) left; {state.interface} removed")
    return 0


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The command line; ``--state-dir`` and ``-v`` go before or after the subcommand."""
    env_dir = os.environ.get(STATE_DIR_ENV)
    state_help = (f"where the agent keeps its keys and state (default ${STATE_DIR_ENV}, "
                  f"else {DEFAULT_STATE_DIR})")
    p = argparse.ArgumentParser(prog="skymesh-agent", description="skymesh host agent")
    p.add_argument("--version", action="version", version=f"skymesh-agent {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--state-dir", type=Path, default=Path(env_dir) if env_dir else DEFAULT_STATE_DIR,
                   help=state_help)
    # The same options after the subcommand; SUPPRESS keeps a subcommand that was not given one
    # from overwriting what was given before it (or the default).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging")
    common.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS, help=state_help)
    sub = p.add_subparsers(dest="command", required=True)

    j = sub.add_parser("join", parents=[common], help="register this host with an enrollment token")
    j.add_argument("--server", required=True, help="the skymesh API URL")
    j.add_argument("--token", required=True, help="an enrollment key token (skm_ek_...)")
    j.add_argument("--name", help="host name (default: the hostname)")
    j.add_argument("--interface", default=DEFAULT_INTERFACE,
                   help=f"WireGuard interface (default {DEFAULT_INTERFACE})")
    j.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="kernel WireGuard over netlink, or userspace wireguard-go over its UAPI socket "
                        "(default auto: kernel when available)")
    j.add_argument("--endpoint", action="append", default=[], metavar="HOST:PORT",
                   help="where peers reach this host (repeatable; default: its global addresses)")
    j.add_argument("--listen-port", type=int, default=DEFAULT_PORT, help=f"UDP port (default {DEFAULT_PORT})")
    j.set_defaults(func=cmd_join)
    r = sub.add_parser("run", parents=[common], help="apply and keep the WireGuard config converged")
    r.add_argument("--probe-interval", type=float, metavar="SECONDS",
                   help=f"probe the gateways this host routes through this often "
                        f"(default {ProbeSettings.fast})")
    r.add_argument("--probe-slow-interval", type=float, metavar="SECONDS",
                   help=f"probe other gateways and peers without a direct path this often "
                        f"(default {ProbeSettings.slow})")
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("status", parents=[common], help="networks and peers, like `wg show` with names")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)
    lv = sub.add_parser("leave", parents=[common], help="deregister this host and remove its interface")
    lv.add_argument("--force", action="store_true", help="remove locally even if the API is unreachable")
    lv.set_defaults(func=cmd_leave)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("pyroute2",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (NotJoinedError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except AgentRunningError as e:
        print(f"error: {e}", file=sys.stderr)
    except ApiError as e:
        print(f"error: the API said: {e.message} (HTTP {e.status})", file=sys.stderr)
    except Unreachable as e:
        print(f"error: {e}", file=sys.stderr)
    except PermissionError as e:
        print(f"error: {e} (the agent manages network interfaces: run it as root)", file=sys.stderr)
    return 1

if __name__ == "__main__":
    sys.exit(main())
