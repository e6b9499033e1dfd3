"""cfn-lint finds nothing in the synthesized template; ``chalice package --stage prod`` works
offline and the package carries what the functions import."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

from .conftest import REPO, Synthesized, cli, offline_environment


def test_cfn_lint_finds_nothing(synthesized: Synthesized) -> None:
    """cfn-lint exits 0 only without errors, warnings or informational findings."""
    result = subprocess.run([cli("cfn-lint"), "--format", "parseable", str(synthesized.template_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_chalice_package_for_prod_works_offline(tmp_path: Path) -> None:
    out = tmp_path / "package"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SKYMESH_"))}
    env.update(offline_environment(tmp_path))
    result = subprocess.run([cli("chalice"), "package", "--stage", "prod", str(out)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr

    sam = json.loads((out / "sam.json").read_text())
    functions = {k: r for k, r in sam["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    assert sorted(functions) == ["APIHandler", "Failover", "FailoverReport", "HostReport", "MarkOffline",
                                 "SweepBroadcasts", "SweepOrphans"]
    with zipfile.ZipFile(out / "deployment.zip") as package:
        top = {name.split("/")[0] for name in package.namelist()}
    # Without these the functions fail at import on Lambda.
    for module in ("app.py", "chalicelib", "chalice", "pynamodb", "pydantic", "pydantic_core",
                   "cryptography", "boto3", "botocore"):
        assert module in top, module
