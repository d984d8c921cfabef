#!/usr/bin/env bash
# stockflow's Airflow side (airflow/): a project-local virtualenv and the
# commands that use it.
#
#   scripts/airflow.sh install        create/update .venv/airflow (only when
#                                     airflow/requirements*.txt or
#                                     airflow/constraints.txt changed)
#   scripts/airflow.sh test [ARGS]    pytest airflow/tests [ARGS] (temporary
#                                     AIRFLOW_HOME + SQLite metadata DB; the
#                                     tests make and drop their own database
#                                     on the PostgreSQL at 127.0.0.1:5432)
#   scripts/airflow.sh report DAY     run the daily_report DAG for DAY
#                                     (YYYY-MM-DD): `airflow dags test
#                                     daily_report DAY+1` against $DATABASE_URL
#   scripts/airflow.sh bench          time the DAG on 100 000 orders / 1 000
#                                     products (temporary database)
#   scripts/airflow.sh airflow ARGS   any airflow CLI command, same environment
#                                     as `report`
#
# Environment: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/stockflow),
# AIRFLOW_HOME (default .local/airflow in the repo, for report/airflow),
# STOCKFLOW_REPORT_DIR (default $AIRFLOW_HOME/reports), PYTHON (default python3),
# STOCKFLOW_TEST_PG_URL (tests: the server's maintenance DB,
# default postgresql://postgres@127.0.0.1:5432/postgres).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv/airflow"
REQ="$REPO/airflow/requirements.txt"
REQ_TEST="$REPO/airflow/requirements-test.txt"
CONSTRAINTS="$REPO/airflow/constraints.txt"
STAMP="$VENV/.stockflow-install.sha256"
PYTHON="${PYTHON:-python3}"

log() { echo "airflow.sh: $*" >&2; }
die() { echo "airflow.sh: error: $*" >&2; exit 1; }

ensure_venv_module() {
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null && return 0
    # Debian ships venv's ensurepip separately (python3-venv).
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing python3-venv (apt)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null && return 0
    fi
    die "$PYTHON cannot create virtualenvs; install python3-venv (sudo apt-get install python3-venv)"
}

install_hash() {
    {
        cat "$REQ" "$REQ_TEST" "$CONSTRAINTS"
        "$VENV/bin/python" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

do_install() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
    mkdir -p "$(dirname "$VENV")"
    # One installer at a time (two terminals, or test + report at once).
    if command -v flock >/dev/null; then
        exec 9>"$(dirname "$VENV")/.airflow-install.lock"
        flock 9
    fi
    if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        log "removing broken virtualenv $VENV"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        ensure_venv_module
        log "creating virtualenv $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local want
    want="$(install_hash)"
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
        return 0
    fi
    log "installing airflow/requirements-test.txt with airflow/constraints.txt (this takes a minute)"
    local t0=$SECONDS
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$REQ_TEST" -c "$CONSTRAINTS"
    echo "$want" >"$STAMP"
    log "installed in $((SECONDS - t0)) s"
}

# Environment for running Airflow against the stockflow database.
airflow_env() {
    export AIRFLOW_HOME="${AIRFLOW_HOME:-$REPO/.local/airflow}"
    mkdir -p "$AIRFLOW_HOME"
    AIRFLOW_HOME="$(cd "$AIRFLOW_HOME" && pwd)"
    export AIRFLOW__CORE__DAGS_FOLDER="$REPO/airflow/dags"
    export AIRFLOW__CORE__LOAD_EXAMPLES=False
    local url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/stockflow}"
    # Airflow's URI form: scheme postgres, the rest as libpq has it.
    export AIRFLOW_CONN_STOCKFLOW_POSTGRES="postgres://${url#*://}"
    export AWS_EC2_METADATA_DISABLED="${AWS_EC2_METADATA_DISABLED:-true}"
    # The metadata DB (SQLite under AIRFLOW_HOME unless configured otherwise).
    local version marker="$AIRFLOW_HOME/.stockflow-db-migrated"
    version="$("$VENV/bin/python" -c 'import airflow; print(airflow.__version__)')"
    if [ ! -f "$marker" ] || [ "$(cat "$marker")" != "$version" ]; then
        log "airflow db migrate ($AIRFLOW_HOME)"
        "$VENV/bin/airflow" db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 ||
            { tail -20 "$AIRFLOW_HOME/db-migrate.log" >&2; die "airflow db migrate failed"; }
        echo "$version" >"$marker"
    fi
}

pg_reachable() {
    "$VENV/bin/python" - "$1" <<'PY' 2>/dev/null
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=5).close()
PY
}

run_pytest() {
    local admin="${STOCKFLOW_TEST_PG_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
    pg_reachable "$admin" || die "PostgreSQL not reachable at $admin (start it: scripts/services.sh up)"
    local home rc=0
    home="$(mktemp -d "${TMPDIR:-/tmp}/stockflow-airflow-test.XXXXXX")"
    STOCKFLOW_AIRFLOW_TEST_HOME="$home" "$VENV/bin/python" -m pytest -p no:cacheprovider "$@" || rc=$?
    rm -rf "$home"
    return "$rc"
}

do_report() {
    local day="${1:-}"
    [[ "$day" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] || die "usage: $0 report YYYY-MM-DD"
    local next
    next="$("$VENV/bin/python" -c 'import sys, datetime as d; print(d.date.fromisoformat(sys.argv[1]) + d.timedelta(days=1))' "$day" 2>/dev/null)" ||
        die "not a date: $day"
    airflow_env
    local dir
    dir="$("$VENV/bin/python" -c 'import sys; sys.path.insert(0, sys.argv[1]); from stockflow_report import report_base_dir; print(report_base_dir())' "$REPO/airflow/dags")/$day"
    local stamp="$AIRFLOW_HOME/.report-started"
    touch "$stamp"
    local where="${AIRFLOW_CONN_STOCKFLOW_POSTGRES%%\?*}"
    log "airflow dags test daily_report $next (reports $day) against ${where##*@}"
    local out="$AIRFLOW_HOME/last-report-run.log" rc=0
    STOCKFLOW_REPORT_RETRIES="${STOCKFLOW_REPORT_RETRIES:-0}" "$VENV/bin/airflow" dags test daily_report "$next" 2>&1 | tee "$out" || rc=$?
    [ "$rc" = 0 ] || die "airflow dags test failed (exit $rc); log: $out"
    if grep -q "state=failed" "$out" || [ ! "$dir/summary.json" -nt "$stamp" ]; then
        die "the daily_report run did not produce $dir/summary.json; log: $out"
    fi
    echo
    echo "report for $day: $dir"
    ls -1 "$dir" | sed 's/^/  /'
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    install) do_install ;;
    test) do_install; run_pytest "$REPO/airflow/tests" "$@" ;;
    report) do_install; do_report "$@" ;;
    bench)
        do_install
        STOCKFLOW_BENCH=1 run_pytest "$REPO/airflow/tests/test_bench.py" -s -q "$@"
        ;;
    airflow) do_install; airflow_env; exec "$VENV/bin/airflow" "$@" ;;
    *) echo "usage: $0 install | test [pytest args] | report YYYY-MM-DD | bench | airflow ARGS" >&2; exit 2 ;;
esac
