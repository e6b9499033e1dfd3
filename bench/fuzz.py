"""API fuzzing (issue 7): schemathesis, driven by /v1/openapi.json, against the real API.

The app is served over HTTP by the local API server (``python -m skymesh.local.api``)
on an in-memory DynamoDB Local, with the in-memory publisher and a throwaway CA. A
network, an enrollment key and a host are made first, so that schemathesis calls with
an admin key, an enrollment token and a host token, and uses the real ids for about
half of the path parameters (the rest are random ids of the documented shape, or
anything at all in negative mode).

Checks: no 5xx (not_a_server_error); every response is one the document lists, in its
schema and content type (status_code_conformance, response_schema_conformance,
content_type_conformance); data the document forbids is refused with a 4xx
(negative_data_rejection), which is what holds the document's rules and the server's
checks together.

    python bench/fuzz.py [--cases 5000] [--examples 345] [--seed 1]

Prints one JSON line: cases, 5xx, schema violations (responses off the document) and the
failures per check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, client, dynamodb_local, host_body, summary  # noqa: E402

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "negative_data_rejection")
# schemathesis failure types: responses off the document (status, content type, body).
SCHEMA_VIOLATIONS = ("UndefinedStatusCode", "MissingContentType", "UndefinedContentType",
                     "MalformedMediaType", "JsonSchemaError", "MalformedJson", "ContentDeserializationError")


def stage_env(ddb_endpoint: str) -> dict[str, str]:
    """The environment of a stage on its own fresh table (also set here: this process makes
    the table and the admin key)."""
    from chalicelib.adapters.dynamodb import ensure_table

    env = {"SKYMESH_TABLE": f"skymesh-fuzz-{uuid.uuid4().hex[:12]}",
           "SKYMESH_DYNAMODB_ENDPOINT": ddb_endpoint, "SKYMESH_PUBLISHER": "memory",
           "SKYMESH_IDENTITY": "memory", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
    os.environ.update(env)
    ensure_table(env["SKYMESH_TABLE"], ddb_endpoint, "us-east-1")
    return env


@contextlib.contextmanager
def api_server(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """The app over HTTP on a free loopback port; yields its base URL."""
    from skymesh.local.proc import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "skymesh.local.api", "--port", str(port)],
                                cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the API server exited with {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(url + "/v1/health", timeout=5):  # noqa: S310 - loopback
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the API server did not answer within 60 s; see {log_path}") from None
                time.sleep(0.2)  # not listening yet
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def credentials(api: str, env: dict[str, str]) -> dict[str, str]:
    """An admin key, and a network, enrollment key and host made with it, with their tokens."""
    from chalicelib.config import StageConfig
    from chalicelib.wiring import build_service

    admin = build_service(StageConfig.from_env(env)).ensure_admin_key()
    admin_api = client(api, admin)
    net = admin_api.create_network("fuzz", "100.64.0.0/16")
    key = admin_api.create_enrollment_key([net["id"]], unlimited=True)
    reg = admin_api.register_host(key["token"], host_body("fuzz-host", "198.18.0.1:51820")[0])
    return {"admin": admin, "enrollment": key["token"], "host": reg["host_token"],
            "network_id": net["id"], "key_id": key["id"], "host_id": reg["host"]["id"]}


def config(creds: dict[str, str]) -> str:
    """schemathesis.toml: a token per security scheme, real ids for half of the path ids."""
    ids = {"network_id": creds["network_id"], "key_id": creds["key_id"], "host_id": creds["host_id"]}
    lines = [f'[auth.openapi.{scheme}]\nbearer = "{creds[kind]}"\n'
             for scheme, kind in (("adminKey", "admin"), ("enrollmentToken", "enrollment"),
                                  ("hostToken", "host"))]
    for name, value in ids.items():
        lines.append(f'[dictionaries.{name}]\nvalues = ["{value}"]\n')
    # TRACE: Chalice's local server answers 501 to methods it does not know; our error shape
    # for wrong methods (405) is the local API's and the API Gateway stack's part of issue 7.
    lines.append('[phases.coverage]\n'
                 'unexpected-methods = ["GET", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]\n')
    lines.append("[parameters]")
    lines += [f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}' for name in ids]
    return "\n".join(lines) + "\n"


def run(api: str, creds: dict[str, str], *, examples: int, seed: int, workdir: Path) -> dict[str, Any]:
    """One schemathesis run (``examples`` per operation in the fuzzing phase, plus the coverage
    phase's boundary and negative cases); returns the counts of its JSON report."""
    cfg = workdir / "schemathesis.toml"
    cfg.write_text(config(creds))
    report = workdir / "report.json"
    # A generous request timeout: a loaded machine is not a slow API. One worker: with two,
    # hypothesis' lambda-source parsing (ast, in threads) fails on Python 3.11.
    cmd = [str(Path(sys.executable).with_name("st")), "--config-file", str(cfg), "run",
           f"{api}/v1/openapi.json", "--checks", ",".join(CHECKS), "--max-examples", str(examples),
           "--seed", str(seed), "--workers", "1", "--phases", "examples,coverage,fuzzing",
           "--suppress-health-check", "all", "--no-shrink", "--request-timeout", "120",
           "--report", "json", "--report-json-path", str(report), "--output-truncate", "true"]
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=3600)
    if not report.exists():
        raise SystemExit(f"schemathesis wrote no report (exit {out.returncode}):\n{out.stdout[-3000:]}"
                         f"\n{out.stderr[-3000:]}")
    data = json.loads(report.read_text())
    failures: dict[str, int] = {}
    for f in data["failures"]:
        failures[f["type"]] = failures.get(f["type"], 0) + f["count"]
    return {
        "cases": data["test_cases"]["generated"],
        "cases_with_failures": data["test_cases"]["with_failures"],
        "5xx": failures.get("ServerError", 0),
        "schema_violations": sum(failures.get(t, 0) for t in SCHEMA_VIOLATIONS),
        "accepted_invalid": failures.get("AcceptedNegativeData", 0),
        "failures": failures,
        "errors": sum(e["count"] for e in data["errors"]),
        "operations": data["operations"]["tested"],
        "exit": out.returncode,
        "output": out.stdout,
    }


