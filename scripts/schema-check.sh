#!/usr/bin/env bash
# Fails when src/schema.rs disagrees with the MySQL migrations, or when the diesel CLI's migration
# workflow is not clean.
#
# Works on a scratch copy of diesel.toml, migrations/mysql and src/schema.rs (the diesel CLI rewrites
# print_schema.file after every revert and run; the working tree is never touched), against a fresh,
# uniquely named MySQL database that is dropped afterwards:
#   1. `diesel database setup --locked-schema`: every migration runs, and diesel errors if the schema it
#      prints differs from the committed src/schema.rs;
#   2. `diesel migration redo`, `revert`, `revert --all`, `run`, `redo --all` and `print-schema` must
#      each succeed without printing an error (in particular no "Failed to apply patch");
#   3. after them, the regenerated schema and `print-schema`'s output must equal src/schema.rs again.
#
# Server: SCHEMA_CHECK_SERVER, else TEST_DATABASE_URL, else mysql://root@127.0.0.1:3306 (any database
# path in the URL is ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

server="${SCHEMA_CHECK_SERVER:-${TEST_DATABASE_URL:-mysql://root@127.0.0.1:3306}}"
re='^(mysql://([^:@/]+)(:([^@/]*))?@([^:/?]+)(:([0-9]+))?)'
if [[ ! "$server" =~ $re ]]; then
  echo "schema-check: expected a mysql://user[:password]@host[:port] server URL, got a different form" >&2
  exit 2
fi
server="${BASH_REMATCH[1]}"
user="${BASH_REMATCH[2]}" password="${BASH_REMATCH[4]}" host="${BASH_REMATCH[5]}" port="${BASH_REMATCH[7]:-3306}"
db="applyops_schema_check_$$_$(date +%s)"
url="$server/$db"
work="$(mktemp -d)"

cleanup() {
  rm -rf "$work"
  if command -v mysql >/dev/null 2>&1; then
    MYSQL_PWD="$password" mysql -u"$user" -h"$host" -P"$port" -e "DROP DATABASE IF EXISTS \`$db\`" || true
  else
    echo "schema-check: no mysql client to drop $db; drop it by hand" >&2
  fi
}
trap cleanup EXIT

mkdir -p "$work/src" "$work/migrations"
cp diesel.toml "$work/"
cp src/schema.rs "$work/src/"
cp -R migrations/mysql "$work/migrations/"

# Runs `diesel <args>` on the scratch copy, echoing its output; fails on a non-zero exit or on output
# that reports an error.
step() {
  local out status=0
  echo "schema-check: diesel $*"
  out="$(cd "$work" && diesel "$@" --config-file "$work/diesel.toml" --database-url "$url" 2>&1)" || status=$?
  [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/  /'
  if [ "$status" -ne 0 ]; then
    echo "schema-check: diesel $* exited with status $status" >&2
    exit 1
  fi
  if grep -qiE 'failed to apply patch|error' <<<"$out"; then
    echo "schema-check: diesel $* reported an error" >&2
    exit 1
  fi
}

step database setup --locked-schema
echo "schema-check: src/schema.rs matches the MySQL migrations"

step migration redo
step migration revert
step migration revert --all
step migration run
step migration redo --all
if ! cmp -s "$work/src/schema.rs" "$repo/src/schema.rs"; then
  echo "schema-check: after revert --all and run, diesel regenerated a different src/schema.rs:" >&2
  diff -u "$repo/src/schema.rs" "$work/src/schema.rs" >&2 || true
  exit 1
fi
printed="$(cd "$work" && diesel print-schema --config-file "$work/diesel.toml" --database-url "$url")"
if [ "$printed" != "$(cat "$repo/src/schema.rs")" ]; then
  echo "schema-check: diesel print-schema differs from src/schema.rs" >&2
  exit 1
fi
echo "schema-check: diesel migration run, redo, revert, revert --all, redo --all and print-schema are clean"
