"""``skymesh local up``: the whole control plane on one machine, as real child processes.

Order: DynamoDB Local (127.0.0.1, data in ``home/data``) → table + admin key
(``python -m skymesh.local.bootstrap``) → Mosquitto (``home/broker``) → the API
(``python -m skymesh.local.api``) → the scheduler → the rule bridge. Runs in the
foreground; SIGINT/SIGTERM stops the children in reverse order (bounded, then
killed). A Python child (API, scheduler, bridge) that dies is restarted with backoff
(see :meth:`LocalStack.run`). If DynamoDB Local or Mosquitto dies, or a child keeps
dying, its log tail is printed, the rest is stopped and the
exit status is 1. Everything lives in the home, so stop + start loses nothing.

``home/local.json`` (0600) says where clients connect and whether the stack is up:
``state`` is ``starting`` (an earlier run's file, rewritten before anything starts),
``ready`` (written in one rename once every child is ready) or ``stopped`` (on exit),
with the stack's ``pid`` and ``started_at``. A ``ready`` whose pid is gone was
killed. ``skymesh local wait`` waits (bounded) for ``ready`` with a live pid.

Environment of the children (the contract with ``chalicelib.config``, which names every
variable; the shared part is :func:`chalicelib.config.local_stage_env`)::

    SKYMESH_TABLE=skymesh  SKYMESH_DYNAMODB_ENDPOINT=http://127.0.0.1:<dynamodb-port>
    AWS_DEFAULT_REGION=us-east-1  AWS_ACCESS_KEY_ID=local  AWS_SECRET_ACCESS_KEY=local
    AWS_EC2_METADATA_DISABLED=true  (boto never probes the metadata address)
    SKYMESH_PUBLISHER=mqtt  SKYMESH_IDENTITY=local  SKYMESH_HOME=<absolute home>
    SKYMESH_MQTT_HOST=<bind>  SKYMESH_MQTT_PORT=<mqtt-port>  SKYMESH_MQTT_ENDPOINT=<bind>
    SKYMESH_MQTT_CA=<home>/ca/ca.pem
    SKYMESH_MQTT_CLIENT_CERT / SKYMESH_MQTT_CLIENT_KEY = <home>/control/<child>.pem/.key
        (one certificate per child: CN skymesh-control-api, -scheduler, -bridge, -cli;
         the bridge's subscription uses its own, skymesh-control-rules)

Other inherited ``AWS_*`` variables are removed, so real credentials never reach
the local stack.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib import config

from . import dashboard
from . import dynamodb as ddb
from .bridge import READY_LINE
from .broker import MosquittoBroker, find_mosquitto
from .proc import (
    LocalStackError,
    ManagedProcess,
    RestartBudget,
    check_port_free,
    require_executable,
    tail,
    wait_until,
)

__all__ = ["StackConfig", "LocalStack", "child_env", "CHILD_ENV_KEYS", "add_local_commands",
           "read_state", "is_ready"]

_AWS_OFFLINE = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_EC2_METADATA_DISABLED": "true"}
"""DynamoDB Local takes any credentials; boto never looks for real ones."""

CHILD_ENV_KEYS = (
    *config.local_stage_env(""), *_AWS_OFFLINE, config.MQTT_ENDPOINT, config.MQTT_CA,
    config.MQTT_CLIENT_CERT, config.MQTT_CLIENT_KEY,
)
"""Every variable ``child_env`` sets (documented in the module docstring)."""

_READY_TIMEOUT = 60.0
RESTARTABLE = ("api", "scheduler", "bridge")
"""Children that hold no state of their own: one that dies is started again."""


@dataclass(frozen=True)
class StackConfig:
    home: Path
    bind: str = "127.0.0.1"
    api_port: int = 8787
    mqtt_port: int = 8883
    dynamodb_port: int = 8000
    dashboard_dir: Path = dashboard.DEFAULT_DIST

    @property
    def connect_host(self) -> str:
        return "127.0.0.1" if ipaddress.ip_address(self.bind).is_unspecified else self.bind

    @property
    def api_url(self) -> str:
        h = self.connect_host
        return f"http://{'[' + h + ']' if ':' in h else h}:{self.api_port}"

    @property
    def dashboard_url(self) -> str:
        """Where the API server serves the web dashboard: its own origin (no CORS)."""
        return self.api_url + "/"


def child_env(cfg: StackConfig, component: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one child (``component`` picks its control certificate)."""
    # Settings such as SKYMESH_OFFLINE_AFTER pass through; where to find the broker does not.
    local_names = {v.name for v in config.VARIABLES if v.section == "local"}
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith("AWS_") and k not in local_names}
    home = cfg.home.absolute()
    env.update(config.local_stage_env(str(home), mqtt_host=cfg.connect_host, mqtt_port=cfg.mqtt_port,
                                      dynamodb_port=cfg.dynamodb_port))
    env.update(_AWS_OFFLINE)
    env.update({
        config.MQTT_ENDPOINT: cfg.connect_host,
        config.MQTT_CA: str(home / "ca" / "ca.pem"),
        config.MQTT_CLIENT_CERT: str(home / "control" / f"{component}.pem"),
        config.MQTT_CLIENT_KEY: str(home / "control" / f"{component}.key"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(_python_path(env.get("PYTHONPATH"))),
    })
    return env


def _python_path(existing: str | None) -> list[str]:
    """Where the children find ``skymesh``, ``chalicelib`` and ``app`` (as this process does)."""
    paths = [str(Path(__file__).resolve().parents[2])]
    spec = importlib.util.find_spec(os.environ.get("SKYMESH_APP_MODULE", "app"))
    if spec is not None and spec.origin:
        paths.append(str(Path(spec.origin).resolve().parent))
    paths += [p for p in (existing or "").split(os.pathsep) if p]
    return list(dict.fromkeys(paths))


def _http_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0):  # noqa: S310 - our loopback API
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is serving
    except (urllib.error.URLError, OSError):
        return False


