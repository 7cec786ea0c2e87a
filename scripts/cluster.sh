#!/usr/bin/env bash
# A 3-node MariaDB Galera cluster on loopback, as child processes of this script, for the cluster
# tests: `scripts/cluster.sh COMMAND [ARG…]` starts the nodes, waits until all three are Synced in a
# cluster of 3, runs COMMAND with
#   CLUSTER_URLS   mysql://root@127.0.0.1:PORT for each node, comma-separated
#   CLUSTER_PIDS   each node's mariadbd pid at start, comma-separated
#   CLUSTER_DIR    the temporary directory holding the nodes: nodeN/start (restarts node N, which a
#                  test killed, with this script's settings; prints its pid), nodeN/my.cnf,
#                  nodeN/mysqld.pid, nodeN/error.log, and memory.log (see below)
# and always stops the nodes and removes the directory afterwards, also when COMMAND fails, on
# Ctrl-C or on SIGTERM (COMMAND, run in a session of its own, is stopped first). Exits with
# COMMAND's status.
#
# Each node: its own datadir under a fresh temp dir, a 64 MB buffer pool, a 32 MB gcache, rsync SST.
# The first node bootstraps the cluster; the other two join it by SST.
#
# Ports. Every port a node listens on (client, Galera replication, IST, SST) is picked below 32768,
# outside the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768–60999 here), and checked
# free with `ss`: a port from the ephemeral range can be taken by any outgoing connection between
# the check and the node's bind (seen: "Failed to listen: bind: Address already in use" on a gcomm
# port, and an SST whose rsync daemon could not bind). Should a start fail all the same, the nodes'
# logs are printed (their SST lines and the joiner's rsync daemon log included) and the cluster is
# started again on new ports, up to CLUSTER_START_ATTEMPTS times (3).
#
# Memory. Every 2 s each node's RSS, `Memory_used` and gcache page files are appended to
# CLUSTER_DIR/memory.log; the peak RSS per node is printed when the nodes stop, and the last samples
# when COMMAND fails. CLUSTER_NODE_ENV (e.g. "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
# MALLOC_CONF=prof:true,prof_gdump:true,prof_prefix:/tmp/jeprof/node") is set in the nodes'
# environment: that is how the nodes' growth to 0.5–6.6 GB was traced to InnoDB's purge of indexes
# on VIRTUAL generated columns (see migrations/mysql/2026-12-07-000001_stored_generated_columns).
set -euo pipefail

MARIADBD=${MARIADBD:-/usr/sbin/mariadbd}
PROVIDER=${GALERA_PROVIDER:-/usr/lib/galera/libgalera_smm.so}
NODES=3
ATTEMPTS=${CLUSTER_START_ATTEMPTS:-3}
# free_port: below the ephemeral range, checked free.
. "$(dirname "$0")/lib/servers.sh"

dir=$(mktemp -d "${TMPDIR:-/tmp}/applyops-cluster.XXXXXX")
pids=()
sampler_pid=
# The nodes run as `mysql` when this script runs as root: rsync SST's daemon on a joiner drops root
# privileges and could not write a root-owned datadir.
run_as=$(id -un)
if [ "$(id -u)" = 0 ] && id mysql >/dev/null 2>&1; then
    run_as=mysql
fi

declare -a port gport iport sport

# Every node process: those started here and any a test restarted (their pid files name them).
node_pids() {
    local n
    printf '%s\n' "${pids[@]}"
    for n in $(seq 1 $NODES); do
        [ -s "$dir/node$n/mysqld.pid" ] && cat "$dir/node$n/mysqld.pid"
    done
    return 0
}

# Stops every node (shutdown, then SIGKILL after 10 s) and forgets them.
stop_all_nodes() {
    local n pid
    for n in $(seq 1 $NODES); do
        if [ -n "${port[$n]:-}" ]; then
            mysqladmin --no-defaults -uroot -h127.0.0.1 -P"${port[$n]}" --connect-timeout=2 shutdown \
                >/dev/null 2>&1 || true
        fi
    done
    for pid in $(node_pids | sort -u); do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$pid" 2>/dev/null || true
        # Its session: an SST script or rsync daemon it left behind.
        kill -9 -- "-$pid" 2>/dev/null || true
    done
    # Anything else still running from this cluster's directory (a node a test restarted outside a
    # session of its own, and its SST children).
    pkill -KILL -f -- "$dir/" 2>/dev/null || true
    pids=()
}

