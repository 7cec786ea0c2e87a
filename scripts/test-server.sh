#!/usr/bin/env bash
# `scripts/test-server.sh COMMAND [ARG…]`: runs COMMAND (make test's cargo commands) against a
# MySQL-family server for the tests, chosen once for the whole run, in this order:
#   1. TEST_DATABASE_URL, when set (a `mysql://user:password@host:port` server URL);
#   2. a server at 127.0.0.1:3306 that lets root in without a password;
#   3. a Docker engine: the tests start a MySQL 8 container themselves (testcontainers);
#   4. a private MariaDB started here for this run: a temp datadir, a free loopback port below
#      32768, stopped and removed afterwards, also when COMMAND fails, on Ctrl-C or on SIGTERM.
#      `make test` installs mariadb-server first when it is missing (Debian, as root).
# One line says which server the run uses. When none can be had, one message says what to do and
# COMMAND never runs. Exits with COMMAND's status.
#
# TEST_SERVER=private skips 1–3 (how CI checks 4 on a machine that has a server at 3306).
set -euo pipefail

MARIADBD=${MARIADBD:-/usr/sbin/mariadbd}
. "$(dirname "$0")/lib/servers.sh"

CLIENT=$(command -v mariadb || command -v mysql || true)
ADMIN=$(command -v mariadb-admin || command -v mysqladmin || true)

say() { echo "test server: $*" >&2; }

# The URL with its password replaced by ***: never print a password. Everything between the user
# name's colon and the last @ goes, so a password holding / or @ goes whole.
redacted() { sed -E 's#^([[:space:]]*[A-Za-z0-9+.-]+://[^:@/]*):.*@#\1:***@#' <<<"$1"; }

# Whether a server lets user $1 in (password in MYSQL_PWD, if any); the rest of the arguments say
# where (-h, -P, --socket, --protocol).
lets_in() {
    "$CLIENT" --no-defaults -u"$1" "${@:2}" --connect-timeout=3 -N -B -e 'SELECT 1' >/dev/null 2>&1
}

# `percent_decode VAR TEXT`: sets VAR to TEXT with each %XX turned into its byte, nothing else
# interpreted (a backslash stays a backslash, a trailing line break stays).
percent_decode() {
    local escaped=${2//\\/\\\\}
    printf -v "$1" '%b' "${escaped//%/\\x}"
}

# mysql://user[:password]@host[:port][/db][?unix_socket=PATH…]: whether that server lets that
# user in, reached as the tests' client library reaches it (localhost through the Unix socket,
# an IPv6 address in brackets, a unix_socket option). The user part ends at the last @, so a
# password may hold / ? or @.
url_lets_in() {
    local rest userinfo=root after query=  user pass= host port socket where=()
    rest=${1#*://}
    after=$rest
    case "$rest" in *@*) userinfo=${rest%@*}; after=${rest##*@} ;; esac
    case "$after" in *\?*) query=${after#*\?} ;; esac
    after=${after%%[/?]*}
    percent_decode user "${userinfo%%:*}"
    case "$userinfo" in *:*) percent_decode pass "${userinfo#*:}" ;; esac
    case "$after" in
        \[*) host=${after#[}; host=${host%%]*}; port=${after##*]}; port=${port#:} ;;
        *:*) host=${after%:*}; port=${after##*:} ;;
        *) host=$after; port= ;;
    esac
    where=(-h"$host" -P"${port:-3306}")
    [ "$host" = localhost ] || where+=(--protocol=TCP)
    case "&$query" in *'&unix_socket='*)
        socket=${query#*unix_socket=}
        percent_decode socket "${socket%%&*}"
        where+=(--socket="$socket") ;;
    esac
    MYSQL_PWD=$pass lets_in "$user" "${where[@]}"
}

no_server() {
    cat >&2 <<'MSG'
test server: no MySQL server for the tests, and none could be started here. Provide one of:
  - TEST_DATABASE_URL=mysql://USER:PASSWORD@HOST:PORT (a user allowed to CREATE and DROP DATABASE);
  - MariaDB or MySQL on 127.0.0.1:3306 for root with an empty password;
  - a running Docker engine (the tests start a MySQL 8 container);
  - MariaDB's server binaries (Debian: apt-get install mariadb-server, which `make test` runs as
    root), so that this script can start a private server for the run.
No test was run.
MSG
    exit 1
}

