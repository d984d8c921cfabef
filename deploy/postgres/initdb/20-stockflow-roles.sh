#!/bin/sh
# Run once by the postgres image's entrypoint, on the first start with an
# empty data volume. A login per stockflow service, each in its group role
# of least privilege (the groups' grants come from `stockflow migrate
# --roles`, which stockflow-init runs; see sinks/src/postgres/roles.sql):
#   stockflow_run     the processor         (stockflow_processor)
#   stockflow_report  the Airflow DAG       (stockflow_reporting)
#   stockflow_view    the live view         (stockflow_readonly)
# Passwords from STOCKFLOW_{RUN,REPORT,VIEW}_DB_PASSWORD (docker-compose.yml).
#
# Kept free of `set -u`/`exit`: the entrypoint sources a non-executable
# script into its own shell.
psql -v ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" \
    --dbname "${POSTGRES_DB:-postgres}" \
    --set run_password="${STOCKFLOW_RUN_DB_PASSWORD:-stockflow-run}" \
    --set report_password="${STOCKFLOW_REPORT_DB_PASSWORD:-stockflow-report}" \
    --set view_password="${STOCKFLOW_VIEW_DB_PASSWORD:-stockflow-view}" <<'SQL'
CREATE ROLE stockflow_processor NOLOGIN;
CREATE ROLE stockflow_reporting NOLOGIN;
CREATE ROLE stockflow_readonly NOLOGIN;
CREATE ROLE stockflow_run LOGIN PASSWORD :'run_password' IN ROLE stockflow_processor;
CREATE ROLE stockflow_report LOGIN PASSWORD :'report_password' IN ROLE stockflow_reporting;
CREATE ROLE stockflow_view LOGIN PASSWORD :'view_password' IN ROLE stockflow_readonly;
SQL
