#!/usr/bin/env bash
# The benchmarks. Builds the release binaries (and the static musl one),
# starts a throwaway PostgreSQL with pgvector and the stand-in API, generates
# posts shaped like the real ones, runs each scenario RUNS times (default 3)
# and prints one table: median, min and max, and the machine.
#
#   scripts/bench.sh                 every scenario
#   scripts/bench.sh copy memory     only those
#   RUNS=5 SCALE=0.1 scripts/bench.sh   more runs, a tenth of the posts
#
# Scenarios (the figures of README "Performance"):
#   copy      100,000 posts, 1 task, BATCH_SIZE 10 and 50, instant API:
#             posts/s, and the ratio to a binary COPY of the same vectors
#             into an identical table, measured in the same run
#   memory    peak RSS with 10,000 and 1,000,000 due posts
#   slowapi   an API of 4 slots at 20 ms a post (200 posts/s), CONCURRENCY 8
#   startup   process start to the first API request
#   tasks     4 tasks at once against 1 task
#   wide      EMBEDDING_DIMENSION 2048, against COPY at that width
#   musl      the static musl binary against the glibc one
#   core      20,000 posts, 1 task and 4 tasks: posts/s and peak RSS
#   faults    20,000 posts, 0.5 % unfetchable images, the API failing 10 %
#             of requests with 503, 5 % 429, 2 % dropped, 1 % malformed;
#             and the time from SIGTERM to exit
#   standin   the stand-in API's own ceiling, loaded by wrk
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SCALE=${SCALE:-1}
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(core faults copy memory slowapi startup tasks wide musl standin)

scripts/install-deps.sh
echo "bench: building" >&2
cargo build --release --quiet --bins
cargo build --release --quiet --target x86_64-unknown-linux-musl --bin postfinder-embeddings
JOB=$PWD/target/release/postfinder-embeddings
JOB_MUSL=$PWD/target/x86_64-unknown-linux-musl/release/postfinder-embeddings
STANDIN=$PWD/target/release/embedding-standin

. scripts/lib/cluster.sh
work=$(mktemp -d /tmp/postfinder-bench.XXXXXX)
chmod 755 "$work"
standin_pid=""
cleanup() {
    [ -n "$standin_pid" ] && kill "$standin_pid" 2>/dev/null
    cluster_stop
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cluster_start

rows=()   # the table: "scenario|figure|median|min|max|target"

# --- helpers ---------------------------------------------------------------

scaled() { awk -v n="$1" -v s="$SCALE" 'BEGIN { printf "%d", n * s }'; }

# Prints "median|min|max" of the numbers given.
stats() {
    printf '%s\n' "$@" | sort -g | awk '
        { v[NR] = $1 }
        END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%s|%s|%s", show(m), show(v[1]), show(v[NR])
        }
        function show(x) { return (x >= 1000 || x <= -1000) ? sprintf("%.0f", x) : sprintf("%.3g", x) }'
}

add_row() { rows+=("$1|$2|$(stats "${@:4}")|$3"); }

# A database $1 with $2 posts at width $3 (512), $4 unfetchable share (0).
make_db() {
    local db=$1 posts=$2 dimension=${3:-512} unfetchable=${4:-0}
    cluster_psql -d postgres -c "DROP DATABASE IF EXISTS \"$db\""
    cluster_create_schema "$db" "$dimension"
    cluster_psql -d "$db" -1 -c "SET seed.posts = $posts" \
        -c "SET seed.unfetchable = $unfetchable" -f scripts/sql/seed.sql
    cluster_psql -d "$db" -c "VACUUM ANALYZE"
}

db_url() { echo "${CLUSTER_URL%/*}/$1"; }

# Starts the stand-in with arguments $@; sets API.
start_standin() {
    stop_standin
    "$STANDIN" "$@" >"$work/standin.out" &
    standin_pid=$!
    for _ in $(seq 1 200); do
        grep -q "listening on" "$work/standin.out" 2>/dev/null && break
        sleep 0.02
    done
    API="http://$(sed -n 's/^listening on //p' "$work/standin.out")"
}

stop_standin() {
    if [ -n "$standin_pid" ]; then
        kill "$standin_pid" 2>/dev/null || true
        wait "$standin_pid" 2>/dev/null || true
        standin_pid=""
    fi
}

standin_stat() { curl -s "$API/stats" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }

reset_db() {
    cluster_psql -d "$1" -c "TRUNCATE instagram.post_embeddings" -c "CHECKPOINT"
}

