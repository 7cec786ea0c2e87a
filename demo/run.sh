#!/usr/bin/env bash
# `make demo`: applyops end to end on an embedded SQLite database, no server needed.
#
# 1. migrates the database ($DATABASE_URL, default sqlite://target/demo/applyops-demo.db, created
#    afresh each run; with DATABASE_URL given it is kept and reused, to inspect afterwards);
# 2. creates three rollouts from demo/: rolling, barrier with cutovers on an operator's request,
#    parallel with one deployment (ap-south) whose first attempt fails;
# 3. runs the example worker with four worker threads in the background;
#    (each operation waits 2 s in its revert window after its cutover: --revert-window 2000);
# 4. plays the operator in the background: retries ap-south once it has failed, cuts the barrier
#    rollout over once all its deployments wait at the barrier, and closes us-east's revert window
#    there without reverting (skip-revert);
# 5. shows `applyops watch` until the three applies settle, then `applyops applies`.
#
# Exits non-zero if any step fails or an apply does not complete within DEMO_TIMEOUT seconds
# (default 180). Logs: target/demo/{workers,operator}.log.
set -euo pipefail

cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
APPLYOPS=${APPLYOPS:-$target/debug/applyops}
WORKER=${WORKER:-$target/debug/applyops-worker}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-180}
out=target/demo
mkdir -p "$out"
if [ -z "${DATABASE_URL:-}" ]; then
    rm -f "$out/applyops-demo.db" "$out/applyops-demo.db-wal" "$out/applyops-demo.db-shm"
    DATABASE_URL="sqlite://$out/applyops-demo.db"
fi
export DATABASE_URL
# applyops prefers APPLYOPS_DATABASE_URL to DATABASE_URL: the demo's database is DATABASE_URL.
unset APPLYOPS_DATABASE_URL
stamp=$(date +%s)

echo "== database: $DATABASE_URL"
"$APPLYOPS" migrate

echo "== creating three rollouts"
for file in rolling.toml barrier.json parallel.toml; do
    sed "s/@STAMP@/$stamp/" "demo/$file" >"$out/$file"
    "$APPLYOPS" create --file "$out/$file" | head -1
done
rolling=demo-rolling-$stamp
barrier=demo-barrier-$stamp
parallel=demo-parallel-$stamp

echo "== starting the example worker (4 worker threads) in the background"
"$WORKER" --database-url "$DATABASE_URL" --workers 4 --step-ms 400 --lease-ttl-ms 5000 \
    --revert-window 2000 --fail-once ap-south >"$out/workers.log" 2>&1 &
workers=$!
operator=
cleanup() {
    kill -INT "$workers" 2>/dev/null || true
    wait "$workers" 2>/dev/null || true
    if [ -n "$operator" ]; then
        kill "$operator" 2>/dev/null || true
        wait "$operator" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# The operator: retry the failed deployment, cut the barrier rollout over, skip one revert window.
(
    set -e
    "$APPLYOPS" wait "$parallel" --deployment ap-south --state failed --timeout "$DEMO_TIMEOUT"
    "$APPLYOPS" retry "$parallel" --deployment ap-south --by demo-operator \
        --reason "transient failure"
    for deployment in us-east us-west eu-central; do
        "$APPLYOPS" wait "$barrier" --deployment "$deployment" --state waiting_for_cutover \
            --timeout "$DEMO_TIMEOUT"
    done
    "$APPLYOPS" cutover "$barrier" --by demo-operator --reason "all deployments at the barrier"
    "$APPLYOPS" wait "$barrier" --deployment us-east --state revert_window --timeout "$DEMO_TIMEOUT"
    # On a busy machine the 2-second window may close before the request is recorded: then
    # us-east has completed on its own, which is what skipping would have done.
    "$APPLYOPS" skip-revert "$barrier" --deployment us-east --by demo-operator \
        --reason "checked after the cutover: nothing to revert" ||
        "$APPLYOPS" wait "$barrier" --deployment us-east --state completed --timeout 5
) >"$out/operator.log" 2>&1 &
operator=$!

# A worker that could not start (a missing binary, a bad URL) fails the demo now, with its log,
# rather than after DEMO_TIMEOUT of watching nothing move.
sleep 1
if ! kill -0 "$workers" 2>/dev/null; then
    echo "the example worker exited at once; its log ($out/workers.log):"
    cat "$out/workers.log"
    exit 1
fi

echo "== watching until the applies settle"
"$APPLYOPS" watch "$rolling" "$barrier" "$parallel" --interval-ms 300 --timeout "$DEMO_TIMEOUT"
wait "$operator"
operator=
echo
echo "== what the operator did (target/demo/operator.log)"
cat "$out/operator.log"
echo
echo "== applyops applies"
"$APPLYOPS" applies
for apply in "$rolling" "$barrier" "$parallel"; do
    "$APPLYOPS" wait "$apply" --state completed --timeout 1 >/dev/null
done
echo
echo "all three rollouts completed; inspect with: DATABASE_URL=$DATABASE_URL $APPLYOPS status $parallel"
