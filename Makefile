# applyops developer commands. `make test` is the one CI runs; it installs what it needs first.
#
#   make demo          see it work: three rollouts driven by four workers on an embedded SQLite database
#                      (no server), with an operator's retry and cutover, shown by `applyops watch`;
#                      `make demo DATABASE_URL=sqlite:///tmp/d.db` keeps the database to inspect
#   make test          install missing system packages, then run the whole suite against a MySQL
#                      server: TEST_DATABASE_URL, else 127.0.0.1:3306, else Docker, else a private
#                      MariaDB started for the run (scripts/test-server.sh); and a PostgreSQL
#                      server: TEST_POSTGRES_URL, else postgres@127.0.0.1:5432
#   make test-no-server  check make test's private server where nothing listens: a few MySQL tests
#                      in a network namespace of their own (needs root), nothing left running after
#   make cluster-test  start a 3-node MariaDB Galera cluster on loopback (child processes, temp
#                      datadirs), run tests/cluster.rs against it, always stop it
#   make lint          rustfmt check + clippy with -D warnings
#   make check-features  each backend alone: check, clippy and unit tests with only `sqlite`, only
#                      `mysql` and only `postgres`; no mysqlclient-sys in the SQLite-only dependency
#                      tree, no pq-sys in the SQLite-only or MySQL-only one
#   make schema-check  fail when src/schema.rs disagrees with the MySQL migrations or the diesel CLI
#                      workflow (run, redo, revert, revert --all, print-schema) reports an error
#   make migrate       run migrations on DATABASE_URL (default sqlite://applyops.db)
#   make doc           build the rustdoc (warnings are errors)
#   make man           the man pages, generated from the command line's own definitions (clap):
#                      target/man/applyops.1 and one per command (applyops-create.1…); read one
#                      with `man -l target/man/applyops.1`
#   make bench         measure the pool's test_on_check_out cost and applyops calls against the raw
#                      mysql crate (both reported as ratios)

SHELL := /bin/bash
CARGO ?= cargo
DATABASE_URL ?= sqlite://applyops.db
export DATABASE_URL

.PHONY: demo cluster-test cluster-deps test test-no-server lint check-features schema-check migrate doc man bench deps diesel-cli

# The MySQL client library and pkg-config are needed to build Diesel's mysql backend (mysqlclient-sys,
# our default `mysql` feature), libpq its postgres backend (pq-sys, our default `postgres` feature); libsqlite3-dev is needed by the diesel CLI's sqlite feature (the crate
# itself bundles SQLite). The tests that start a MariaDB server of their own (one whose clock reads
# another date) need MariaDB's server binaries and libfaketime.
deps:
	@missing=""; \
	command -v pkg-config >/dev/null 2>&1 || missing="$$missing pkg-config"; \
	if ! pkg-config --exists mysqlclient 2>/dev/null && ! pkg-config --exists libmariadb 2>/dev/null; then \
	  missing="$$missing default-libmysqlclient-dev"; fi; \
	pkg-config --exists sqlite3 2>/dev/null || missing="$$missing libsqlite3-dev"; \
	pkg-config --exists libpq 2>/dev/null || missing="$$missing libpq-dev"; \
	ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || missing="$$missing faketime"; \
	[ -x /usr/sbin/mariadbd ] && command -v mariadb-install-db >/dev/null 2>&1 || \
	  missing="$$missing mariadb-server"; \
	./scripts/install-packages.sh $$missing

diesel-cli: deps
	@command -v diesel >/dev/null 2>&1 || \
	  $(CARGO) install diesel_cli --locked --no-default-features --features mysql,sqlite

# DATABASE_URL only when given on the command line or in the environment (not this file's default):
# without it the demo creates target/demo/applyops-demo.db afresh.
# Only the CLI and the example worker (its own package: none of the test stack is built).
demo: deps
	$(CARGO) build -p applyops -p applyops-worker --bin applyops --bin applyops-worker
	$(if $(filter command line environment,$(origin DATABASE_URL)),DATABASE_URL='$(DATABASE_URL)',env -u DATABASE_URL) ./demo/run.sh

# Galera (galera-4), rsync for SST, and MariaDB's server binaries for the cluster's nodes.
cluster-deps: deps
	@missing=""; \
	[ -e /usr/lib/galera/libgalera_smm.so ] || missing="$$missing galera-4"; \
	command -v rsync >/dev/null 2>&1 || missing="$$missing rsync"; \
	[ -x /usr/sbin/mariadbd ] || missing="$$missing mariadb-server"; \
	command -v mariadb-install-db >/dev/null 2>&1 || missing="$$missing mariadb-server"; \
	command -v ss >/dev/null 2>&1 || missing="$$missing iproute2"; \
	./scripts/install-packages.sh $$missing

