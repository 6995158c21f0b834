#!/usr/bin/env bash
# Runs the whole test suite. Exits non-zero on any failure, and when no test ran.
set -uo pipefail
cd "$(dirname "$0")/.."
# Unused or undefined names and import order first: a second, not a CI run wasted on a typo.
.venv/bin/ruff check --quiet . || exit 1
.venv/bin/python -m pytest -ra "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests — treating that as a failure" >&2
  exit 1
fi
exit "$status"