# Runs the job binary $1 once on database $2 with the environment in the
# remaining arguments; sets SECS, RSS_MB, EMBEDDED and LOG.
run_job() {
    local binary=$1 db=$2
    shift 2
    LOG=$work/job.log
    env "$@" DATABASE_URL="$(db_url "$db")" EMBEDDING_API_URL="$API" RUST_LOG=warn,postfinder_embeddings=info \
        /usr/bin/time -f "%e %M" -o "$work/time" "$binary" >"$LOG" 2>&1 || true
    read -r SECS rss_kb <"$work/time"
    RSS_MB=$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')
    EMBEDDED=$(sed -n 's/.*summary: [0-9]* due, \([0-9]*\) embedded.*/\1/p' "$LOG")
    EMBEDDED=${EMBEDDED:-0}
}

# Runs 4 tasks at once on database $1 and waits for them; each task's peak
# RSS goes to $work/time.N.
four_tasks() {
    local i pids=()
    for i in 0 1 2 3; do
        CLOUD_RUN_TASK_INDEX=$i CLOUD_RUN_TASK_COUNT=4 DATABASE_URL="$(db_url "$1")" \
            EMBEDDING_API_URL="$API" RUST_LOG=warn \
            /usr/bin/time -f "%M" -o "$work/time.$i" "$JOB" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
}

rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

# Binary COPY of the vectors now in post_embeddings of $1 into an identical
# table; prints rows/s.
copy_floor() {
    local db=$1 dimension=${2:-512} rows ms
    cluster_psql -d "$db" -c "DROP TABLE IF EXISTS instagram.copy_floor" -c "
        CREATE TABLE instagram.copy_floor (
            ig_media_id varchar(50) PRIMARY KEY REFERENCES instagram.core_posts (ig_media_id),
            embedding vector($dimension) NOT NULL,
            created_at timestamp DEFAULT now())"
    cluster_psql -d "$db" -c "\\copy (SELECT ig_media_id, embedding FROM instagram.post_embeddings) TO '$work/vectors.bin' WITH (FORMAT binary)"
    rows=$(cluster_psql -d "$db" -Atc "SELECT count(*) FROM instagram.post_embeddings")
    cluster_psql -d "$db" -c "CHECKPOINT"
    ms=$(cluster_psql -d "$db" -c "\\timing on" \
        -c "\\copy instagram.copy_floor (ig_media_id, embedding) FROM '$work/vectors.bin' WITH (FORMAT binary)" \
        | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1)
    cluster_psql -d "$db" -c "DROP TABLE instagram.copy_floor"
    awk -v r="$rows" -v ms="$ms" 'BEGIN { printf "%.0f", r / (ms / 1000) }'
}

# --- scenarios -------------------------------------------------------------

# posts/s of BATCH_SIZE $2 on database $1 at width $3, with the COPY ratio.
throughput_vs_copy() {
    local db=$1 batch=$2 dimension=${3:-512} label=$4 target_ratio=$5 target_rate=${6:-}
    local rates=() ratios=() floors=() r f
    for _ in $(seq 1 "$RUNS"); do
        reset_db "$db"
        start_standin
        run_job "$JOB" "$db" BATCH_SIZE="$batch" EMBEDDING_DIMENSION="$dimension"
        r=$(rate "$EMBEDDED" "$SECS")
        f=$(copy_floor "$db" "$dimension")
        rates+=("$r"); floors+=("$f"); ratios+=("$(ratio "$r" "$f")")
    done
    add_row "$label" "posts/s" "$target_rate" "${rates[@]}"
    add_row "$label" "binary COPY rows/s (floor)" "" "${floors[@]}"
    add_row "$label" "posts/s ÷ COPY rows/s" "$target_ratio" "${ratios[@]}"
}

scenario_copy() {
    make_db bench_copy "$(scaled 100000)"
    throughput_vs_copy bench_copy 10 512 "instant API, 1 task, BATCH_SIZE 10" "≥ 0.5" "≥ 14,000"
    throughput_vs_copy bench_copy 50 512 "instant API, 1 task, BATCH_SIZE 50" "≥ 0.5" "≥ 20,000-28,000"
}

scenario_wide() {
    make_db bench_wide "$(scaled 100000)" 2048
    throughput_vs_copy bench_wide 10 2048 "EMBEDDING_DIMENSION 2048, BATCH_SIZE 10" "reported"
}

scenario_memory() {
    local posts label rss
    for posts in 10000 1000000; do
        posts=$(scaled "$posts")
        make_db bench_memory "$posts"
        rss=()
        for _ in $(seq 1 "$RUNS"); do
            reset_db bench_memory
            start_standin
            run_job "$JOB" bench_memory
            rss+=("$RSS_MB")
        done
        label="memory, $(cluster_psql -d bench_memory -Atc "SELECT to_char(count(*), 'FM9,999,999') FROM instagram.core_posts WHERE suspected IS FALSE AND media_product_type <> 'STORY'") due posts"
        add_row "$label" "peak RSS MB" "≤ 30, flat" "${rss[@]}"
    done
}

