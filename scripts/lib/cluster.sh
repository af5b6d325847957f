# Sourced by the scripts: a throwaway PostgreSQL 15 cluster with pgvector, on
# its own port and socket directory, gone when the script ends.
#
#   cluster_start        starts it; sets CLUSTER_DIR, CLUSTER_PORT and
#                        CLUSTER_URL (a superuser URL over TCP). TCP logins
#                        need a password (SCRAM), as on real servers; the
#                        superuser's is CLUSTER_PASSWORD.
#   cluster_psql ARGS    psql as that superuser
#   cluster_stop         stops it and removes its files (safe to call twice)

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
CLUSTER_DIR=""
CLUSTER_PORT=""
CLUSTER_URL=""
CLUSTER_PASSWORD=postfinder-test

# PostgreSQL refuses to run as root; as root, the server runs as `postgres`.
cluster_as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# A port nothing listens on, from the dynamic range.
cluster_free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "cluster: no free port found" >&2
    return 1
}

cluster_start() {
    CLUSTER_DIR=$(mktemp -d /tmp/postfinder-pg.XXXXXX)
    CLUSTER_PORT=${CLUSTER_PORT_WANTED:-$(cluster_free_port)}
    [ "$(id -u)" -eq 0 ] && chown postgres "$CLUSTER_DIR"
    echo "$CLUSTER_PASSWORD" >"$CLUSTER_DIR/pwfile"
    [ "$(id -u)" -eq 0 ] && chown postgres "$CLUSTER_DIR/pwfile"
    cluster_as_owner "$PG_BIN/initdb" -D "$CLUSTER_DIR/data" -U postgres \
        --auth-local=trust --auth-host=scram-sha-256 --pwfile="$CLUSTER_DIR/pwfile" \
        --no-sync >"$CLUSTER_DIR/initdb.log" 2>&1 \
        || { cat "$CLUSTER_DIR/initdb.log" >&2; return 1; }
    cat >>"$CLUSTER_DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $CLUSTER_PORT
unix_socket_directories = '$CLUSTER_DIR'
max_connections = 300
shared_buffers = 256MB
${CLUSTER_EXTRA_CONF:-}
CONF
    cluster_as_owner "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" \
        -w -t 60 start >/dev/null \
        || { cat "$CLUSTER_DIR/server.log" >&2; return 1; }
    CLUSTER_URL="postgresql://postgres:$CLUSTER_PASSWORD@127.0.0.1:$CLUSTER_PORT/postgres"
}

cluster_psql() {
    PGPASSWORD=$CLUSTER_PASSWORD PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$CLUSTER_PORT" -U postgres "$@"
}

# Creates database $1 with the job's schema, vectors of width $2 (512).
cluster_create_schema() {
    local db=$1 dimension=${2:-512}
    local here
    here=$(dirname "${BASH_SOURCE[0]}")
    cluster_psql -d postgres -c "CREATE DATABASE \"$db\""
    cluster_psql -d "$db" -v dimension="$dimension" -f "$here/../sql/schema.sql"
}

cluster_stop() {
    if [ -n "$CLUSTER_DIR" ] && [ -d "$CLUSTER_DIR" ]; then
        cluster_as_owner "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -m immediate -w stop \
            >/dev/null 2>&1 || true
        rm -rf "$CLUSTER_DIR"
    fi
    CLUSTER_DIR=""
}
