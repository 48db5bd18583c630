#!/usr/bin/env bash
# What `make test` (and so CI) runs. Every step runs even when an earlier one failed, so the log
# is complete; the exit status is non-zero if any step failed. A summary block closes the log.
#
#   1. ruff check, ruff format --check, mypy (platform, keys, device_agents.protocol), lint-imports
#   2. pytest, whole suite on SQLite (ONECARD_TEST_DATABASE_URL unset; tests use tmp SQLite files)
#   3. pytest again on PostgreSQL: a fresh database from scripts/pg-test-db.sh, dropped on exit
#
# Services the tests need (Mosquitto, pcscd, ...) are started by the tests' fixtures, not here.
# pytest's exit code 5 ("no tests ran") counts as a failure.
#
# Usage: scripts/run-tests.sh [--lint-only]
# Environment: VENV (.venv), PYTEST_ADDOPTS (extra pytest options, read by pytest itself),
#              ONECARD_PYTEST_TIMEOUT (seconds per pytest pass, default 2400; CI has 90 min).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT="$PWD"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
ARTIFACTS="$ROOT/test-artifacts"
PYTEST_TIMEOUT="${ONECARD_PYTEST_TIMEOUT:-2400}"
LINT_ONLY=0
[[ "${1:-}" == "--lint-only" ]] && LINT_ONLY=1

if [[ ! -x "$PY" ]]; then
    echo "run-tests: no virtualenv at $VENV — run 'make install' first" >&2
    exit 2
fi
export PATH="$ROOT/$VENV/bin:$PATH"
mkdir -p "$ARTIFACTS"

STEP_NAMES=()
STEP_RESULTS=()
STEP_TIMES=()
STEP_NOTES=()
TOTAL_PASSED=0
TOTAL_FAILED=0
TOTAL_SKIPPED=0

header() {
    printf '\n==================== %s ====================\n' "$1"
}

record() { # name result seconds note
    STEP_NAMES+=("$1")
    STEP_RESULTS+=("$2")
    STEP_TIMES+=("$3")
    STEP_NOTES+=("$4")
}

# run_step NAME CMD...: run a command under a header and record PASS/FAIL.
run_step() {
    local name="$1" started rc
    shift
    header "$name"
    printf '$ %s\n' "$(printf '%q ' "$@")"
    started=$SECONDS
    "$@"
    rc=$?
    if ((rc == 0)); then
        record "$name" PASS $((SECONDS - started)) ""
    else
        record "$name" FAIL $((SECONDS - started)) "exit $rc"
    fi
}

existing() { # print those of the given paths that exist
    local p
    for p in "$@"; do [[ -e "$p" ]] && printf '%s\n' "$p"; done
}

count_of() { # count_of WORD-REGEX SUMMARY: sum of the "N word" figures in a pytest summary line
    grep -oE "[0-9]+ ($1)\b" <<<"$2" | awk '{ n += $1 } END { print n + 0 }'
}

# run_pytest NAME LOGNAME [ENV=VALUE...] -- [PYTEST ARGS...]
run_pytest() {
    local name="$1" logname="$2" started rc summary note envs=()
    shift 2
    while [[ $# -gt 0 && "$1" != "--" ]]; do
        envs+=("$1")
        shift
    done
    shift
    local log="$ARTIFACTS/pytest-$logname.log"
    local cmd=("$PY" -m pytest -q --durations=10 --junitxml="$ARTIFACTS/junit-$logname.xml" "$@")
    header "$name"
    printf '$ %s\n' "$(printf '%q ' "${envs[@]}" "${cmd[@]}")"
    started=$SECONDS
    env -u ONECARD_TEST_DATABASE_URL "${envs[@]}" \
        timeout --foreground -s INT -k 60 "$PYTEST_TIMEOUT" "${cmd[@]}" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    # pytest's closing line, e.g. "3 failed, 120 passed, 2 skipped in 41.20s" (with -q: no "=").
    summary="$(grep -E '^(=+ )?([0-9]+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed|warnings?)|no tests ran)' "$log" |
        tail -n 1 | sed -E 's/^=+ //; s/ =+$//')"
    TOTAL_PASSED=$((TOTAL_PASSED + $(count_of 'passed' "$summary")))
    TOTAL_FAILED=$((TOTAL_FAILED + $(count_of 'failed|errors?' "$summary")))
    TOTAL_SKIPPED=$((TOTAL_SKIPPED + $(count_of 'skipped' "$summary")))
    [[ -n "$summary" ]] || summary="no summary line (see $log)"
    case "$rc" in
    0) note="$summary" ;;
    5) note="no tests ran (pytest exit 5)" ;;
    124) note="timed out after ${PYTEST_TIMEOUT}s; $summary" ;;
    *) note="exit $rc; $summary" ;;
    esac
    if ((rc == 0)); then
        record "$name" PASS $((SECONDS - started)) "$note"
    else
        record "$name" FAIL $((SECONDS - started)) "$note"
    fi
}

