#!/usr/bin/env bash
# Starts stock ComfyUI on loopback and `comfyume-worker` in front of it, and
# keeps the container alive exactly as long as both run.
#
# On SIGTERM (a platform scaling down) the worker stops first: it stops
# taking jobs and lets the running ones finish within the platform's grace
# period; only then is ComfyUI stopped, so a running job is not cut short
# by its own ComfyUI going away.
#
# Environment:
#   COMFYUME_WORKER_TOKEN        required: the bearer token callers present
#   COMFYUI_DIR                  ComfyUI's checkout (default /opt/ComfyUI)
#   COMFYUI_ARGS                 extra ComfyUI flags, e.g. "--preview-method auto"
#   WORKER_LISTEN                default 0.0.0.0:9188
#   WORKER_MAX_JOBS              default 1 (match the platform's per-replica concurrency)
#   WORKER_READY_TIMEOUT_SECS    default 600 (how long a job waits for a cold ComfyUI)
set -uo pipefail

if [[ -z "${COMFYUME_WORKER_TOKEN:-}" ]]; then
    echo "entrypoint: COMFYUME_WORKER_TOKEN is not set; refusing to start an open worker" >&2
    exit 64
fi

comfyui_dir="${COMFYUI_DIR:-/opt/ComfyUI}"
# Word splitting of COMFYUI_ARGS is intended: it holds several flags.
# shellcheck disable=SC2086
python "${comfyui_dir}/main.py" --listen 127.0.0.1 --port 8188 ${COMFYUI_ARGS:-} &
comfyui_pid=$!

comfyume-worker \
    --comfyui http://127.0.0.1:8188 \
    --listen "${WORKER_LISTEN:-0.0.0.0:9188}" \
    --max-jobs "${WORKER_MAX_JOBS:-1}" \
    --ready-timeout-secs "${WORKER_READY_TIMEOUT_SECS:-600}" &
worker_pid=$!

stop() {
    kill -TERM "${worker_pid}" 2>/dev/null
    wait "${worker_pid}" 2>/dev/null
    kill -TERM "${comfyui_pid}" 2>/dev/null
}
trap stop TERM INT

# Whichever exits first (or a signal) ends the container; the other is
# then stopped too, worker before ComfyUI.
status=0
wait -n "${comfyui_pid}" "${worker_pid}" || status=$?
stop
wait
exit "${status}"
