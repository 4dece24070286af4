#!/usr/bin/env bash
# The API against its own OpenAPI document with schemathesis (pinned), on a fresh release
# server with a token and on one without (whose served document requires none), SQLite always
# and Postgres when a URL is given. Not run by CI (Python).
#
#   cargo build --release
#   python3 -m venv /tmp/st && /tmp/st/bin/pip install schemathesis==4.32.5
#   SCHEMATHESIS=/tmp/st/bin/schemathesis bash scripts/schemathesis.sh [postgres://...]
#
# MUSCLE_BIN names another binary (default target/release/muscle).
#
# Expected findings (semantic, not schema): ST202 on POST /v1/evaluations and /v1/trainings (a
# schema-valid body naming a model folder or dataset that does not exist is a 422), and the
# NDJSON upload routes, which schemathesis cannot serialise (tests/api/datasets.rs and
# tests/api/lmeval.rs cover them).
set -u
repo="$(cd "$(dirname "$0")/.." && pwd)"
st="${SCHEMATHESIS:-schemathesis}"
bin="${MUSCLE_BIN:-$repo/target/release/muscle}"
status=0
for url in "" "${1:-}"; do
    [ -z "$url" ] && [ -n "${done_sqlite:-}" ] && continue
    done_sqlite=1
    for token in schemathesis ""; do
        data="$(mktemp -d)"
        port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
        DATABASE_URL="$url" MUSCLE_API_TOKEN="$token" MUSCLE_BIND="127.0.0.1:$port" MUSCLE_DATA_DIR="$data" \
            MUSCLE_MODEL_DIR="$repo/examples" MUSCLE_WORKERS=0 RUST_LOG=warn \
            "$bin" serve >"$data/server.log" 2>&1 &
        server=$!
        for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
        echo "== schemathesis on $([ -n "$url" ] && echo postgres || echo sqlite), auth $([ -n "$token" ] && echo on || echo off)"
        auth=()
        [ -n "$token" ] && auth=(-H "Authorization: Bearer $token")
        "$st" run "http://127.0.0.1:$port/openapi.json" --checks all --max-examples 50 --seed 1 \
            --no-color "${auth[@]}" || status=1
        kill "$server"; wait "$server" 2>/dev/null
        rm -rf "$data"
    done
done
exit $status
