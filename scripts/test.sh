#!/usr/bin/env bash
# The README's test command: installs what is missing, starts a throwaway
# PostgreSQL 15 with pgvector on its own port, runs every test against it,
# and stops the cluster whatever happens. Arguments go to `cargo test`.
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
cargo test "$@"
