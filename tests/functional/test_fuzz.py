"""A bounded schemathesis run against the API over HTTP (bench/fuzz.py; `make fuzz` runs 5,000+ cases)."""

from __future__ import annotations

from bench import fuzz


def test_fuzzing_from_the_openapi_document_finds_no_5xx_and_no_response_off_the_document(
        ddb_endpoint, tmp_path, monkeypatch):
    for name in ("SKYMESH_TABLE", "SKYMESH_DYNAMODB_ENDPOINT", "SKYMESH_PUBLISHER", "SKYMESH_IDENTITY",
                 "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "")  # fuzz.stage_env sets them; monkeypatch restores them after
    result = fuzz.fuzz(ddb_endpoint, tmp_path, examples=8, seed=7)
    # 7: the clients routes; 1 + 3: the latency and relays routes (issue 10); 10: gateway groups (issue 11);
    # 1: topology (issue 12)
    assert result["operations"] == 21 + 7 + 1 + 3 + 10 + 1 and result["cases"] >= 400, result
    assert (result["5xx"], result["schema_violations"], result["accepted_invalid"], result["errors"]) == (
        0, 0, 0, 0), result["output"][-6000:]
    assert result["server_tracebacks"] == 0, (tmp_path / "api.log").read_text()[-6000:]
