"""DAG ``reissue_stale_reports``: re-issue reports that late data made stale.

The stream processor sets ``sales_daily.updated_at = now()`` whenever it
changes a row. A report stores in ``reports.sales_as_of`` the newest
``updated_at`` it read for its day; every hour this DAG finds the existing
reports whose day has newer sales rows (or whose stored totals no longer
match ``sales_daily``) and regenerates each with the same code as
``daily_report``: the row gets revision + 1 and a new generated_at, the files
are replaced and re-uploaded. Days without a report are left alone.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone

from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)

import stockflow_report  # noqa: E402

# Task retries (scripts/airflow.sh report sets 0 to fail fast).
RETRIES = int(os.environ.get("STOCKFLOW_REPORT_RETRIES", "2"))

# Per run; any further stale days are picked up by the next run.
MAX_DAYS_PER_RUN = 200


@dag(
    dag_id="reissue_stale_reports",
    description="Regenerate stockflow reports whose day received late sales data",
    schedule=CronTriggerTimetable("@hourly", timezone="UTC"),
    start_date=datetime(2000, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": RETRIES, "retry_delay": timedelta(minutes=1)},
    tags=["stockflow", "report"],
    doc_md=__doc__,
)
def reissue_stale_reports():
    @task
    def find_stale_reports() -> list[str]:
        return stockflow_report.run_find_stale(limit=MAX_DAYS_PER_RUN)

    @task(map_index_template="{{ report_date }}")
    def regenerate(day: str) -> dict:
        get_current_context()["report_date"] = day  # names the mapped instance
        return stockflow_report.run_report(day)

    @task(map_index_template="{{ report_date }}")
    def export_s3(result: dict) -> list[str]:
        get_current_context()["report_date"] = result["report_date"]
        return stockflow_report.export_to_s3(result["report_date"], result["dir"])

    export_s3.expand(result=regenerate.expand(day=find_stale_reports()))


reissue_stale_reports()