def _log_has(path: Path, offset: int, needle: str) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return needle.encode() in f.read()
    except FileNotFoundError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class LocalStack:
    """Starts, watches and stops the children of one home."""

    def __init__(self, cfg: StackConfig, out: Any = None) -> None:
        self.cfg = cfg
        self.home = cfg.home.absolute()
        self.logs = self.home / "logs"
        self.out = out or sys.stdout
        self.broker = MosquittoBroker(self.home, cfg.bind, cfg.mqtt_port)
        self.db = ddb.DynamoDBLocal(cfg.dynamodb_port, db_path=self.home / "data",
                                    log_path=self.logs / "dynamodb.log")
        self.children: list[tuple[str, Any]] = []  # (name, object with alive/stop/log_tail)
        self._ready: dict[str, Any] = {}  # name -> how to tell that a (re)started child is ready
        self._budgets: dict[str, RestartBudget] = {}
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        self._stopping = False

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # --- checks ---------------------------------------------------------------
    def preflight(self) -> None:
        """Dependencies present, ports distinct and free; :class:`LocalStackError` if not."""
        require_executable("java", "Install Java 17 (`apt-get install openjdk-17-jre-headless`).")
        find_mosquitto()
        if not ddb.is_installed(self.db.directory):
            raise LocalStackError(
                f"DynamoDB Local is not installed in {self.db.directory}. Run "
                "`skymesh local install-dynamodb` once (npm pack "
                f"{ddb.NPM_PACKAGE}), or set {ddb.ENV_DIR}."
            )
        ports = {"--api-port": self.cfg.api_port, "--mqtt-port": self.cfg.mqtt_port,
                 "--dynamodb-port": self.cfg.dynamodb_port}
        if len(set(ports.values())) != 3:
            raise LocalStackError(f"the three ports must differ: {ports}")
        check_port_free(self.cfg.bind, self.cfg.api_port, "the API", "--api-port")
        check_port_free(self.cfg.bind, self.cfg.mqtt_port, "the MQTT broker", "--mqtt-port")
        check_port_free("127.0.0.1", self.cfg.dynamodb_port, "DynamoDB Local", "--dynamodb-port")

    # --- start ----------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Start everything; return what ``local.json`` holds. Stops what started on failure."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.preflight()
        started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if (self.home / "local.json").exists():  # an earlier run's file no longer says ready
            self.mark("starting", started_at=started_at)
        try:
            self.broker.prepare()  # CA, server cert, CRL, ACL: also needed by the bootstrap
            for component in ("api", "scheduler", "bridge", "cli"):
                self.broker.identity.issue_control_client(component)
            self.say(f"starting DynamoDB Local on 127.0.0.1:{self.cfg.dynamodb_port}")
            self.db.start(timeout=_READY_TIMEOUT)
            self.children.append(("dynamodb-local", self.db))
            admin_key = self._bootstrap()
            self.say(f"starting Mosquitto on {self.cfg.bind}:{self.cfg.mqtt_port}")
            self.broker.start(timeout=_READY_TIMEOUT)
            self.children.append(("mosquitto", self.broker))
            serve_dashboard = dashboard.is_built(self.cfg.dashboard_dir)
            if not serve_dashboard:
                self.say(f"the web dashboard is not built ({self.cfg.dashboard_dir} has no index.html;"
                         " `make web` builds it): serving the API only")
            self._start_python("api", "skymesh.local.api",
                               ["--host", self.cfg.bind, "--port", str(self.cfg.api_port)]
                               + (["--dashboard", str(self.cfg.dashboard_dir)] if serve_dashboard else []),
                               lambda: _http_up(self.cfg.api_url + "/v1/health"))
            self._start_python("scheduler", "skymesh.local.scheduler", [], None,
                               ready_line="ready:")
            self._start_python("bridge", "skymesh.local.bridge", [], None,
                               ready_line=READY_LINE)
        except BaseException:
            self.stop()
            raise
        info = {
            "api_url": self.cfg.api_url,
            **({"dashboard_url": self.cfg.dashboard_url} if serve_dashboard else {}),
            "mqtt_endpoint": self.cfg.connect_host,
            "mqtt_port": self.cfg.mqtt_port,
            "ca_pem_path": str(self.home / "ca" / "ca.pem"),
            "admin_key": admin_key,
            "state": "ready",
            "pid": os.getpid(),
            "started_at": started_at,
        }
        _write_private_json(self.home / "local.json", info)
        return info

    def mark(self, state: str, **fields: Any) -> None:
        """Rewrite ``local.json`` with ``state`` (and this pid), keeping what else it holds."""
        info = read_state(self.home)
        info.update(fields, state=state, pid=os.getpid())
        _write_private_json(self.home / "local.json", info)

    def _existing_admin_key(self) -> str | None:
        try:
            return str(json.loads((self.home / "local.json").read_text())["admin_key"])
        except (FileNotFoundError, KeyError, ValueError, TypeError):
            return None

    def _bootstrap(self, timeout: float = 120.0) -> str:
        log = self.logs / "bootstrap.log"
        self.logs.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as err:
            try:
                res = subprocess.run(
                    [sys.executable, "-m", "skymesh.local.bootstrap"],
                    input=(self._existing_admin_key() or "") + "\n",
                    stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout,
                    env=child_env(self.cfg, "cli"), check=False,
                )
            except subprocess.TimeoutExpired:
                raise LocalStackError(f"creating the table and admin key took over {timeout:.0f}s;"
                                      f" see {log}") from None
        if res.returncode != 0:
            raise LocalStackError(f"creating the table and admin key failed:\n{tail(log)}")
        try:
            return str(json.loads(res.stdout.strip().splitlines()[-1])["admin_key"])
        except (IndexError, KeyError, ValueError):
            raise LocalStackError(f"bootstrap printed no admin key; see {log}") from None

    def _start_python(self, name: str, module: str, args: list[str], probe: Any,
                      ready_line: str | None = None) -> None:
        log = self.logs / f"{name}.log"
        proc = ManagedProcess(name, [sys.executable, "-m", module, *args], log,
                              env=child_env(self.cfg, name))
        self.say(f"starting {name}")
        self._ready[name] = (probe, ready_line)
        self.children.append((name, proc))
        self._launch(name, proc)

    def _launch(self, name: str, proc: ManagedProcess) -> None:
        """Start ``proc`` and wait (bounded) until it is ready; :class:`LocalStackError` if not."""
        probe, ready_line = self._ready[name]
        offset = _size(proc.log_path)
        proc.start()
        check = probe if probe is not None else (
            lambda: _log_has(proc.log_path, offset, ready_line or ""))
        try:
            wait_until(check, _READY_TIMEOUT, name, alive=proc.alive, interval=0.05)
        except LocalStackError as e:
            raise LocalStackError(f"{e}\n--- {proc.log_path} (tail):\n{proc.log_tail()}") from None

    # --- run ------------------------------------------------------------------
    def run(self) -> int:
        """Watch the children until a signal (→ 0) or a death that is not restarted (→ 1).

        A child in :data:`RESTARTABLE` that dies is started again after a backoff, and
        each death is printed with the child's log tail: a bridge that stops records no
        host's status, so it must not stay down, nor take the API down with it. Every
        child's budget is :class:`RestartBudget`'s default (5 deaths in 5 minutes, from
        0.5 s doubling); past it the stack stops, as it does when DynamoDB Local or
        Mosquitto dies: they hold the state everything else needs, and a person should
        see why they died rather than have it hidden by restarts.
        """
        signal.signal(signal.SIGCHLD, lambda *_: self._wake.set())
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        try:
            while not self._stopping:
                self._wake.wait(1.0)
                self._wake.clear()
                if self._stopping:
                    break
                dead = [(n, c) for n, c in self.children if not c.alive()]
                for name, child in dead:
                    if self._stopping or not self._restart(name, child):
                        break
                else:
                    continue
                if not self._stopping:
                    return 1
            return 0
        finally:
            self.stop()

    def _restart(self, name: str, child: Any) -> bool:
        """Start a dead child again after its backoff; ``False`` when it is not to be restarted."""
        if name not in RESTARTABLE:
            self.say(f"\n{name} exited unexpectedly; last lines of its log:\n"
                     f"{child.log_tail()}\nstopping the rest")
            return False
        code = child.returncode()
        budget = self._budgets.setdefault(name, RestartBudget())
        delay = budget.after_death(time.monotonic())
        if delay is None:
            self.say(f"\n{name} exited (status {code}) {budget.recent_deaths} times within "
                     f"{budget.window:.0f}s; last lines of its log:\n{child.log_tail()}\n"
                     "not restarting it again; stopping the rest")
            return False
        self.say(f"\n{name} exited unexpectedly (status {code}); last lines of its log:\n"
                 f"{child.log_tail()}\nrestarting {name} in {delay:g}s "
                 f"(restart {budget.recent_deaths} of at most {budget.limit} within {budget.window:.0f}s)")
        if self._stop_requested.wait(delay):
            return True  # stopping: the caller sees it
        try:
            self._launch(name, child)
        except LocalStackError as e:
            child.stop()  # not ready: counts as the next death on the next turn
            self.say(f"{name} did not come back: {e}")
            self._wake.set()
            return True
        self.say(f"{name} restarted")
        return True

    def _on_stop_signal(self, *_: Any) -> None:
        self._stopping = True
        self._stop_requested.set()
        self._wake.set()

    def stop(self) -> None:
        """Stop the children in reverse order (each: SIGTERM, bounded wait, SIGKILL)."""
        while self.children:
            name, child = self.children.pop()
            if child.alive():
                self.say(f"stopping {name}")
            child.stop()


