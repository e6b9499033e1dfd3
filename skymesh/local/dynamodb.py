"""DynamoDB Local (AWS's Java build): install it, run it on loopback, wait for it, stop it.

Where it lives: ``$SKYMESH_DYNAMODB_LOCAL_DIR`` or ``~/.cache/skymesh/dynamodb-local``
(``DynamoDBLocal.jar`` + ``DynamoDBLocal_lib/``). :func:`install` gets it with
``npm pack amplify-dynamodb-simulator@2.9.30`` (the npm package ships the jar in
``package/emulator/``), so a fresh CI machine needs only npm and Java 17.

The jar has no option for the listen address (its ``-help`` lists ``-port``,
``-inMemory``, ``-dbPath``, ``-sharedDb``, ``-disableTelemetry``… and its Jetty
listens on 0.0.0.0). We therefore start it through a 20-line launcher class,
compiled once with ``javac`` at install, that sets the Jetty connector's host
before starting it: DynamoDB Local then listens on 127.0.0.1 only. Without a
JDK we fall back to the plain jar and say that it listens on all interfaces.
Telemetry is always off (``-disableTelemetry`` and ``DDB_LOCAL_TELEMETRY=0``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .proc import LocalStackError, ManagedProcess, check_port_free, require_executable, wait_until

__all__ = [
    "NPM_PACKAGE",
    "ENV_DIR",
    "install_dir",
    "is_installed",
    "install",
    "DynamoDBLocal",
]

NPM_PACKAGE = "amplify-dynamodb-simulator@2.9.30"
ENV_DIR = "SKYMESH_DYNAMODB_LOCAL_DIR"
JAR = "DynamoDBLocal.jar"
LIB = "DynamoDBLocal_lib"
_LAUNCHER_DIR = "skymesh-launcher"
_LAUNCHER_CLASS = "LoopbackDynamoDBLocal"
_JAVA_HINT = "Install Java 17 (e.g. `apt-get install openjdk-17-jdk-headless`)."

_LAUNCHER_SOURCE = """\
import com.amazonaws.services.dynamodbv2.local.main.ServerRunner;
import com.amazonaws.services.dynamodbv2.local.server.DynamoDBProxyServer;
import java.lang.reflect.Field;
import java.util.Arrays;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;