# The tests are #[ignore]d in `make test` (they need the cluster); here they run, one at a time
# (each loads the whole cluster), against nodes scripts/cluster.sh starts and always stops.
cluster-test: cluster-deps
	$(CARGO) build -p applyops-worker
	$(CARGO) test --test cluster --no-run
	WORKER_BIN=$(CURDIR)/target/debug/applyops-worker timeout --foreground 900 ./scripts/cluster.sh \
	  $(CARGO) test --test cluster -- --ignored --test-threads=1 --nocapture

# One server for the whole run, chosen (and, when none is given, started and always stopped) by
# scripts/test-server.sh, which prints one line saying which.
test: deps
	./scripts/test-server.sh bash -c '$(CARGO) test --workspace --all-targets && $(CARGO) test --doc'

# `make test`'s private server where nothing answers on 127.0.0.1:3306: a network namespace with
# only its own loopback (unshare -n, as root), and TEST_SERVER=private, since a Docker engine's
# socket is a file the namespace does not hide (and an inherited TEST_DATABASE_URL is dropped).
# The build happens outside it (the registry is out of reach inside); inside, the script must start
# its private server and the tests must pass against it; afterwards, pass or fail, no server of it
# may be left running.
test-no-server: deps
	$(CARGO) test --test it --no-run
	@status=0; \
	unshare -n env -u TEST_DATABASE_URL TEST_SERVER=private bash -c 'ip link set lo up && \
	  ./scripts/test-server.sh $(CARGO) test --offline --test it -- aggregate::mysql' || status=$$?; \
	if pgrep -f 'mariadbd.*applyops-test-serve[r]' >/dev/null; then \
	  echo "test-no-server: a private server was left running:"; \
	  pgrep -af 'mariadbd.*applyops-test-serve[r]'; exit 1; fi; \
	echo "test-no-server: nothing left running"; \
	exit $$status

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The backends are the `mysql`, `postgres` and `sqlite` features (all default): each must build,
# lint clean and pass its unit tests alone (the tests for refusing the other backends' URLs only
# exist there); a SQLite-only build must not need libmysqlclient, and neither it nor a MySQL-only
# build libpq. The integration suite needs every backend.
check-features: deps
	$(CARGO) check --no-default-features --features sqlite,cli --lib --bins
	$(CARGO) check --no-default-features --features mysql,cli --lib --bins
	$(CARGO) check --no-default-features --features postgres,cli --lib --bins
	$(CARGO) clippy --no-default-features --features sqlite,cli --lib --bins -- -D warnings
	$(CARGO) clippy --no-default-features --features mysql,cli --lib --bins -- -D warnings
	$(CARGO) clippy --no-default-features --features postgres,cli --lib --bins -- -D warnings
	$(CARGO) test --no-default-features --features sqlite --lib
	$(CARGO) test --no-default-features --features mysql --lib
	$(CARGO) test --no-default-features --features postgres --lib
	@for feature in sqlite mysql; do \
	  tree="$$($(CARGO) tree --no-default-features --features $$feature -e normal)" || exit 1; \
	  for library in mysqlclient-sys pq-sys; do \
	    [ "$$library" = mysqlclient-sys ] && [ "$$feature" = mysql ] && continue; \
	    if grep -q "$$library" <<<"$$tree"; then \
	      echo "check-features: $$library is in the $$feature-only dependency tree"; exit 1; \
	    fi; \
	  done; \
	done; \
	echo "check-features: no mysqlclient-sys in the SQLite-only tree, no pq-sys without postgres"

schema-check: diesel-cli
	./scripts/schema-check.sh

# `diesel migration run` for MySQL URLs when the diesel CLI is installed (--locked-schema: it must not
# rewrite src/schema.rs); otherwise, and for SQLite, the crate's embedded runner, without
# APPLYOPS_DATABASE_URL (which it would prefer): this target migrates DATABASE_URL.
migrate: deps
	@case "$(DATABASE_URL)" in \
	  mysql://*) if command -v diesel >/dev/null 2>&1; then \
	      diesel migration run --locked-schema --database-url "$(DATABASE_URL)"; \
	    else env -u APPLYOPS_DATABASE_URL $(CARGO) run --quiet --bin applyops -- migrate; fi ;; \
	  *) env -u APPLYOPS_DATABASE_URL $(CARGO) run --quiet --bin applyops -- migrate ;; \
	esac

doc: deps
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

# The hidden `applyops man` subcommand renders the pages from the same clap definitions as `--help`
# (no second copy of them, and no build script).
man: deps
	$(CARGO) run --quiet --bin applyops -- man --out-dir target/man

bench: deps
	$(CARGO) bench --bench pool_checkout
	$(CARGO) bench --bench floor
	$(CARGO) bench --bench claim_leases
