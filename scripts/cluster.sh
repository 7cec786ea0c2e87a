#!/usr/bin/env bash
# A 3-node MariaDB Galera cluster on loopback, as child processes of this script, for the cluster
# tests: `scripts/cluster.sh COMMAND [ARG…]` starts the nodes, waits until all three are Synced in a
# cluster of 3, runs COMMAND with
#   CLUSTER_URLS   mysql://root@127.0.0.1:PORT for each node, comma-separated
#   CLUSTER_PIDS   each node's mariadbd pid at start, comma-separated
#   CLUSTER_DIR    the temporary directory holding the nodes: nodeN/my.cnf (a test may restart a node
#                  it killed with `mariadbd --defaults-file=…/nodeN/my.cnf`), nodeN/mysqld.pid,
#                  nodeN/error.log
# and always stops the nodes and removes the directory afterwards, also when COMMAND fails, on
# Ctrl-C or on SIGTERM (COMMAND, run in a session of its own, is stopped first). Exits with
# COMMAND's status.
#
# Each node: its own datadir under a fresh temp dir, ports picked free at start (client, Galera
# replication, IST, SST), a 64 MB buffer pool and a 32 MB gcache, rsync SST. The first node
# bootstraps the cluster; the other two join it by SST.
set -euo pipefail

MARIADBD=${MARIADBD:-/usr/sbin/mariadbd}
PROVIDER=${GALERA_PROVIDER:-/usr/lib/galera/libgalera_smm.so}
NODES=3

dir=$(mktemp -d "${TMPDIR:-/tmp}/applyops-cluster.XXXXXX")
pids=()
# The nodes run as `mysql` when this script runs as root: rsync SST's daemon on a joiner drops root
# privileges and could not write a root-owned datadir.
run_as=$(id -un)
if [ "$(id -u)" = 0 ] && id mysql >/dev/null 2>&1; then
    run_as=mysql
fi

command_pid=
stop_nodes() {
    local status=$?
    trap - EXIT INT TERM
    # COMMAND runs in its own session: stop all of it (a test binary blocked on a node included).
    if [ -n "$command_pid" ] && kill -0 "$command_pid" 2>/dev/null; then
        kill -TERM -- "-$command_pid" 2>/dev/null || true
        sleep 1
        kill -KILL -- "-$command_pid" 2>/dev/null || true
    fi
    # The nodes started here, and any a test restarted (their pid files name them).
    for n in $(seq 1 $NODES); do
        if [ -s "$dir/node$n/mysqld.pid" ]; then
            pids+=("$(cat "$dir/node$n/mysqld.pid")")
        fi
    done
    for n in $(seq 1 $NODES); do
        if [ -n "${port[$n]:-}" ]; then
            mysqladmin --no-defaults -uroot -h127.0.0.1 -P"${port[$n]}" --connect-timeout=2 shutdown \
                >/dev/null 2>&1 || true
        fi
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        for n in $(seq 1 $NODES); do
            echo "---- node $n error log (last 30 lines) ----" >&2
            tail -30 "$dir/node$n/error.log" >&2 2>/dev/null || true
        done
    fi
    if [ -n "${CLUSTER_KEEP_DIR:-}" ]; then
        echo "cluster: kept $dir" >&2
    else
        rm -rf "$dir"
    fi
    exit "$status"
}
trap stop_nodes EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A TCP port on 127.0.0.1 that nothing listens on and that this script has not handed out yet.
taken=" "
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        case "$taken" in *" $p "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            taken="$taken$p "
            echo "$p"
            return
        fi
    done
}

declare -a port gport iport sport
for n in $(seq 1 $NODES); do
    port[$n]=$(free_port)
    gport[$n]=$(free_port)
    iport[$n]=$(free_port)
    sport[$n]=$(free_port)
done
members=""
for n in $(seq 1 $NODES); do
    members="$members${members:+,}127.0.0.1:${gport[$n]}"
done

for n in $(seq 1 $NODES); do
    node="$dir/node$n"
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

chmod 755 "$dir"
chown -R "$run_as" "$dir"

# Only the bootstrap node needs system tables; the joiners receive everything by SST.
mariadb-install-db --defaults-file="$dir/node1/my.cnf" --auth-root-authentication-method=normal \
    --skip-test-db --user="$run_as" >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; exit 1; }

start_node() {
    local n=$1
    shift
    "$MARIADBD" --defaults-file="$dir/node$n/my.cnf" "$@" >>"$dir/node$n/error.log" 2>&1 &
    pids+=("$!")
}

# The value of a status variable on node n ("" while the node does not answer).
status_of() {
    mysql --no-defaults -uroot -h127.0.0.1 -P"${port[$1]}" -N -B --connect-timeout=2 \
        -e "SHOW GLOBAL STATUS LIKE '$2'" 2>/dev/null | cut -f2
}

wait_synced() {
    local n=$1 want_size=$2
    for _ in $(seq 1 300); do
        if [ "$(status_of "$n" wsrep_local_state_comment)" = Synced ] &&
            [ "$(status_of "$n" wsrep_cluster_size)" -ge "$want_size" ] 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "cluster: node $n did not reach Synced in a cluster of $want_size" >&2
    return 1
}

start_node 1 --wsrep-new-cluster
wait_synced 1 1
for n in $(seq 2 $NODES); do
    start_node "$n"
    wait_synced "$n" "$n"
done
for n in $(seq 1 $NODES); do
    wait_synced "$n" $NODES
done

urls=""
for n in $(seq 1 $NODES); do
    urls="$urls${urls:+,}mysql://root@127.0.0.1:${port[$n]}"
done
pid_list=$(IFS=,; echo "${pids[*]}")
echo "cluster: $NODES nodes synced: $urls (pids $pid_list)"

set +e
CLUSTER_URLS=$urls CLUSTER_PIDS=$pid_list CLUSTER_DIR=$dir setsid "$@" &
command_pid=$!
wait "$command_pid"
status=$?
command_pid=
set -e
exit "$status"
