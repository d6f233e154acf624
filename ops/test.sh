#!/usr/bin/env bash
# The test command: installs the pinned tools, then runs every test of the workspace
# (unit tests, spec round trips, and system tests against real nats-server processes).
#
# Usage: ops/test.sh [extra cargo test args]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
"$ROOT/ops/setup.sh" >&2
export PATH="$ROOT/.tools/bin:$PATH"
cd "$ROOT"
cargo build --workspace --bins --quiet
cargo test --workspace "$@"