# The nodes' error logs (their last lines), every SST line in them, and the joiners' rsync daemon
# logs: what a failed start or a failed run needs to be understood.
print_node_logs() {
    local n
    for n in $(seq 1 $NODES); do
        echo "---- node $n error log (last 30 lines) ----" >&2
        tail -30 "$dir/node$n/error.log" >&2 2>/dev/null || true
        if grep -q 'SST' "$dir/node$n/error.log" 2>/dev/null; then
            echo "---- node $n SST lines ----" >&2
            grep -E 'SST|sst|rsync' "$dir/node$n/error.log" | tail -40 >&2 || true
        fi
        if [ -s "$dir/node$n/tmp/rsyncd.log" ]; then
            echo "---- node $n rsync daemon log (joiner side of an SST) ----" >&2
            tail -20 "$dir/node$n/tmp/rsyncd.log" >&2 || true
        fi
    done
}

# Peak RSS per node over the run, from the sampler's log.
print_peak_memory() {
    [ -s "$dir/memory.log" ] || return 0
    awk '{ for (i = 2; i <= NF; i++) { split($i, f, ":"); if (f[2] > peak[f[1]]) peak[f[1]] = f[2] } }
         END { line = "cluster: peak RSS per node (MB):"; for (n = 1; n <= 3; n++) line = line " node" n "=" int(peak["node" n] / 1024); print line }' \
        "$dir/memory.log" >&2
}

command_pid=
command_ran=
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # COMMAND runs in its own session: stop all of it (a test binary blocked on a node included).
    stop_session "$command_pid"
    if [ -n "$sampler_pid" ]; then
        kill "$sampler_pid" 2>/dev/null || true
    fi
    stop_all_nodes
    print_peak_memory
    if [ "$status" -ne 0 ] && [ -n "$command_ran" ]; then
        print_node_logs
        if [ -s "$dir/memory.log" ]; then
            echo "---- memory samples (last 10: node:RSS kB:Memory_used kB:gcache pages) ----" >&2
            tail -10 "$dir/memory.log" >&2
        fi
    fi
    if [ -n "${CLUSTER_KEEP_DIR:-}" ]; then
        echo "cluster: kept $dir" >&2
    else
        rm -rf "$dir"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

write_configs() {
    local n node members=""
    for n in $(seq 1 $NODES); do
        free_port "port[$n]"
        free_port "gport[$n]"
        free_port "iport[$n]"
        free_port "sport[$n]"
    done
    for n in $(seq 1 $NODES); do
        members="$members${members:+,}127.0.0.1:${gport[$n]}"
    done
    for n in $(seq 1 $NODES); do
        node="$dir/node$n"
        rm -rf "$node"
        mkdir -p "$node/data" "$node/tmp"
        cat >"$node/my.cnf" <<EOF
[mysqld]
datadir=$node/data
tmpdir=$node/tmp
socket=$node/mysqld.sock
pid-file=$node/mysqld.pid
log-error=$node/error.log
port=${port[$n]}
bind-address=127.0.0.1
skip-name-resolve
user=$run_as
performance_schema=OFF
max_connections=400
innodb_buffer_pool_size=64M
innodb_log_file_size=32M
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
wsrep_on=ON
wsrep_provider=$PROVIDER
wsrep_cluster_name=applyops_test_$$
wsrep_cluster_address=gcomm://$members
wsrep_node_name=node$n
wsrep_node_address=127.0.0.1:${gport[$n]}
wsrep_provider_options="base_host=127.0.0.1;base_port=${gport[$n]};ist.recv_addr=127.0.0.1:${iport[$n]};gcache.size=32M;gcache.page_size=32M"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:${sport[$n]}
wsrep_slave_threads=2
EOF
    done
    for n in $(seq 1 $NODES); do
        write_start_script "$n"
    done
    chmod 755 "$dir"
    chown -R "$run_as" "$dir"
}

