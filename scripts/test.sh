#!/usr/bin/env bash
# The README's test command: installs what is missing, starts a throwaway
# PostgreSQL 15 with pgvector on its own port, runs every test against it
# twice (the default build, then the static musl build that ships), checks
# that the release musl binary is static, and stops the cluster whatever
# happens. Arguments go to `cargo test`; MUSL=0 skips the musl build.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
. scripts/lib/cluster.sh

trap cluster_stop EXIT
trap 'exit 130' INT TERM
cluster_start

# Each test copies this template into a database of its own, so tests run in
# parallel without seeing each other's rows.
cluster_create_schema postfinder_template 512
cluster_psql -d postgres -c "ALTER DATABASE postfinder_template WITH IS_TEMPLATE true"

export POSTFINDER_TEST_ADMIN_URL="$CLUSTER_URL"
export POSTFINDER_TEST_SCHEMA_SQL="$PWD/scripts/sql/schema.sql"
export POSTFINDER_TEST_PORT="$CLUSTER_PORT"
export POSTFINDER_TEST_PASSWORD="$CLUSTER_PASSWORD"
cargo test "$@"

if [ "${MUSL:-1}" != 0 ]; then
    musl=x86_64-unknown-linux-musl
    echo "test: the same tests against the static musl build" >&2
    cargo test --target "$musl" "$@"
    cargo build --release --quiet --target "$musl" --bin postfinder-embeddings
    binary=target/$musl/release/postfinder-embeddings
    description=$(file -b "$binary")
    case "$description" in
        *"statically linked"* | *"static-pie linked"*)
            echo "test: $binary is static, $(stat -c %s "$binary") bytes: $description" >&2 ;;
        *)
            echo "test: $binary is not static: $description" >&2
            exit 1 ;;
    esac
fi
