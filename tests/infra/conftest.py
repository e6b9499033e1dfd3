"""The CDK app synthesized once per session, offline, shared by every infra test.

Offline means: no AWS credentials (dummy ones, no metadata service), a fixed
region, and pip (which Chalice runs to bundle the Lambda dependencies) limited to
the wheels ``scripts/bootstrap.sh`` fetched into ``.venv/lambda-wheels``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from tests.aws.conftest import make_csr, moto_aws, offline_aws  # noqa: F401  (fixtures reused here)

REPO = Path(__file__).resolve().parents[2]
WHEELS = REPO / ".venv" / "lambda-wheels"
STACK = "skymesh-test"


def offline_environment(home: Path) -> dict[str, str]:
    """What synthesis and ``chalice package`` run with: nothing reaches AWS or a package index."""
    env = {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "offline",
        "AWS_SECRET_ACCESS_KEY": "offline",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(WHEELS),
        "PIP_CONFIG_FILE": os.devnull,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "18,20",
    }
    return env


@dataclass(frozen=True)
class Synthesized:
    stack_name: str
    template: dict[str, Any]
    template_path: Path
    assertions: Any  # aws_cdk.assertions.Template

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.template["Resources"].items() if r["Type"] == kind}

    def logical_id(self, kind: str, prefix: str) -> str:
        found = [k for k in self.resources(kind) if k.startswith(prefix)]
        assert len(found) == 1, (kind, prefix, found)
        return found[0]


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    """The stack as ``make synth`` writes it (stack name ``skymesh-test``)."""
    if not WHEELS.is_dir():
        pytest.fail(f"{WHEELS} is missing: run scripts/bootstrap.sh (it fetches the Lambda "
                    "package's wheels so synthesis works offline)", pytrace=False)
    outdir = tmp_path_factory.mktemp("cdk.out")
    monkeypatch = pytest.MonkeyPatch()
    for name, value in offline_environment(outdir).items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.syspath_prepend(str(REPO))
    try:
        from aws_cdk import Stack
        from aws_cdk.assertions import Template

        from infra.app import build

        app = build(outdir=str(outdir), context={"stack_name": STACK})
        stack = cast(Stack, app.node.find_child(STACK))
        assertions = Template.from_stack(stack)  # synthesizes
        path = outdir / f"{STACK}.template.json"
        app.synth()
        yield Synthesized(STACK, json.loads(path.read_text()), path, assertions)
    finally:
        monkeypatch.undo()


def cli(name: str) -> str:
    """A console script of this virtualenv (cfn-lint, chalice)."""
    return str(Path(sys.executable).parent / name)