def _write_private_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_state(home: Path) -> dict[str, Any]:
    """What ``home/local.json`` holds (``{}`` when it is missing or unreadable)."""
    try:
        info = json.loads((home / "local.json").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def is_ready(info: dict[str, Any]) -> bool:
    """Whether ``local.json`` content says a live stack is ready (not a killed run's leftover)."""
    return info.get("state") == "ready" and _pid_alive(info.get("pid"))


def _show(info: dict[str, Any], home: Path, tty: bool) -> str:
    shown = dict(info)
    if not tty:  # keep the secret out of captured output (CI logs); it is in local.json
        key = str(shown["admin_key"])
        shown["admin_key"] = key[:10] + "…  (full key in " + str(home / "local.json") + ")"
    return json.dumps(shown, indent=2, ensure_ascii=False)


# --- command line --------------------------------------------------------------------

def _default_home() -> Path:
    return Path(os.environ.get(config.HOME) or "./.skymesh")


def cmd_up(args: argparse.Namespace) -> int:
    cfg = StackConfig(home=Path(args.home).absolute(), bind=args.bind, api_port=args.api_port,
                      mqtt_port=args.mqtt_port, dynamodb_port=args.dynamodb_port)
    try:
        ipaddress.ip_address(cfg.bind)
    except ValueError:
        print(f"error: --bind must be an IP address, not {cfg.bind!r}", file=sys.stderr)
        return 2
    stack = LocalStack(cfg)
    try:
        info = stack.start()
    except LocalStackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    stack.say("skymesh local stack is up:")
    stack.say(_show(info, stack.home, sys.stdout.isatty()))
    if "dashboard_url" in info:
        stack.say(f"dashboard: {info['dashboard_url']}  (sign in with the admin_key)")
    stack.say(f"written to {stack.home / 'local.json'}; logs in {stack.logs}. Ctrl-C stops it.")
    try:
        return stack.run()
    finally:
        stack.mark("stopped")


def cmd_wait(args: argparse.Namespace) -> int:
    """Exit 0 once ``local.json`` says ready with a live pid (prints the API URL), else 1."""
    home = Path(args.home).absolute()
    deadline = time.monotonic() + args.timeout
    while True:
        info = read_state(home)
        if is_ready(info):
            print(info.get("api_url", ""))
            return 0
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)  # polling a file another process writes, bounded by the deadline
    if not info:
        seen = "no local.json yet"
    elif info.get("state") in ("ready", "starting") and not _pid_alive(info.get("pid")):
        seen = f"local.json says {info['state']}, but its stack (pid {info.get('pid')}) is not running"
    else:
        seen = f"local.json says {info.get('state', 'nothing about its state')}"
    print(f"error: the local stack in {home} is not ready after {args.timeout:g}s ({seen}); "
          f"start it with `skymesh local up --home {home}` and see {home / 'logs'}", file=sys.stderr)
    return 1


