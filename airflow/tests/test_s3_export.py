"""Optional S3 export, against moto's server mode on 127.0.0.1."""

from __future__ import annotations

import json

import boto3
import pytest
from moto.server import ThreadedMotoServer

from sf_testdata import (
    DAY,
    LOGICAL_DATE,
    insert_orders,
    late_orders,
    rebuild_sales_daily,
    report_row,
    seed,
    snapshot_files,
)

BUCKET = "stockflow-reports-test"


@pytest.fixture(scope="module")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(moto_endpoint):
    client = boto3.client(
        "s3", endpoint_url=moto_endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    yield client
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def s3_connection(moto_endpoint, monkeypatch):
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_STOCKFLOW_S3", json.dumps(conn))


def _objects(s3) -> dict[str, bytes]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in sorted(keys)}


def test_upload_when_configured(db, report_dir, run_dag, s3, s3_connection, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_STOCKFLOW_S3_BUCKET", BUCKET)
    seed(db)
    assert run_dag("daily_report", LOGICAL_DATE).state == "success"

    local = snapshot_files(report_dir / DAY.isoformat())
    remote = _objects(s3)
    assert remote == {f"{DAY.isoformat()}/{name}": data for name, data in local.items()}
    head = s3.head_object(Bucket=BUCKET, Key=f"{DAY.isoformat()}/summary.json")
    assert head["ContentType"] == "application/json"
    assert s3.head_object(Bucket=BUCKET, Key=f"{DAY.isoformat()}/report.html")["ContentType"].startswith("text/html")

    # A late-data reissue uploads the new revision over the old objects.
    with db.cursor() as cur:
        insert_orders(cur, late_orders())
        rebuild_sales_daily(cur)
    assert run_dag("reissue_stale_reports").state == "success"
    assert report_row(db)["revision"] == 2
    remote = _objects(s3)
    assert json.loads(remote[f"{DAY.isoformat()}/summary.json"])["revision"] == 2
    local = snapshot_files(report_dir / DAY.isoformat())
    assert remote == {f"{DAY.isoformat()}/{name}": data for name, data in local.items()}


def test_skipped_without_bucket_variable(db, report_dir, run_dag, s3, s3_connection, monkeypatch):
    monkeypatch.delenv("AIRFLOW_VAR_STOCKFLOW_S3_BUCKET", raising=False)
    seed(db)
    assert run_dag("daily_report", LOGICAL_DATE).state == "success"
    assert (report_dir / DAY.isoformat() / "summary.json").exists()
    assert _objects(s3) == {}


def test_skipped_without_connection(db, report_dir, run_dag, s3, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_STOCKFLOW_S3", raising=False)
    monkeypatch.setenv("AIRFLOW_VAR_STOCKFLOW_S3_BUCKET", BUCKET)
    seed(db)
    assert run_dag("daily_report", LOGICAL_DATE).state == "success"
    assert (report_dir / DAY.isoformat() / "summary.json").exists()
    assert _objects(s3) == {}
