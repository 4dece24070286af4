#!/usr/bin/env bash
# API read latency under load: GET /v1/evaluations/{id} and the instances listing, 100
# concurrent connections on loopback (wrk), an evaluation with 10,000 stored instances,
# on SQLite and on Postgres.
#
#   scripts/bench/api_latency.sh [postgres://user:pass@127.0.0.1:5432/db]
#
# Needs wrk (apt-get install wrk) and a release build (cargo build --release). Without a
# Postgres URL only SQLite is measured. Writes a Markdown table to stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."

PG_URL=${1:-}
PORT=${PORT:-18080}
ROWS=${ROWS:-10000}
DURATION=${DURATION:-10s}
BIN=target/release/muscle
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT

[ -x "$BIN" ] || cargo build --release
python3 - "$ROWS" > "$WORK/rows.jsonl" <<'EOF'
import json, random, sys
random.seed(0)
for i in range(int(sys.argv[1])):
    choices = random.sample(["red", "blue", "green", "hot", "cold", "wet", "dry"], 3)
    print(json.dumps({"id": f"q{i}", "prompt": f"Item {i} is", "choices": choices,
                      "answer": random.randrange(3), "tags": {"bucket": str(i % 7)}}))
EOF

measure() {
    local label=$1 url=$2
    export DATABASE_URL=$url MUSCLE_BIND=127.0.0.1:$PORT MUSCLE_MODEL_DIR=examples \
        MUSCLE_DATA_DIR=$WORK/data MUSCLE_WORKERS=1 MUSCLE_POLL_MS=50 MUSCLE_SHARD_SIZE=2000 \
        RUST_LOG=warn
    "$BIN" serve &
    SERVER=$!
    for _ in $(seq 1 100); do curl -sf "localhost:$PORT/healthz" >/dev/null && break; sleep 0.1; done
    local dataset eval
    dataset=$(curl -sf -X POST "localhost:$PORT/v1/datasets?name=bench" \
        -H 'content-type: application/x-ndjson' --data-binary @"$WORK/rows.jsonl" | jq -r .id)
    eval=$(curl -sf -X POST "localhost:$PORT/v1/evaluations" -H 'content-type: application/json' \
        -d "{\"old\": {\"model\": \"tiny/llama\"}, \"new\": {\"model\": \"tiny/llama\", \"adapter\": \"tiny/llama-lora\"},
             \"dataset\": \"$dataset\", \"task\": {\"type\": \"multiple_choice\"}, \"options\": {\"batch_size\": 64}}" | jq -r .id)
    until [ "$(curl -sf "localhost:$PORT/v1/evaluations/$eval" | jq -r .status)" = succeeded ]; do sleep 1; done
    for path in "/v1/evaluations/$eval" "/v1/evaluations/$eval/instances?limit=50&cursor=5000" \
                "/v1/evaluations/$eval/instances?flip=both_wrong&slice=bucket%3D3&limit=50"; do
        local out p50 p99 rps
        out=$(wrk -t2 -c100 -d"$DURATION" --latency "http://127.0.0.1:$PORT$path")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        echo "| $label | \`${path/$eval/{id\}}\` | $p50 | $p99 | $rps |"
    done
    kill $SERVER; wait $SERVER 2>/dev/null || true
}

echo "| backend | route | p50 | p99 | requests/s |"
echo "|---|---|---|---|---|"
measure sqlite "sqlite://$WORK/data/bench.db"
if [ -n "$PG_URL" ]; then
    # A schema of its own, dropped afterwards: the database's other contents are untouched.
    SCHEMA=muscle_bench_$$
    psql "$PG_URL" -q -c "CREATE SCHEMA $SCHEMA"
    case $PG_URL in *\?*) SEP='&' ;; *) SEP='?' ;; esac
    measure postgres "${PG_URL}${SEP}options=-c%20search_path%3D$SCHEMA"
    psql "$PG_URL" -q -c "DROP SCHEMA $SCHEMA CASCADE"
fi
