#!/usr/bin/env bash
# The README's command that runs the job.
#
# With DATABASE_URL set: builds the release binary and runs the job against
# that database and EMBEDDING_API_URL (every setting of the job is read from
# the environment as usual). TASKS=N runs N tasks at once, as Cloud Run would.
#
# With DATABASE_URL unset: brings everything itself (a throwaway PostgreSQL
# with pgvector, the schema, POSTS generated posts, the stand-in API), runs
# TASKS tasks (default 4), shows a nearest-neighbour query over the new
# vectors, and cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."

tasks=${TASKS:-}
cargo build --release --quiet --bins
job=target/release/postfinder-embeddings

# Runs $1 tasks of the job at once; returns the worst exit status.
run_tasks() {
    local count=$1 status=0 pids=() i
    for ((i = 0; i < count; i++)); do
        CLOUD_RUN_TASK_INDEX=$i CLOUD_RUN_TASK_COUNT=$count "$job" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || { rc=$?; [ "$rc" -gt "$status" ] && status=$rc; }
    done
    return "$status"
}

if [ -n "${DATABASE_URL:-}" ]; then
    run_tasks "${tasks:-1}"
    exit $?
fi

# Nothing configured: a whole local setup, removed at the end.
scripts/install-deps.sh
. scripts/lib/cluster.sh
standin_pid=""
cleanup() {
    [ -n "$standin_pid" ] && kill "$standin_pid" 2>/dev/null
    cluster_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "run-local: starting a throwaway PostgreSQL with pgvector" >&2
cluster_start
cluster_create_schema postfinder 512
posts=${POSTS:-5000}
echo "run-local: generating $posts posts" >&2
cluster_psql -d postfinder -1 -c "SET seed.posts = $posts" -f scripts/sql/seed.sql

echo "run-local: starting the stand-in embedding API" >&2
standin_out=$(mktemp)
target/release/embedding-standin >"$standin_out" &
standin_pid=$!
for _ in $(seq 1 100); do
    grep -q "listening on" "$standin_out" && break
    sleep 0.05
done
api="http://$(sed -n 's/^listening on //p' "$standin_out")"
rm -f "$standin_out"

export DATABASE_URL="${CLUSTER_URL%/*}/postfinder"
export EMBEDDING_API_URL="$api"
status=0
run_tasks "${tasks:-4}" || status=$?

echo
echo "run-local: the 5 posts nearest to the newest embedded one:"
cluster_psql -d postfinder -P pager=off -c "
    WITH q AS (
        SELECT e.ig_media_id, e.embedding
        FROM instagram.post_embeddings e
        JOIN instagram.core_posts p USING (ig_media_id)
        ORDER BY p.\"timestamp\" DESC NULLS LAST LIMIT 1)
    SELECT e.ig_media_id,
           round((e.embedding <=> q.embedding)::numeric, 4) AS cosine_distance,
           left(replace(coalesce(p.caption, '(no caption)'), E'\n', ' '), 50) AS caption
    FROM instagram.post_embeddings e
    JOIN instagram.core_posts p USING (ig_media_id), q
    ORDER BY e.embedding <=> q.embedding
    LIMIT 5"
exit "$status"
