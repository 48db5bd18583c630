#!/usr/bin/env bash
# A throwaway PostgreSQL database for one test run.
#
#   scripts/pg-test-db.sh              create onecard_test_<timestamp>_<pid>, print its SQLAlchemy URL
#   scripts/pg-test-db.sh drop NAME    drop it again (NAME or the URL printed by create)
#   scripts/pg-test-db.sh prune        drop every onecard_test_* database (leftovers of killed runs)
#
# The server is the machine's own (127.0.0.1:5432, trust auth). If it is not accepting
# connections, the first local cluster is started with pg_ctlcluster; if it still is not, this
# fails loudly. The role is the first of $ONECARD_PG_USER, postgres, root, test that can log in
# and create databases. Only the URL goes to stdout; messages go to stderr.
#
# Overrides: ONECARD_PG_HOST (127.0.0.1), ONECARD_PG_PORT (5432), ONECARD_PG_USER.
set -euo pipefail

HOST="${ONECARD_PG_HOST:-127.0.0.1}"
PORT="${ONECARD_PG_PORT:-5432}"
PREFIX="onecard_test_"

say() { printf 'pg-test-db: %s\n' "$*" >&2; }
die() {
    printf 'pg-test-db: ERROR: %s\n' "$*" >&2
    exit 1
}

for tool in pg_isready psql createdb dropdb; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' not found: install the PostgreSQL client (apt-get install postgresql-client)"
done

ensure_server() {
    if pg_isready -q -h "$HOST" -p "$PORT"; then
        return 0
    fi
    say "no server accepting connections at $HOST:$PORT; trying to start the local cluster"
    local version
    # shellcheck disable=SC2012  # cluster versions are plain numbers
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | head -n 1 || true)"
    [[ -n "$version" ]] ||
        die "PostgreSQL is not running at $HOST:$PORT and no cluster exists under /etc/postgresql"
    command -v pg_ctlcluster >/dev/null 2>&1 || die "pg_ctlcluster not found (postgresql-common)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 ||
        say "pg_ctlcluster $version main start returned non-zero"
    local i
    for ((i = 0; i < 60; i++)); do
        if pg_isready -q -h "$HOST" -p "$PORT"; then
            say "PostgreSQL $version/main is up"
            return 0
        fi
        sleep 0.5
    done
    die "PostgreSQL is still not accepting connections at $HOST:$PORT after starting $version/main (see /var/log/postgresql/)"
}

# Prints the first role that logs in without a password and may create databases.
find_role() {
    local candidates=() role db ok
    [[ -n "${ONECARD_PG_USER:-}" ]] && candidates+=("$ONECARD_PG_USER")
    candidates+=(postgres root test)
    for role in "${candidates[@]}"; do
        for db in postgres template1 test; do
            ok="$(psql -X -w -h "$HOST" -p "$PORT" -U "$role" -d "$db" -Atqc \
                "select rolsuper or rolcreatedb from pg_roles where rolname = current_user" \
                2>/dev/null || true)"
            if [[ "$ok" == "t" ]]; then
                printf '%s\n' "$role"
                return 0
            fi
        done
    done
    die "no role among ${candidates[*]} can log in to $HOST:$PORT without a password and create databases"
}

psql_admin() {
    psql -X -w -v ON_ERROR_STOP=1 -h "$HOST" -p "$PORT" -U "$ROLE" -d postgres -Atq "$@"
}

drop_db() {
    local name="${1##*/}" # accepts the URL printed by create, too
    name="${name%%\?*}"
    [[ "$name" == "$PREFIX"* ]] || die "refusing to drop '$name': not a ${PREFIX}* database"
    # --force ends connections a crashed test left open (PostgreSQL 13+).
    dropdb -w -h "$HOST" -p "$PORT" -U "$ROLE" --if-exists --force "$name"
    say "dropped $name"
}

ensure_server
ROLE="$(find_role)"

case "${1:-create}" in
create)
    name="${PREFIX}$(date +%Y%m%d%H%M%S)_$$"
    createdb -w -h "$HOST" -p "$PORT" -U "$ROLE" "$name" || die "createdb $name failed"
    say "created $name (role $ROLE)"
    printf 'postgresql+psycopg://%s@%s:%s/%s\n' "$ROLE" "$HOST" "$PORT" "$name"
    ;;
drop)
    [[ $# -ge 2 ]] || die "usage: $0 drop NAME"
    drop_db "$2"
    ;;
prune)
    psql_admin -c "select datname from pg_database where datname like '${PREFIX}%'" |
        while read -r name; do
            [[ -n "$name" ]] && drop_db "$name"
        done
    ;;
*)
    die "usage: $0 [create | drop NAME | prune]"
    ;;
esac
