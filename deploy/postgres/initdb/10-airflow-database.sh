#!/bin/sh
# Run once by the postgres image's entrypoint, on the first start with an
# empty data volume (files in /docker-entrypoint-initdb.d). The `stockflow`
# database itself comes from POSTGRES_DB; this adds Airflow's metadata
# database, owned by its own role so that Airflow cannot touch stockflow's
# tables through its metadata connection.
#
# Kept free of `set -u`/`exit`: the entrypoint sources a non-executable
# script into its own shell.
psql -v ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" \
    --dbname "${POSTGRES_DB:-postgres}" \
    --set airflow_password="${AIRFLOW_DB_PASSWORD:-airflow}" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
SQL