def cmd_install_dynamodb(args: argparse.Namespace) -> int:
    try:
        where = ddb.install(tarball=Path(args.from_tarball) if args.from_tarball else None)
    except LocalStackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"DynamoDB Local is in {where}")
    return 0


def add_local_commands(subparsers: Any) -> None:
    """Register ``local up``, ``local wait`` and ``local install-dynamodb`` on the top-level subparsers."""
    local = subparsers.add_parser("local", help="run the control plane on this machine")
    sub = local.add_subparsers(dest="local_command", required=True)
    up = sub.add_parser("up", help="start the local stack in the foreground")
    up.add_argument("--home", default=str(_default_home()),
                    help="state directory (default $SKYMESH_HOME or ./.skymesh)")
    up.add_argument("--bind", default="127.0.0.1", help="address for the API and MQTT")
    up.add_argument("--api-port", type=int, default=8787)
    up.add_argument("--mqtt-port", type=int, default=8883)
    up.add_argument("--dynamodb-port", type=int, default=8000)
    up.set_defaults(func=cmd_up)
    wait = sub.add_parser("wait", help="wait until the local stack of a home is ready (for scripts)")
    wait.add_argument("--home", default=str(_default_home()),
                      help="state directory (default $SKYMESH_HOME or ./.skymesh)")
    wait.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    wait.set_defaults(func=cmd_wait)
    inst = sub.add_parser("install-dynamodb",
                          help=f"fetch DynamoDB Local (npm pack {ddb.NPM_PACKAGE})")
    inst.add_argument("--from-tarball", default=None,
                      help="use an already downloaded amplify-dynamodb-simulator .tgz")
    inst.set_defaults(func=cmd_install_dynamodb)