run() {
    set +e
    "$@"
    status=$?
    set -e
    exit "$status"
}

mode=${TEST_SERVER:-auto}
if [ "$mode" != private ]; then
    if [ -n "${TEST_DATABASE_URL:-}" ]; then
        # Checked with the mariadb/mysql client when there is one (the tests' own check follows).
        if [ -n "$CLIENT" ] && ! url_lets_in "$TEST_DATABASE_URL"; then
            say "TEST_DATABASE_URL=$(redacted "$TEST_DATABASE_URL") is set but does not let its user in; no test was run"
            exit 1
        fi
        say "TEST_DATABASE_URL ($(redacted "$TEST_DATABASE_URL"))"
        run "$@"
    fi
    if [ -n "$CLIENT" ] && lets_in root -h127.0.0.1 -P3306 --protocol=TCP; then
        say "the server at 127.0.0.1:3306 (root)"
        TEST_DATABASE_URL=mysql://root@127.0.0.1:3306 run "$@"
    fi
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        say "a MySQL 8 container the tests start (Docker engine found, nothing at 127.0.0.1:3306)"
        run "$@"
    fi
fi

[ -x "$MARIADBD" ] && [ -n "$CLIENT" ] && command -v mariadb-install-db >/dev/null 2>&1 || no_server

# 4. A private server for this run.
dir=$(mktemp -d "${TMPDIR:-/tmp}/applyops-test-server.XXXXXX")
server_pid=
command_pid=
command_ran=
cleanup() {
    local status=$?
    # A second Ctrl-C while the server shuts down must not leave it running: ignored from here.
    trap '' INT TERM
    trap - EXIT
    # A signal between starting the server and recording its pid: its pid file names it.
    [ -n "$server_pid" ] || server_pid=$(cat "$dir/mysqld.pid" 2>/dev/null || true)
    # COMMAND runs in a session of its own: stop all of it (cargo and the test binaries).
    stop_session "$command_pid"
    if [ -n "$server_pid" ]; then
        "${ADMIN:-false}" --no-defaults --socket="$dir/mysqld.sock" -uroot --connect-timeout=2 shutdown \
            >/dev/null 2>&1 || kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        say "private server stopped"
    fi
    if [ "$status" -ne 0 ] && [ -s "$dir/error.log" ] && [ -z "$command_ran" ]; then
        echo "---- private server error log (last 20 lines) ----" >&2
        tail -20 "$dir/error.log" >&2
    fi
    rm -rf "$dir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

user=$(id -un)
mariadb-install-db --no-defaults --datadir="$dir/data" --user="$user" \
    --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 || {
    cat "$dir/install.log" >&2
    say "mariadb-install-db failed; no test was run"
    exit 1
}

# Up to three ports: a port found free can still be taken before the server binds it.
for attempt in 1 2 3; do
    free_port port
    # Its own session: Ctrl-C in the terminal reaches COMMAND and this script, not the server,
    # which the cleanup above shuts down in order.
    setsid "$MARIADBD" --no-defaults --datadir="$dir/data" --socket="$dir/mysqld.sock" \
        --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" --port="$port" \
        --bind-address=127.0.0.1 --skip-name-resolve --user="$user" --skip-log-bin \
        --performance-schema=OFF --max-connections=400 --innodb-buffer-pool-size=256M \
        --innodb-flush-log-at-trx-commit=2 --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_general_ci </dev/null >/dev/null 2>&1 &
    server_pid=$!
    for _ in $(seq 1 300); do
        lets_in root -h127.0.0.1 -P"$port" --protocol=TCP && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    lets_in root -h127.0.0.1 -P"$port" --protocol=TCP && break
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    echo "---- private server error log (last 10 lines) ----" >&2
    tail -10 "$dir/error.log" >&2 || true
    if [ "$attempt" = 3 ]; then
        say "the private MariaDB did not start in 3 attempts; no test was run"
        exit 1
    fi
    say "the private MariaDB did not start on port $port; trying another port"
done

say "a private MariaDB for this run, mysql://root@127.0.0.1:$port (pid $server_pid, $dir; stopped afterwards)"
set +e
command_ran=1
TEST_DATABASE_URL=mysql://root@127.0.0.1:$port setsid "$@" &
command_pid=$!
wait "$command_pid"
status=$?
command_pid=
set -e
exit "$status"
