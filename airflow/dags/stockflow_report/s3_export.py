"""Optional upload of a day's report files to S3 (Amazon provider's S3Hook).

Active only when the Airflow connection ``stockflow_s3`` exists *and* the
Variable ``stockflow_s3_bucket`` is set; otherwise it logs and skips. Files go
to ``s3://<bucket>/<D>/<file>``. For S3-compatible stores (MinIO, moto) put
``endpoint_url`` in the connection's extra.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stockflow_report.core import REPORT_FILES, parse_day, report_base_dir

log = logging.getLogger(__name__)

S3_CONN_ID = "stockflow_s3"
S3_BUCKET_VARIABLE = "stockflow_s3_bucket"
CONTENT_TYPES = {
    ".json": "application/json",
    ".csv": "text/csv; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}


def s3_target() -> str | None:
    """The bucket to upload to, or None when S3 export is not configured."""
    from airflow.sdk import BaseHook, Variable
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(S3_CONN_ID)
    except AirflowNotFoundException:
        log.info("S3 export skipped: no Airflow connection %r", S3_CONN_ID)
        return None
    bucket = (Variable.get(S3_BUCKET_VARIABLE, default=None) or "").strip()
    if not bucket:
        log.info("S3 export skipped: Variable %r is not set", S3_BUCKET_VARIABLE)
        return None
    return bucket


def export_to_s3(day, report_dir: Path | str | None = None) -> list[str]:
    """Upload D's files under key prefix ``D/``; returns the s3:// URIs written."""
    day = parse_day(day)
    bucket = s3_target()
    if bucket is None:
        return []
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    src = Path(report_dir) if report_dir is not None else report_base_dir() / day.isoformat()
    uploaded = []
    for name in REPORT_FILES:  # summary.json last
        key = f"{day.isoformat()}/{name}"
        hook = S3Hook(aws_conn_id=S3_CONN_ID, extra_args={"ContentType": CONTENT_TYPES[Path(name).suffix]})
        hook.load_file(filename=src / name, key=key, bucket_name=bucket, replace=True)
        uploaded.append(f"s3://{bucket}/{key}")
    log.info("uploaded %d files to s3://%s/%s/", len(uploaded), bucket, day.isoformat())
    return uploaded
