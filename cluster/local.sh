#!/usr/bin/env bash
# A one-machine stand-in for the cluster: a Ray head (token authentication on, dashboard on loopback) and an
# MLflow server on loopback with the sqlite backend (./mlflow.db and ./mlartifacts, the store `mlflow ui`
# reads), then the `ray job submit` line that runs the main job on it.
#
#   cluster/local.sh start [CONFIG]   CONFIG defaults to configs/demo.yaml
#   cluster/local.sh stop             `ray stop` (this machine's Ray) and the MLflow server started here
#
# Settings from the environment: RAY_NUM_CPUS (default: every core), MLFLOW_PORT (5000),
# REID3DSL_MLFLOW_DIR (where mlflow.db and mlartifacts/ are; default: this checkout),
# REID3DSL_LOCAL_DIR (MLflow's pid file and log; default /tmp/reid3dsl-local-$UID).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The project's environment where `make` made one; otherwise whatever `ray` and `mlflow` are on PATH.
if [[ -x .venv/bin/ray ]]; then
    PATH="$PWD/.venv/bin:$PATH"
fi

state=${REID3DSL_LOCAL_DIR:-/tmp/reid3dsl-local-$(id -u)}
store=${REID3DSL_MLFLOW_DIR:-.}
mlflow_port=${MLFLOW_PORT:-5000}
mlflow_pid="$state/mlflow.pid"
export RAY_AUTH_MODE=token

mlflow_running() {
    [[ -f $mlflow_pid ]] && kill -0 "$(<"$mlflow_pid")" 2>/dev/null
}

start() {
    local config=${1:-configs/demo.yaml}
    if [[ ! -f $config ]]; then
        echo "error: config '$config': not found (expected a file under configs/, e.g. configs/demo.yaml)" >&2
        exit 2
    fi
    mkdir -p "$state" "$store"
    store=$(cd "$store" && pwd)
    # The job runs in Ray's copy of this folder (`--working-dir .`), where the config's relative paths would
    # put data, checkpoints and runs that vanish with the copy: the printed line pins them to this checkout.
    # This also checks the config before anything starts.
    local pins
    pins=$(python - "$config" <<'PY'
import shlex
import sys
from pathlib import Path

from reid3dsl.config import load_config
from reid3dsl.errors import UserError
from reid3dsl.train.driver import pinned_paths

try:
    pins = pinned_paths(load_config(sys.argv[1], env={}), Path.cwd())
except UserError as err:
    sys.exit(f"error: {err}")
# The tracking URI is the MLflow server's.
print(" ".join(f"--set {shlex.quote(p)}" for p in pins if not p.startswith("tracking.uri=")))
PY
    )

    # The token the head and every client share (~/.ray/auth_token); made once, kept afterwards.
    ray get-auth-token --generate >/dev/null
    ray start --head --num-cpus="${RAY_NUM_CPUS:-$(nproc)}" --dashboard-host=127.0.0.1 --dashboard-port=8265

    if mlflow_running; then
        echo "MLflow already running (pid $(<"$mlflow_pid"))"
    else
        # Its own session, so that `stop` ends the server and its workers together; one worker, because
        # SQLite locks under concurrent writers.
        setsid mlflow server --host 127.0.0.1 --port "$mlflow_port" --workers 1 \
            --backend-store-uri "sqlite:///$store/mlflow.db" --artifacts-destination "$store/mlartifacts" \
            >"$state/mlflow.log" 2>&1 </dev/null &
        echo $! >"$mlflow_pid"
        for _ in $(seq 120); do
            if python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$mlflow_port/health', timeout=1)" \
                2>/dev/null; then
                break
            fi
            if ! mlflow_running; then
                echo "error: MLflow server exited; see $state/mlflow.log" >&2
                exit 1
            fi
            sleep 0.5
        done
    fi

    cat <<EOF

Ray dashboard: http://127.0.0.1:8265    MLflow: http://127.0.0.1:$mlflow_port
Submit the main job:
RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- python ray_job.py --config $config $pins --set tracking.uri=http://127.0.0.1:$mlflow_port
Stop: cluster/local.sh stop
EOF
}

stop() {
    ray stop
    if mlflow_running; then
        local group sig
        group=$(<"$mlflow_pid")
        # TERM first (the server passes it on to its workers), KILL what is left after 10 s, and either way
        # wait until the whole group is gone: dying processes linger, and a following start needs the port.
        for sig in TERM KILL; do
            kill -"$sig" -- "-$group" 2>/dev/null || true
            for _ in $(seq 50); do
                kill -0 -- "-$group" 2>/dev/null || break 2
                sleep 0.2
            done
        done
        if kill -0 -- "-$group" 2>/dev/null; then
            echo "error: MLflow server processes (group $group) survive SIGKILL" >&2
            exit 1
        fi
        echo "MLflow server stopped"
    fi
    rm -f "$mlflow_pid"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop ;;
    *)
        echo "usage: cluster/local.sh start [CONFIG] | stop" >&2
        exit 2
        ;;
esac
