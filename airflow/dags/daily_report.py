"""DAG ``daily_report``: stockflow's report for one UTC day (contract section 4).

The run whose data interval is [D 00:00, D+1 00:00) UTC reports day D, so
``airflow dags test daily_report D+1`` reports D. It reads the stream-
maintained ``sales_daily`` (totals, top 10 sellers) and ``products`` +
``inventory`` (low stock), upserts ``reports`` for D and writes
``$STOCKFLOW_REPORT_DIR/D/`` (summary.json, top_sellers.csv, low_stock.csv,
report.html); then, when configured, uploads those files to S3.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone

from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task

# The DAG processor puts the dags folder on sys.path; be explicit for other loaders.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)

import stockflow_report  # noqa: E402

# Task retries (scripts/airflow.sh report sets 0 to fail fast).
RETRIES = int(os.environ.get("STOCKFLOW_REPORT_RETRIES", "2"))


@dag(
    dag_id="daily_report",
    description="Daily stockflow report: reports row + files for the previous UTC day",
    schedule=CronTriggerTimetable("@daily", timezone="UTC", interval=timedelta(days=1)),
    # Early on purpose: a run whose logical date precedes start_date runs no
    # task, and `airflow dags test daily_report D+1` must work for old days.
    start_date=datetime(2000, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=4,
    default_args={"retries": RETRIES, "retry_delay": timedelta(minutes=1)},
    tags=["stockflow", "report"],
    doc_md=__doc__,
)
def daily_report():
    @task
    def build_report() -> dict:
        day = stockflow_report.report_day_from_context(get_current_context())
        return stockflow_report.run_report(day)

    @task
    def export_s3(result: dict) -> list[str]:
        return stockflow_report.export_to_s3(result["report_date"], result["dir"])

    export_s3(build_report())


daily_report()
