#!/usr/bin/env bash
# Fails when src/schema.rs disagrees with the MySQL migrations.
#
# Runs every migration with the diesel CLI on a fresh, uniquely named MySQL database with
# --locked-schema: diesel regenerates the schema (print-schema + src/schema.patch) and errors if the
# result differs from the committed src/schema.rs. The database is dropped afterwards.
#
# Server: SCHEMA_CHECK_SERVER, else TEST_DATABASE_URL, else mysql://root@127.0.0.1:3306 (any database
# path in the URL is ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

server="${SCHEMA_CHECK_SERVER:-${TEST_DATABASE_URL:-mysql://root@127.0.0.1:3306}}"
re='^(mysql://([^:@/]+)(:([^@/]*))?@([^:/?]+)(:([0-9]+))?)'
if [[ ! "$server" =~ $re ]]; then
  echo "schema-check: expected a mysql://user[:password]@host[:port] server URL, got a different form" >&2
  exit 2
fi
server="${BASH_REMATCH[1]}"
user="${BASH_REMATCH[2]}" password="${BASH_REMATCH[4]}" host="${BASH_REMATCH[5]}" port="${BASH_REMATCH[7]:-3306}"
db="applyops_schema_check_$$_$(date +%s)"

drop_database() {
  if command -v mysql >/dev/null 2>&1; then
    MYSQL_PWD="$password" mysql -u"$user" -h"$host" -P"$port" -e "DROP DATABASE IF EXISTS \`$db\`" || true
  else
    echo "schema-check: no mysql client to drop $db; drop it by hand" >&2
  fi
}
trap drop_database EXIT

diesel database setup --locked-schema --database-url "$server/$db"
echo "schema-check: src/schema.rs matches the MySQL migrations"
