#!/usr/bin/env bash
# Set up a development environment from a fresh checkout: a virtualenv in .venv with the
# project (editable) and its test extras. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The browser tests (tests/ui) drive Debian's Chromium (never `playwright install`): install it
# when this is a Debian machine we are root on; otherwise say how.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    echo "note: no chromium; the browser tests need it (apt-get install -y chromium)" >&2
  fi
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# kfp==2.17.0 is pinned in pyproject.toml (see TOOLCHAIN notes); pip resolves the rest.
.venv/bin/python -m pip install --quiet --editable ".[test]"
echo "ready: .venv ($(.venv/bin/python --version))"