/** DynamoDB Local listening on one address (args[0]); the other args are the jar's. */
public final class LoopbackDynamoDBLocal {
    public static void main(String[] args) throws Exception {
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(
                Arrays.copyOfRange(args, 1, args.length));
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server server = (Server) field.get(proxy);
        for (Connector c : server.getConnectors()) {
            ((ServerConnector) c).setHost(args[0]);
        }
        proxy.start();
        if (!server.isStarted()) {
            System.exit(2);
        }
        proxy.join();
    }
}
"""


def install_dir() -> Path:
    """Where DynamoDB Local is (or will be) installed."""
    raw = os.environ.get(ENV_DIR)
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "skymesh" / "dynamodb-local"


def is_installed(directory: Path | None = None) -> bool:
    d = directory or install_dir()
    return (d / JAR).is_file() and (d / LIB).is_dir()


def _launcher_ready(directory: Path) -> bool:
    return (directory / _LAUNCHER_DIR / f"{_LAUNCHER_CLASS}.class").is_file()


def _compile_launcher(directory: Path, timeout: float = 120.0) -> bool:
    """Compile the loopback launcher next to the jar; ``False`` when there is no javac."""
    javac = shutil.which("javac")
    if javac is None:
        return False
    out = directory / _LAUNCHER_DIR
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="skymesh-javac-") as tmp:
        src = Path(tmp) / f"{_LAUNCHER_CLASS}.java"
        src.write_text(_LAUNCHER_SOURCE)
        build = Path(tmp) / "classes"
        try:
            res = subprocess.run(
                [javac, "-cp", str(directory / JAR), "-d", str(build), str(src)],
                capture_output=True, text=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise LocalStackError(f"javac did not finish within {timeout:.0f}s") from None
        if res.returncode != 0:
            raise LocalStackError(f"compiling the DynamoDB Local launcher failed:\n{res.stderr}")
        os.replace(build / f"{_LAUNCHER_CLASS}.class", out / f"{_LAUNCHER_CLASS}.class")
    return True


def _npm_pack(dest: Path, timeout: float) -> Path:
    npm = require_executable("npm", "Install Node.js/npm, or pass --from-tarball.")
    try:
        res = subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(dest)],
            capture_output=True, text=True, timeout=timeout, check=False, cwd=dest,
        )
    except subprocess.TimeoutExpired:
        raise LocalStackError(f"`npm pack {NPM_PACKAGE}` did not finish in {timeout:.0f}s") from None
    if res.returncode != 0:
        raise LocalStackError(f"`npm pack {NPM_PACKAGE}` failed:\n{res.stderr.strip()}")
    tgz = sorted(dest.glob("*.tgz"))
    if len(tgz) != 1:
        raise LocalStackError(f"`npm pack {NPM_PACKAGE}` produced no single tarball in {dest}")
    return tgz[0]


def _extract_emulator(tarball: Path, dest: Path) -> None:
    prefix = "package/emulator/"
    with tarfile.open(tarball, "r:gz") as tar:
        members = []
        for m in tar.getmembers():
            if not m.name.startswith(prefix) or not (m.isfile() or m.isdir()):
                continue
            rel = m.name[len(prefix):]
            if not rel or rel.startswith("/") or ".." in Path(rel).parts:
                continue
            m.name = rel
            members.append(m)
        if not members:
            raise LocalStackError(f"{tarball} has no {prefix} folder; is it the right package?")
        if sys.version_info >= (3, 11, 4):
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - older patch releases
            tar.extractall(dest, members=members)  # noqa: S202 - names checked above


def install(
    directory: Path | None = None, *, tarball: Path | None = None, timeout: float = 600.0
) -> Path:
    """Make DynamoDB Local available in ``directory`` (default :func:`install_dir`).

    Idempotent and safe to run concurrently: the files are unpacked beside the
    target and moved into place in one rename. Uses ``tarball`` (an already
    fetched ``amplify-dynamodb-simulator`` .tgz) when given, else ``npm pack``.
    Returns the directory.
    """
    target = (directory or install_dir()).absolute()
    if not is_installed(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".dynamodb-local-", dir=target.parent) as tmp:
            work = Path(tmp)
            tgz = tarball if tarball is not None else _npm_pack(work, timeout)
            unpacked = work / "emulator"
            unpacked.mkdir()
            _extract_emulator(Path(tgz), unpacked)
            if not (unpacked / JAR).is_file():
                raise LocalStackError(f"{tgz} does not contain emulator/{JAR}")
            try:
                os.rename(unpacked, target)
            except OSError:
                if not is_installed(target):  # not a concurrent install that won
                    raise
    if not _launcher_ready(target):
        _compile_launcher(target)
    return target


def _make_private(db_path: Path) -> None:
    """``db_path`` mode 0700 and what is in it 0600/0700 (files an earlier run left readable)."""
    db_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in (db_path, *db_path.rglob("*")):
        if not path.is_symlink():
            os.chmod(path, 0o700 if path.is_dir() else 0o600)


class DynamoDBLocal:
    """One DynamoDB Local server process.

    ``db_path`` keeps tables on disk (one shared database, whatever the
    credentials or region of the client); ``in_memory`` keeps nothing.
    """

    def __init__(
        self,
        port: int,
        *,
        db_path: Path | None = None,
        in_memory: bool = False,
        host: str = "127.0.0.1",
        directory: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        if (db_path is None) == (not in_memory):
            raise ValueError("give exactly one of db_path and in_memory=True")
        self.port = port
        self.host = host
        self.db_path = db_path
        self.in_memory = in_memory
        self.directory = (directory or install_dir()).absolute()
        default_log = (db_path or Path(tempfile.gettempdir())) / f"dynamodb-local-{port}.log"
        self.log_path = log_path or default_log
        self.process: ManagedProcess | None = None
        self.binds_all_interfaces = False

    @property
    def endpoint_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def command(self) -> list[str]:
        """The java command line (needs :func:`install` first)."""
        java = require_executable("java", _JAVA_HINT)
        if not is_installed(self.directory):
            raise LocalStackError(
                f"DynamoDB Local is not installed in {self.directory}. Run "
                "`skymesh local install-dynamodb` (uses `npm pack "
                f"{NPM_PACKAGE}`), or set {ENV_DIR} to where DynamoDBLocal.jar is."
            )
        if not _launcher_ready(self.directory):
            _compile_launcher(self.directory)
        args = ["-port", str(self.port), "-sharedDb", "-disableTelemetry"]
        if self.in_memory:
            args.append("-inMemory")
        else:
            assert self.db_path is not None
            args += ["-dbPath", str(self.db_path)]
        base = [java, f"-Djava.library.path={self.directory / LIB}"]
        if _launcher_ready(self.directory):
            self.binds_all_interfaces = False
            cp = f"{self.directory / JAR}{os.pathsep}{self.directory / _LAUNCHER_DIR}"
            return [*base, "-cp", cp, _LAUNCHER_CLASS, self.host, *args]
        self.binds_all_interfaces = True
        return [*base, "-jar", str(self.directory / JAR), *args]

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and return once it answers ``ListTables``."""
        check_port_free(self.host, self.port, "DynamoDB Local", "--dynamodb-port")
        if self.db_path is not None:
            _make_private(self.db_path)
        argv = self.command()
        if self.binds_all_interfaces:
            print(
                "warning: no javac found, so DynamoDB Local listens on ALL interfaces "
                f"(0.0.0.0:{self.port}); install a JDK to keep it on loopback",
                file=sys.stderr,
            )
        env = {**os.environ, "DDB_LOCAL_TELEMETRY": "0"}
        # umask 077: the database file it creates holds every table (tokens are hashed,
        # but names, keys and addresses are not for other users of the machine).
        self.process = ManagedProcess(
            "dynamodb-local", argv, self.log_path, env=env, cwd=self.directory, umask=0o077
        )
        self.process.start()
        try:
            wait_until(self.ready, timeout, f"DynamoDB Local on port {self.port}",
                       alive=self.process.alive, interval=0.1)
        except LocalStackError as e:
            self.stop()
            raise LocalStackError(f"{e}\n--- {self.log_path} (tail):\n{self.log_tail()}") from None

    def ready(self) -> bool:
        """Whether the server answers a real ``ListTables`` request right now."""
        req = urllib.request.Request(
            self.endpoint_url,
            data=b"{}",
            method="POST",
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": "DynamoDB_20120810.ListTables",
                "Authorization": (
                    "AWS4-HMAC-SHA256 Credential=local/20200101/us-east-1/dynamodb/aws4_request, "
                    "SignedHeaders=host, Signature=0"
                ),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=2.0) as resp:  # noqa: S310 - loopback
                return resp.status == 200 and b"TableNames" in resp.read()
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        if self.process is not None:
            self.process.stop(timeout)

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines) if self.process else ""

    def __enter__(self) -> DynamoDBLocal:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
