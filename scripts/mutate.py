"""``make mutate``: mutation testing (mutmut) of the store's conditions, the stream and the agent runner.

Starts one in-memory DynamoDB Local for the whole run and hands it to every test run
through ``SKYMESH_TEST_DYNAMODB_ENDPOINT`` (mutmut forks a pytest run per mutant; each
would otherwise start its own Java process), then runs ``mutmut run`` and prints the
survivors. Which files are mutated and which tests run is ``[tool.mutmut]`` in
pyproject.toml; by default only the store's methods that carry a condition (or map a
failed one to its error) are run, with the whole stream (and the delta it builds) and
agent runner: the store's item conversions would triple the run and guard nothing.

    .venv/bin/python scripts/mutate.py [--all] [--max-children N] [MUTANT_GLOB ...]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_DDB = "chalicelib.adapters.dynamodb"
_PARTS = {  # the store's part (module, class) -> its methods that carry a condition
    ("base", "StoreBase"): ("_record_change",),
    ("networks", "NetworkRecords"): ("_registry_update", "mark_network_deleting", "delete_network"),
    ("keys", "KeyRecords"): ("revoke_enrollment_key",),
    ("hosts", "HostRecords"): ("register_host", "update_host", "_member_ops", "_leave_ops",
                               "remove_host_from_network", "delete_host", "record_host_status",
                               "mark_offline"),
    ("stream", "StreamRecords"): ("acquire_publish_lease", "release_publish_lease", "advance_seq"),
}
FOCUS = [
    f"{_DDB}.tx.xǁTxǁ*",
    *(f"{_DDB}.tx.x_{f}__mutmut_*" for f in ("transact", "guard_update", "condition_failed")),
    *(f"{_DDB}.{module}.xǁ{cls}ǁ{m}__mutmut_*" for (module, cls), methods in _PARTS.items() for m in methods),
    "chalicelib.service.stream.*",
    "chalicelib.domain.changes.*",  # the delta the stream sends
    "agent.runner.*",
    "agent.timers.*",  # the runner's schedule and backoff
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--all", action="store_true", help="every mutant of the configured files")
    parser.add_argument("mutants", nargs="*", help="only these mutants (mutmut names or globs)")
    args = parser.parse_args(argv)
    # `timeout` and service managers stop with SIGTERM: clean up as on ^C (mutmut, DynamoDB Local).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = [] if args.all else (args.mutants or FOCUS)

    sys.path.insert(0, str(ROOT))
    from skymesh.local.dynamodb import DynamoDBLocal, install
    from skymesh.local.proc import free_port

    mutmut = Path(sys.executable).with_name("mutmut")
    with tempfile.TemporaryDirectory(prefix="skymesh-mutate-") as tmp:
        db = DynamoDBLocal(free_port(), in_memory=True, directory=install(),
                           log_path=Path(tmp) / "dynamodb-local.log")
        db.start()
        try:
            env = {**os.environ, "SKYMESH_TEST_DYNAMODB_ENDPOINT": db.endpoint_url}
            run = subprocess.Popen([str(mutmut), "run", "--max-children", str(args.max_children), *names],
                                   cwd=ROOT, env=env)
            try:
                code = run.wait()
            finally:  # stopped (timeout, ^C): stop mutmut too; results so far stay in mutants/
                if run.poll() is None:
                    run.terminate()
                    run.wait(timeout=30)
            subprocess.run([str(mutmut), "results"], cwd=ROOT, env=env, check=False)  # survivors
            return code
        finally:
            db.stop()


if __name__ == "__main__":
    sys.exit(main())
