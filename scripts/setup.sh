#!/usr/bin/env bash
# Set up a development environment from a fresh checkout: a virtualenv in .venv with the
# project (editable) and its test extras. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# kfp==2.17.0 is pinned in pyproject.toml (see TOOLCHAIN notes); pip resolves the rest.
.venv/bin/python -m pip install --quiet --editable ".[test]"
echo "ready: .venv ($(.venv/bin/python --version))"
