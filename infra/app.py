"""The CDK app: ``cdk deploy`` (from infra/) or ``make synth`` (offline) run this file.

Context (``cdk deploy -c name=value``):

- ``stack_name`` (default ``skymesh``): the CloudFormation stack, also the prefix of
  function, IoT policy, thing-group and rule names; one stack per name per region.
- ``retain_data`` (default ``true``): ``false`` lets ``cdk destroy`` delete the table and key.

Synthesis needs no AWS credentials and no network: the stack is environment
agnostic (account and region are resolved by CloudFormation at deploy time).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Run as a script by the CDK CLI: make the repository importable (infra, chalicelib).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Chalice's packager asks botocore for a region, and may probe for credentials:
# neither is needed to write a template, so never reach for the instance metadata service.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("AWS_DEFAULT_REGION", os.environ.get("CDK_DEFAULT_REGION", "us-east-1"))

import aws_cdk as cdk  # noqa: E402

from infra.stack import SkymeshStack  # noqa: E402


def build(outdir: str | None = None, context: dict[str, object] | None = None) -> cdk.App:
    """The app with the stack, not yet synthesized (tests call this with a temporary ``outdir``)."""
    outdir = outdir or os.environ.get("CDK_OUTDIR")
    # Absolute: the stack changes directory while Chalice packages the app.
    app = cdk.App(outdir=os.path.abspath(outdir) if outdir else None, context=context)
    name = str(app.node.try_get_context("stack_name") or "skymesh")
    retain = str(app.node.try_get_context("retain_data") or "true").lower() != "false"
    SkymeshStack(app, name, stack_name=name, retain_data=retain,
                 description="skymesh: serverless WireGuard mesh control plane")
    return app


if __name__ == "__main__":
    build().synth()
