#!/usr/bin/env bash
# Stop scripts/train_mini.sh's lanes in this checkout, then park their runs for the next clone:
#   bash scripts/stop_mini.sh     # then commit weights/mini-in-progress/ (and weights/mini/, results/)
# Only processes whose working directory is this checkout are stopped. Each run keeps its last finished
# epoch (the epoch in progress is lost) and continues there when train_mini.sh starts again, here or,
# once weights/mini-in-progress/ is committed, in any clone (scripts/park_runs.py).
set -uo pipefail
cd "$(dirname "$0")/.."
here=$(pwd -P)

ours() {  # the pids whose command line holds $1 and whose working directory is this checkout
    for pid in $(pgrep -f "$1"); do
        [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$here" ] && echo "$pid"
    done
}

pids="$(ours 'bash scripts/train_mini.sh') $(ours 'python -m reproduce campaign')"
for pid in $pids; do
    kill -TERM "$pid" 2>/dev/null
    kill -CONT "$pid" 2>/dev/null  # a paused lane (kill -STOP, for a measurement) must run to exit
done
for _ in $(seq 60); do
    left=$(for pid in $pids; do ps -o stat= -p "$pid" | grep -qv '^Z' && echo "$pid"; done)  # zombies have exited
    [ -z "$left" ] && break
    sleep 1
done
if [ -n "${left:-}" ]; then
    echo "stop_mini.sh: processes $(echo $left) did not exit in 60 s; nothing parked" >&2
    exit 1
fi
echo "stopped $(echo $pids | wc -w) process(es)"
uv run python scripts/park_runs.py save
