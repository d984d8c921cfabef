"""Both DAGs import cleanly and are scheduled as the contract says."""

from __future__ import annotations

from datetime import timedelta

from sf_testdata import DAGS_DIR, DAY, LOGICAL_DATE


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"daily_report", "reissue_stale_reports"} <= set(dagbag.dag_ids)


def test_shared_package_holds_no_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR / "stockflow_report"), safe_mode=False)
    assert bag.import_errors == {}
    assert bag.dag_ids == []


def test_daily_report_schedule(dagbag):
    from airflow.sdk import CronTriggerTimetable
    from airflow.serialization.encoders import coerce_to_core_timetable

    dag = dagbag.get_dag("daily_report")
    assert dag.catchup is False
    assert isinstance(dag.timetable, CronTriggerTimetable)
    # The run with logical date D+1 covers [D 00:00, D+1 00:00) UTC.
    interval = coerce_to_core_timetable(dag.timetable).infer_manual_data_interval(run_after=LOGICAL_DATE)
    assert interval.start.date() == DAY
    assert interval.end - interval.start == timedelta(days=1)
    assert interval.start.utcoffset() == timedelta(0)
    assert {t.task_id for t in dag.tasks} == {"build_report", "export_s3"}


def test_reissue_schedule(dagbag):
    dag = dagbag.get_dag("reissue_stale_reports")
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert {t.task_id for t in dag.tasks} == {"find_stale_reports", "regenerate", "export_s3"}
