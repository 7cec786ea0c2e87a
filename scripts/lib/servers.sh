# Sourced by the scripts that start servers for a command (cluster.sh, test-server.sh): picking
# the servers' ports, and stopping the command.
#
# Every port a server of ours listens on is picked below 32768, outside the kernel's ephemeral range
# (net.ipv4.ip_local_port_range, 32768–60999 on Debian), and checked free with `ss`: a port from the
# ephemeral range can be taken by any outgoing connection between the check and the server's bind.

PORT_LOW=20000
PORT_HIGH=32767
ports_handed_out=" "

# `free_port VAR`: sets VAR to a TCP port on 127.0.0.1 below the ephemeral range that no socket uses
# (listening or connected) and that this script has not handed out yet. It assigns rather than
# prints: in a `$(…)` subshell the record of ports handed out would be lost, and two servers of one
# run could be given the same port.
free_port() {
    local p
    while :; do
        p=$((PORT_LOW + RANDOM % (PORT_HIGH - PORT_LOW + 1)))
        case "$ports_handed_out" in *" $p "*) continue ;; esac
        if [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]; then
            ports_handed_out="$ports_handed_out$p "
            printf -v "$1" '%s' "$p"
            return
        fi
    done
}

# `stop_session PID`: stops a command started with `setsid COMMAND &` and everything it started
# (its session: cargo and the test binaries, say): SIGTERM, a second to finish, then SIGKILL.
# Nothing to do when it has exited.
stop_session() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
    kill -TERM -- "-$1" 2>/dev/null || true
    sleep 1
    kill -KILL -- "-$1" 2>/dev/null || true
}
