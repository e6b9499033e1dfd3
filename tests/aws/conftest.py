"""Offline AWS fixtures: fake credentials and region, moto, real CSRs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import mock_aws

REGION = "us-east-1"
POLICY = "skymesh-host"


@pytest.fixture(autouse=True)
def offline_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Fake credentials and region; no profile or config file of the machine is read."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def make_csr() -> Callable[..., str]:
    """A function returning a fresh PEM CSR signed by a new EC P-256 key."""

    def make(common_name: str = "host_test") -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .sign(key, hashes.SHA256())
        )
        return csr.public_bytes(serialization.Encoding.PEM).decode()

    return make


@pytest.fixture
def moto_aws() -> Iterator[None]:
    with mock_aws():
        yield


def patch_moto_certificate_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto 5.2's DeleteCertificate compares every policy target with the certificate and
    fails (AttributeError) once a thing group has a policy attached; AWS has no such
    limit. A thing group is no certificate: give it an empty ``certificate_id``."""
    from moto.iot.models import FakeThingGroup

    monkeypatch.setattr(FakeThingGroup, "certificate_id", None, raising=False)


@pytest.fixture
def iot(moto_aws: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A moto-backed ``iot`` client with the host policy created."""
    patch_moto_certificate_delete(monkeypatch)
    client = boto3.client("iot", region_name=REGION)
    client.create_policy(policyName=POLICY, policyDocument='{"Version":"2012-10-17","Statement":[]}')
    return client


def no_sleep(_seconds: float) -> None:
    """Stand-in for ``time.sleep`` so retry tests take no time."""
