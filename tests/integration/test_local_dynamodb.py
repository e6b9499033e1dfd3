"""DynamoDB Local wrapper: starts on loopback, answers real requests, persists with dbPath."""

from __future__ import annotations

import subprocess

import boto3
import pytest

from skymesh.local.dynamodb import DynamoDBLocal, install
from skymesh.local.proc import LocalStackError, free_port


def _client(endpoint: str):
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local")


def _listen_addresses(port: int) -> set[str]:
    """Local addresses of LISTEN sockets on ``port`` (from ``ss``)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    addrs = {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}
    return {a.removeprefix("[::ffff:").removesuffix("]") for a in addrs}


def test_session_fixture_answers(dynamodb_local):
    assert "TableNames" in _client(dynamodb_local).list_tables()


@pytest.mark.slow
def test_persists_across_restart_with_db_path(tmp_path):
    directory = install()
    port = free_port()
    db = DynamoDBLocal(port, db_path=tmp_path / "data", directory=directory)
    db.start()
    try:
        assert not db.binds_all_interfaces
        assert _listen_addresses(port) == {"127.0.0.1"}
        c = _client(db.endpoint_url)
        c.create_table(TableName="persist", BillingMode="PAY_PER_REQUEST",
                       KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                       AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        c.put_item(TableName="persist", Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    finally:
        db.stop()
    assert not db.alive()

    again = DynamoDBLocal(port, db_path=tmp_path / "data", directory=directory)
    again.start()
    try:
        # other credentials and region still see the same (shared) database
        c = boto3.client("dynamodb", endpoint_url=again.endpoint_url, region_name="eu-west-1",
                         aws_access_key_id="other", aws_secret_access_key="other")
        item = c.get_item(TableName="persist", Key={"pk": {"S": "a"}})["Item"]
        assert item["v"] == {"N": "1"}
    finally:
        again.stop()


def test_port_in_use_is_a_clear_error(dynamodb_local):
    port = int(dynamodb_local.rsplit(":", 1)[1])
    with pytest.raises(LocalStackError, match=f"port {port} .* already in use"):
        DynamoDBLocal(port, in_memory=True).start()


@pytest.mark.slow
def test_data_is_readable_by_its_owner_only(tmp_path):
    """The database file (every table) is 0600 in a 0700 directory, also one an older run left open."""
    import os
    import stat

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    old = data / "left-by-an-older-run.db"
    old.write_bytes(b"")
    os.chmod(old, 0o644)
    db = DynamoDBLocal(free_port(), db_path=data, directory=install())
    db.start()
    try:
        c = _client(db.endpoint_url)
        c.create_table(TableName="private", BillingMode="PAY_PER_REQUEST",
                       KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                       AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        c.put_item(TableName="private", Item={"pk": {"S": "a"}})
    finally:
        db.stop()
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" and p != old for p in files), files  # DynamoDB Local's own file
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for p in data.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, (p, oct(p.stat().st_mode))
