#!/usr/bin/env bash
# postgres.sh: a PostgreSQL server on 127.0.0.1 for the tests and for local runs of the node.
#
#   scripts/postgres.sh start    start it (idempotent); prints the store URL on the last line
#   scripts/postgres.sh url      print the store URL (the server must be running)
#   scripts/postgres.sh stop     stop it (the data directory stays)
#   scripts/postgres.sh reset    stop it and delete its data directory
#
# The server runs as the unprivileged user `postgres` (PostgreSQL refuses to run as root),
# listens on 127.0.0.1 only (and a Unix socket under its own folder), and trusts loopback
# connections: it is a throwaway server for tests and development, never a production one.
#
# Environment:
#   INFERNET_PG_PORT=55432               its TCP port
#   INFERNET_PG_ROOT=/var/tmp/infernet-pg its data directory, socket and log live here
set -euo pipefail

PORT=${INFERNET_PG_PORT:-55432}
PG_ROOT=${INFERNET_PG_ROOT:-/var/tmp/infernet-pg}
DATA="$PG_ROOT/data"
LOG="$PG_ROOT/server.log"
RUN_AS=postgres

log() { echo "postgres: $*" >&2; }
die() { echo "postgres: ERROR: $*" >&2; exit 1; }

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n "$dir" && -x "$dir/initdb" ]] && echo "$dir"
}

install_server() {
    [[ $(id -u) -eq 0 ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql; install Debian's postgresql package (as root: apt-get install postgresql)"
    log "installing Debian's postgresql with apt-get"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
        || die "apt-get install postgresql failed"
}

as_server_user() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u "$RUN_AS" -- "$@"
    else
        "$@"  # not root: run as ourselves (PostgreSQL only refuses root)
    fi
}

url() { echo "postgresql+asyncpg://postgres@127.0.0.1:$PORT/postgres"; }

running() { [[ -d "$DATA" ]] && as_server_user "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

start() {
    if running; then
        url
        return 0
    fi
    if [[ $(id -u) -eq 0 ]] && ! id "$RUN_AS" >/dev/null 2>&1; then
        log "creating the system user $RUN_AS"
        useradd --system --home-dir "$PG_ROOT" --shell /usr/sbin/nologin "$RUN_AS"
    fi
    mkdir -p "$PG_ROOT"
    [[ $(id -u) -eq 0 ]] && chown "$RUN_AS" "$PG_ROOT"
    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        log "initdb $DATA"
        as_server_user "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
            >"$PG_ROOT/initdb.log" 2>&1 || die "initdb failed: see $PG_ROOT/initdb.log"
    fi
    log "starting on 127.0.0.1:$PORT (log: $LOG)"
    # Sized for tests: several nodes and test processes, each with a small pool.
    as_server_user "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PG_ROOT -c max_connections=300 -c fsync=on" \
        start >/dev/null || die "the server did not start: see $LOG"
    url
}

stop() {
    if running; then
        as_server_user "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
        log "stopped"
    fi
}

BIN=$(pg_bin || true)
if [[ -z "$BIN" ]]; then
    install_server
    BIN=$(pg_bin) || die "postgresql installed but no initdb under /usr/lib/postgresql"
fi

case "${1:-start}" in
    start) start ;;
    url) running || die "not running: scripts/postgres.sh start"; url ;;
    stop) stop ;;
    reset) stop; rm -rf "$PG_ROOT"; log "removed $PG_ROOT" ;;
    *) die "usage: $0 start|url|stop|reset" ;;
esac
