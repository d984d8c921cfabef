"""stockflow's daily report, shared by the DAGs daily_report and reissue_stale_reports.

A plain package (no DAG in it): .airflowignore keeps the DAG processor out.
"""

from stockflow_report.core import (  # noqa: F401
    POSTGRES_CONN_ID,
    REPORT_FILES,
    Report,
    find_stale_days,
    generate_report,
    money,
    report_base_dir,
    report_day_from_context,
    run_find_stale,
    run_report,
)
from stockflow_report.s3_export import export_to_s3  # noqa: F401