def fuzz(ddb_endpoint: str, workdir: Path, *, examples: int, seed: int) -> dict[str, Any]:
    """Serve the API on a fresh table, make the credentials, run schemathesis; the counts, and
    the server's tracebacks (there should be none: a bad request is not a bug)."""
    env = stage_env(ddb_endpoint)
    log = workdir / "api.log"
    with api_server(env, log) as api:
        creds = credentials(api, env)
        t0 = time.perf_counter()
        result = run(api, creds, examples=examples, seed=seed, workdir=workdir)
        result["seconds"] = round(time.perf_counter() - t0, 1)
    result["server_tracebacks"] = log.read_text().count("Traceback")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000, help="at least this many cases in all")
    ap.add_argument("--examples", type=int, default=345, help="fuzzing-phase cases per operation and run")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    # -n bounds only the fuzzing phase, and operations with few distinct inputs stop sooner:
    # runs with the next seeds are added until there are --cases cases in all.
    total: dict[str, Any] = {"cases": 0, "5xx": 0, "schema_violations": 0, "accepted_invalid": 0,
                             "errors": 0, "seconds": 0.0, "server_tracebacks": 0}
    failures: dict[str, int] = {}
    seeds = []
    with dynamodb_local() as ddb:
        while total["cases"] < args.cases:
            seeds.append(args.seed + len(seeds))
            with tempfile.TemporaryDirectory() as tmp:
                result = fuzz(ddb, Path(tmp), examples=args.examples, seed=seeds[-1])
            for k in total:
                total[k] += result[k]
            for k, n in result["failures"].items():
                failures[k] = failures.get(k, 0) + n
            if result["5xx"] or result["schema_violations"] or result["errors"]:
                print(result["output"][-20000:], file=sys.stderr)
    summary("fuzz", cases=total["cases"], server_errors_5xx=total["5xx"],
            schema_violations=total["schema_violations"], accepted_invalid=total["accepted_invalid"],
            failures=failures, errors=total["errors"], operations=result["operations"],
            examples_per_operation=args.examples, seeds=seeds, seconds=round(total["seconds"], 1),
            server_tracebacks=total["server_tracebacks"])
    sys.exit(1 if total["5xx"] or total["schema_violations"] or total["errors"] else 0)


if __name__ == "__main__":
    main()