# Writes nodeN/start: starts node N in the background with this cluster's settings, in a session
# of its own (so that stopping it stops what it started too: the SST scripts and rsync daemons it
# runs as children), and prints its pid. A test that killed a node restarts it with this script.
write_start_script() {
    local n=$1 env="${CLUSTER_NODE_ENV:-}"
    cat >"$dir/node$n/start" <<START
#!/bin/sh
${env:+env $env }setsid "$MARIADBD" --defaults-file="$dir/node$n/my.cnf" "\$@" >>"$dir/node$n/error.log" 2>&1 &
echo \$!
START
    chmod 755 "$dir/node$n/start"
}

start_node() {
    local n=$1 pid
    shift
    pid=$("$dir/node$n/start" "$@")
    pids+=("$pid")
}

# The value of a status variable on node n ("" while the node does not answer).
status_of() {
    mysql --no-defaults -uroot -h127.0.0.1 -P"${port[$1]}" -N -B --connect-timeout=2 \
        -e "SHOW GLOBAL STATUS LIKE '$2'" 2>/dev/null | cut -f2
}

# Waits up to 90 s until node n is Synced in a cluster of at least want_size; fails at once when
# the node's process has exited.
wait_synced() {
    local n=$1 want_size=$2 pid=${pids[$(($1 - 1))]}
    for _ in $(seq 1 450); do
        if [ "$(status_of "$n" wsrep_local_state_comment)" = Synced ] &&
            [ "$(status_of "$n" wsrep_cluster_size)" -ge "$want_size" ] 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "cluster: node $n exited before it was Synced" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "cluster: node $n did not reach Synced in a cluster of $want_size within 90 s" >&2
    return 1
}

# One attempt: fresh datadirs and ports, node 1 bootstraps, nodes 2 and 3 join by SST.
start_cluster() {
    local n
    write_configs
    # Only the bootstrap node needs system tables; the joiners receive everything by SST.
    mariadb-install-db --defaults-file="$dir/node1/my.cnf" --auth-root-authentication-method=normal \
        --skip-test-db --user="$run_as" >"$dir/install.log" 2>&1 || {
        cat "$dir/install.log" >&2
        return 1
    }
    start_node 1 --wsrep-new-cluster
    wait_synced 1 1 || return 1
    for n in $(seq 2 $NODES); do
        start_node "$n"
        wait_synced "$n" "$n" || return 1
    done
    for n in $(seq 1 $NODES); do
        wait_synced "$n" $NODES || return 1
    done
}

# Appends "EPOCH nodeN:RSS_KB:MEMORY_USED_KB:GCACHE_PAGES …" to memory.log every 2 s, for as long as
# the script runs (a node that does not answer is sampled as 0).
sample_memory() {
    set +e
    local n pid rss used pages line
    while :; do
        line=$(date +%s)
        for n in $(seq 1 $NODES); do
            pid=$(cat "$dir/node$n/mysqld.pid" 2>/dev/null)
            rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/${pid:-0}/status" 2>/dev/null)
            used=$(status_of "$n" Memory_used)
            pages=$(find "$dir/node$n/data" -maxdepth 1 -name 'gcache.page.*' 2>/dev/null | wc -l)
            line="$line node$n:${rss:-0}:$(((${used:-0}) / 1024)):$pages"
        done
        echo "$line" >>"$dir/memory.log"
        sleep 2
    done
}

attempt=1
until start_cluster; do
    print_node_logs
    stop_all_nodes
    if [ "$attempt" -ge "$ATTEMPTS" ]; then
        echo "cluster: the nodes did not form a cluster in $ATTEMPTS attempts" >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    echo "cluster: start failed; attempt $attempt of $ATTEMPTS on new ports" >&2
done

urls=""
for n in $(seq 1 $NODES); do
    urls="$urls${urls:+,}mysql://root@127.0.0.1:${port[$n]}"
done
pid_list=$(IFS=,; echo "${pids[*]}")
echo "cluster: $NODES nodes synced: $urls (pids $pid_list)"

sample_memory &
sampler_pid=$!
disown "$sampler_pid"

set +e
command_ran=1
CLUSTER_URLS=$urls CLUSTER_PIDS=$pid_list CLUSTER_DIR=$dir setsid "$@" &
command_pid=$!
wait "$command_pid"
status=$?
command_pid=
set -e
exit "$status"
