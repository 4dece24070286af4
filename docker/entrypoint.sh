#!/bin/sh
# Container entrypoint. `healthcheck` answers Docker's HEALTHCHECK: the API's /healthz when the
# container serves HTTP, the worker process being alive otherwise. Anything else is handed to
# muscle (serve, worker, migrate, eval, train), which then runs as this shell's PID.
set -eu
run=${MUSCLE_RUN_DIR:-/tmp}

if [ "${1:-}" = "healthcheck" ]; then
    if [ "$(cat "$run/muscle.command" 2>/dev/null)" = "serve" ]; then
        exec curl -fsS --max-time 2 "http://127.0.0.1:${MUSCLE_BIND##*:}/healthz" -o /dev/null
    fi
    # The shell's own kill: the slim images have no kill program (procps is not installed).
    kill -0 "$(cat "$run/muscle.pid")"
    exit 0
fi

echo "${1:-}" > "$run/muscle.command"
echo $$ > "$run/muscle.pid"
exec muscle "$@"