summary_and_exit() {
    local i failed=0
    header "summary"
    for i in "${!STEP_NAMES[@]}"; do
        printf '%-4s  %-28s %5ss  %s\n' "${STEP_RESULTS[$i]}" "${STEP_NAMES[$i]}" \
            "${STEP_TIMES[$i]}" "${STEP_NOTES[$i]}"
        [[ "${STEP_RESULTS[$i]}" == PASS ]] || failed=$((failed + 1))
    done
    echo
    if ((failed)); then
        echo "RESULT: FAIL ($failed of ${#STEP_NAMES[@]} steps failed)"
    else
        echo "RESULT: PASS (all ${#STEP_NAMES[@]} steps)"
    fi
    if ((!LINT_ONLY)); then
        echo "total: $TOTAL_PASSED passed, $TOTAL_FAILED failed, $TOTAL_SKIPPED skipped"
    fi
    if ((failed)); then exit 1; fi
    exit 0
}

# ---------------------------------------------------------------------------------------------
# 1. static checks
mapfile -t LINT_PATHS < <(existing src tests bench)
# STYLE.md §16: mypy covers platform, keys and device_agents.protocol (once it exists).
mapfile -t TYPED_PATHS < <(existing src/onecard/platform src/onecard/keys \
    src/onecard/device_agents/protocol src/onecard/device_agents/protocol.py)
run_step "ruff check" ruff check "${LINT_PATHS[@]}"
run_step "ruff format --check" ruff format --check "${LINT_PATHS[@]}"
run_step "mypy" mypy "${TYPED_PATHS[@]}"
run_step "import contracts" lint-imports

if ((LINT_ONLY)); then
    summary_and_exit
fi

# Marker expressions only name markers that pyproject.toml registers (--strict-markers makes
# an unknown name in -m an error).
REGISTERED_MARKERS="$("$PY" -m pytest --markers 2>/dev/null || true)"
has_marker() { grep -q "^@pytest.mark.$1:" <<<"$REGISTERED_MARKERS"; }

# ---------------------------------------------------------------------------------------------
# 2. pytest on SQLite
SQLITE_ARGS=()
if has_marker postgres_only; then SQLITE_ARGS=(-m "not postgres_only"); fi
run_pytest "pytest (SQLite)" sqlite -- "${SQLITE_ARGS[@]}"

# ---------------------------------------------------------------------------------------------
# 3. pytest on PostgreSQL
PG_ARGS=()
if has_marker sqlite_only; then PG_ARGS=(-m "not sqlite_only"); fi
PG_URL=""
drop_pg() {
    if [[ -n "$PG_URL" ]]; then
        bash scripts/pg-test-db.sh drop "$PG_URL" || true
        PG_URL=""
    fi
}
trap drop_pg EXIT
trap 'drop_pg; exit 130' INT TERM

header "PostgreSQL test database"
if PG_URL="$(bash scripts/pg-test-db.sh)"; then
    echo "ONECARD_TEST_DATABASE_URL=$PG_URL"
    run_pytest "pytest (PostgreSQL)" postgres ONECARD_TEST_DATABASE_URL="$PG_URL" -- "${PG_ARGS[@]}"
    drop_pg
else
    PG_URL=""
    record "pytest (PostgreSQL)" FAIL 0 "could not create a test database (see above)"
fi

summary_and_exit
