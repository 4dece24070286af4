#!/usr/bin/env bash
# Runs the README's walk-through as a new user would paste it: the `sh` blocks of the sections
# "Walk-through", "Train a compatibility adapter", "Already using lm-evaluation-harness?" and "Use it
# from CI", in order, in one shell, against a fresh server on the example models. .ci/run runs
# it after the tests, so a step that does not paste fails CI.
#
#   bash scripts/walkthrough.sh [path/to/muscle]      (default: target/debug/muscle)
#   bash scripts/walkthrough.sh --server http://127.0.0.1:PORT [path/to/muscle]
#
# With --server the HTTP steps go to that running server instead (the Docker stack in
# tests/docker; its MUSCLE_MODEL_DIR must hold the examples, and its API token must be unset);
# the CLI steps still run the given binary here.
#
# What differs from pasting by hand, and why: the server is this build's binary (started here,
# not with `cargo run --release -- serve`), `cargo run --release --` in the blocks becomes that
# binary (no release build in CI), the port is a free one instead of 8080, and everything runs
# in a temporary copy of the repository's examples, so the files the blocks write stay there.
# Every HTTP answer must be a success, except one 409 per README line that says it answers 409
# (the cancel of a finished job).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
server_url=""
if [ "${1:-}" = --server ]; then
    server_url="${2:?--server needs a URL}"
    shift 2
fi
bin="$(realpath "${1:-$repo/target/debug/muscle}")"
for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "walkthrough: $tool is not installed" >&2; exit 1; }
done

work="$(mktemp -d)"
cleanup() {
    [ -n "${server:-}" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
cp -r "$repo/examples" "$work/examples"
mkdir -p "$work/tests/fixtures"
cp -r "$repo/tests/fixtures/lmeval" "$work/tests/fixtures/lmeval"
if [ -n "$server_url" ]; then
    address="${server_url#http://}"
    address="${address%/}"
else
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    address="127.0.0.1:$port"
fi

# The blocks, with the substitutions above.
awk '
    /^## / { keep = ($0 == "## Walk-through" || $0 == "## Train a compatibility adapter" || $0 == "## Use it from CI" ||
                     $0 == "## Already using lm-evaluation-harness?") }
    keep && /^```sh$/ { inside = 1; next }
    inside && /^```$/ { inside = 0; next }
    keep && inside { print }
' "$repo/README.md" |
    sed -e "s#cargo run --release --#\"\$MUSCLE_BIN\"#g" \
        -e "s#localhost:8080#$address#g" -e "s#127.0.0.1:8080#$address#g" \
        >"$work/walkthrough.sh"
[ -s "$work/walkthrough.sh" ] || { echo "walkthrough: no sh blocks found in README.md" >&2; exit 1; }

cd "$work"
if [ -z "$server_url" ]; then
    MUSCLE_BIND="$address" MUSCLE_DATA_DIR="$work/data" MUSCLE_MODEL_DIR="$work/examples" \
        MUSCLE_API_TOKEN='' RUST_LOG=warn "$bin" serve >"$work/server.log" 2>&1 &
    server=$!
else
    echo "(the server's log is the stack's: docker compose logs)" >"$work/server.log"
fi
for _ in $(seq 1 100); do
    curl -sf "$address/healthz" >/dev/null && break
    sleep 0.2
done

# Each curl answer's status is appended to a file for the check below; its body is printed.
cat >"$work/prelude.sh" <<EOF
set -euo pipefail
export MUSCLE_BIN="$bin" MUSCLE_MODEL_DIR="$work/examples" MUSCLE_DATA_DIR="$work/cli-data"
curl() {
    local body
    body="\$(mktemp)"
    command curl -o "\$body" -w '%{http_code}\n' "\$@" >>"$work/statuses"
    cat "\$body"
    rm -f "\$body"
}
EOF
echo "walkthrough: running $(grep -c . "$work/walkthrough.sh") lines of README.md against $address"
if ! bash -c "source '$work/prelude.sh'; source '$work/walkthrough.sh'" >"$work/out.log" 2>&1; then
    echo "walkthrough: a README command failed; its output:" >&2
    cat "$work/out.log" >&2
    echo "--- server log" >&2
    tail -20 "$work/server.log" >&2
    exit 1
fi

statuses=$(tr '\n' ' ' <"$work/statuses")
echo "walkthrough: HTTP statuses in order: $statuses"
expected_409=$(grep -c '# 409' "$work/walkthrough.sh" || true)
got_409=$(grep -c '^409$' "$work/statuses" || true)
other=$(grep -vc -e '^2' -e '^409$' "$work/statuses" || true)
if [ "$got_409" != "$expected_409" ] || [ "$other" != 0 ]; then
    echo "walkthrough: expected every answer 2xx and $expected_409 answer(s) 409" >&2
    cat "$work/out.log" >&2
    exit 1
fi
# A `# => TEXT` line in a block is what the command above it prints: TEXT must be in the output.
while IFS= read -r expected; do
    grep -qF -- "$expected" "$work/out.log" ||
        { echo "walkthrough: README.md says a command prints \"$expected\"; it did not" >&2; cat "$work/out.log" >&2; exit 1; }
done < <(sed -n 's/^# => //p' "$work/walkthrough.sh")
for file in report.json instances.jsonl instances.csv examples/trained/tiny-compat/adapter_model.safetensors; do
    [ -s "$work/$file" ] || { echo "walkthrough: the README's commands did not write $file" >&2; exit 1; }
done
# The server's training wrote its adapter where the server lists it (a volume, under Docker).
command curl -sf "$address/v1/models" | jq -e '.adapters | map(.name) | index("trained/tiny-compat-api")' >/dev/null ||
    { echo "walkthrough: the server does not list the adapter trained/tiny-compat-api" >&2; exit 1; }
echo "walkthrough: every step pasted"
