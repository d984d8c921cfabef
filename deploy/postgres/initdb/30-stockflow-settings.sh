#!/bin/sh
# Run once by the postgres image's entrypoint, on the first start with an
# empty data volume: makes postgresql.conf include
# /etc/postgresql/stockflow.conf (deploy/postgres/stockflow.conf, bind-mounted
# read-only by docker-compose.yml) at its end, so that those values win over
# initdb's. The entrypoint starts the real server after this script, so the
# settings are live from the first start; later edits of stockflow.conf need
# `docker compose restart postgres` (a file bind mount keeps the old file
# until the container starts again).
#
# A volume made before this script existed lacks the line: add it once with
#   docker compose exec -u postgres postgres sh -c \
#     "echo \"include_if_exists = '/etc/postgresql/stockflow.conf'\" >> \"\$PGDATA/postgresql.conf\""
#   docker compose restart postgres
# (or start afresh with `docker compose down -v`, which drops the data).
#
# Kept free of `set -u`/`exit`: the entrypoint sources a non-executable
# script into its own shell.
line="include_if_exists = '/etc/postgresql/stockflow.conf'"
grep -qxF "$line" "$PGDATA/postgresql.conf" ||
    printf '\n# stockflow: deploy/postgres/stockflow.conf (docker-compose.yml)\n%s\n' "$line" >>"$PGDATA/postgresql.conf"