scenario_slowapi() {
    local rates=() ratios=() r
    make_db bench_slow "$(scaled 8000)"
    for _ in $(seq 1 "$RUNS"); do
        reset_db bench_slow
        start_standin --delay-per-post-ms 20 --slots 4
        run_job "$JOB" bench_slow CONCURRENCY=8
        r=$(rate "$EMBEDDED" "$SECS")
        rates+=("$r"); ratios+=("$(ratio "$r" 200)")
    done
    add_row "API 20 ms/post on 4 slots (200 posts/s), CONCURRENCY 8" "posts/s" "" "${rates[@]}"
    add_row "API 20 ms/post on 4 slots (200 posts/s), CONCURRENCY 8" "posts/s ÷ capacity" "≥ 0.9" "${ratios[@]}"
}

scenario_startup() {
    local ms=() started first
    make_db bench_startup "$(scaled 10000)"
    for _ in $(seq 1 "$RUNS"); do
        reset_db bench_startup
        start_standin
        started=$(date +%s%3N)
        run_job "$JOB" bench_startup
        first=$(standin_stat first_request_ms)
        ms+=("$((first - started))")
    done
    add_row "start-up, $(scaled 10000) posts" "ms to first API request" "≤ 50" "${ms[@]}"
}

scenario_tasks() {
    local one=() four=() ratios=() t0 t1 total i r1 r4
    make_db bench_tasks "$(scaled 100000)"
    for _ in $(seq 1 "$RUNS"); do
        reset_db bench_tasks
        start_standin
        run_job "$JOB" bench_tasks
        r1=$(rate "$EMBEDDED" "$SECS")
        reset_db bench_tasks
        start_standin
        t0=$(date +%s.%N)
        four_tasks bench_tasks
        t1=$(date +%s.%N)
        total=$(cluster_psql -d bench_tasks -Atc "SELECT count(*) FROM instagram.post_embeddings")
        r4=$(awk -v n="$total" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
        one+=("$r1"); four+=("$r4"); ratios+=("$(ratio "$r4" "$r1")")
    done
    add_row "4 tasks at once, instant API" "total posts/s" "" "${four[@]}"
    add_row "4 tasks at once, instant API" "÷ 1-task posts/s" "reported" "${ratios[@]}"
}

scenario_musl() {
    local ratios=() glibc=() musl=() rg rm
    make_db bench_musl "$(scaled 100000)"
    for _ in $(seq 1 "$RUNS"); do
        reset_db bench_musl
        start_standin
        run_job "$JOB" bench_musl
        rg=$(rate "$EMBEDDED" "$SECS")
        reset_db bench_musl
        start_standin
        run_job "$JOB_MUSL" bench_musl
        rm=$(rate "$EMBEDDED" "$SECS")
        glibc+=("$rg"); musl+=("$rm"); ratios+=("$(ratio "$rm" "$rg")")
    done
    add_row "musl static build" "posts/s" "" "${musl[@]}"
    add_row "musl static build" "÷ glibc build posts/s" "≥ 0.9" "${ratios[@]}"
    rows+=("musl static build|binary size MB|$(awk -v b="$(stat -c %s "$JOB_MUSL")" 'BEGIN { printf "%.1f", b / 1048576 }')|||< 15")
}

scenario_core() {
    local one=() one_rss=() four=() four_rss=() t0 t1 total i max_rss
    make_db bench_core "$(scaled 20000)"
    for _ in $(seq 1 "$RUNS"); do
        reset_db bench_core
        start_standin
        run_job "$JOB" bench_core
        one+=("$(rate "$EMBEDDED" "$SECS")"); one_rss+=("$RSS_MB")
        reset_db bench_core
        start_standin
        t0=$(date +%s.%N)
        four_tasks bench_core
        t1=$(date +%s.%N)
        total=$(cluster_psql -d bench_core -Atc "SELECT count(*) FROM instagram.post_embeddings")
        four+=("$(awk -v n="$total" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')")
        max_rss=$(cat "$work"/time.? | sort -n | tail -1)
        four_rss+=("$(awk -v k="$max_rss" 'BEGIN { printf "%.1f", k / 1024 }')")
    done
    add_row "$(scaled 20000) posts, 1 task, instant API" "posts/s" "" "${one[@]}"
    add_row "$(scaled 20000) posts, 1 task, instant API" "peak RSS MB" "" "${one_rss[@]}"
    add_row "$(scaled 20000) posts, 4 tasks, instant API" "total posts/s" "" "${four[@]}"
    add_row "$(scaled 20000) posts, 4 tasks, instant API" "peak RSS MB per task" "" "${four_rss[@]}"
}

scenario_faults() {
    local shares=() calls=() stops=() due healthy embedded_healthy requests pid t0 t1
    make_db bench_faults "$(scaled 20000)" 512 0.005
    for run in $(seq 1 "$RUNS"); do
        reset_db bench_faults
        start_standin --fail 503=0.10,429=0.05,reset=0.02,malformed=0.01 --seed "$run"
        run_job "$JOB" bench_faults
        due=$(sed -n 's/.*summary: \([0-9]*\) due.*/\1/p' "$LOG")
        healthy=$(cluster_psql -d bench_faults -Atc "
            SELECT count(*) FROM instagram.core_posts p
            WHERE suspected IS FALSE AND media_product_type <> 'STORY'
              AND NOT EXISTS (SELECT 1 FROM instagram.core_post_media m
                              WHERE m.parent_ig_media_id = p.ig_media_id
                                AND (m.media_url LIKE '%unfetchable%' OR m.thumbnail_url LIKE '%unfetchable%'))")
        embedded_healthy=$(cluster_psql -d bench_faults -Atc "
            SELECT count(*) FROM instagram.post_embeddings e
            WHERE NOT EXISTS (SELECT 1 FROM instagram.core_post_media m
                              WHERE m.parent_ig_media_id = e.ig_media_id
                                AND (m.media_url LIKE '%unfetchable%' OR m.thumbnail_url LIKE '%unfetchable%'))")
        requests=$(standin_stat requests)
        shares+=("$(ratio "$embedded_healthy" "$healthy")")
        calls+=("$(ratio "$requests" "$due")")
        cp "$LOG" "$work/faults.$run.log"
    done
    add_row "faults: 0.5 % bad images; 503 10 %, 429 5 %, drop 2 %, bad JSON 1 %" "healthy due posts embedded (share)" "1" "${shares[@]}"
    add_row "faults: 0.5 % bad images; 503 10 %, 429 5 %, drop 2 %, bad JSON 1 %" "API calls per due post" "" "${calls[@]}"

    # SIGTERM with batches in flight: the model takes 50 ms a post.
    for _ in $(seq 1 "$RUNS"); do
        reset_db bench_faults
        start_standin --delay-per-post-ms 50 --slots 4
        DATABASE_URL="$(db_url bench_faults)" EMBEDDING_API_URL="$API" RUST_LOG=error "$JOB" 2>/dev/null &
        pid=$!
        sleep 3
        t0=$(date +%s%3N)
        kill -TERM "$pid"
        wait "$pid" || true
        t1=$(date +%s%3N)
        stops+=("$((t1 - t0))")
    done
    add_row "SIGTERM with batches in flight (0.5 s requests)" "ms from SIGTERM to exit" "< 10,000" "${stops[@]}"
}

# The stand-in alone: 10 posts a request, 512 wide, as many as wrk can send
# on 8 connections. wrk shares the 2 cores, so this is a floor of its
# ceiling.
scenario_standin() {
    local rates=() rps posts="" i out
    for i in $(seq 1 10); do
        posts+="${posts:+, }{\"caption\": \"Coucher de soleil $i #summer #travel golden hour\", \"image_urls\": [\"https://scontent.cdninstagram.com/v/t51.2885-15/179000000000000${i}_0_n.jpg\"]}"
    done
    cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"posts": [$posts], "dimension": 512}'
wrk.headers["Content-Type"] = "application/json"
LUA
    for _ in $(seq 1 "$RUNS"); do
        start_standin
        out=$(wrk -t2 -c8 -d5s -s "$work/post.lua" "$API/embed_posts")
        if grep -q "Non-2xx" <<<"$out"; then
            echo "bench: the stand-in refused wrk's requests: $out" >&2
            return 1
        fi
        rps=$(sed -n 's/^Requests\/sec:[[:space:]]*//p' <<<"$out")
        rates+=("$(awk -v r="$rps" 'BEGIN { printf "%.0f", r * 10 }')")
    done
    add_row "stand-in alone (wrk, 10 posts a request, 512 wide)" "posts/s served" "well above the job's" "${rates[@]}"
}

for scenario in "${scenarios[@]}"; do
    echo "bench: $scenario" >&2
    "scenario_$scenario"
done
stop_standin

# --- the table -------------------------------------------------------------

echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); PostgreSQL $(cluster_psql -d postgres -Atc 'SHOW server_version'); $RUNS runs each; scale $SCALE"
echo
echo "| scenario | figure | median | min | max | target |"
echo "|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
    echo "| ${row//|/ | } |"
done
