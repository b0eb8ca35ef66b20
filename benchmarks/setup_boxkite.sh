#!/usr/bin/env bash
# The original boxkite library, for side-by-side benchmarks, in its own virtual environment
# (it pins numpy < 2).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .bench/boxkite
.bench/boxkite/bin/python -m pip install -q boxkite 'numpy<2'
