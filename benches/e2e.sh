#!/usr/bin/env bash
# Runs every end-to-end benchmark of docs/BENCHMARKS.md, one after another,
# and prints their markdown tables with the machine's load before and after
# each (other work on a shared machine skews the figures: note it).
#
#   cargo build --release --bins && benches/e2e.sh 1000 10000 > results.md
#
# Arguments: the object counts to run (default: 1000 10000).
set -euo pipefail
cd "$(dirname "$0")/.."
bench="${CARGO_TARGET_DIR:-target}/release/driftwarden-bench"
counts=("${@:-1000 10000}")
read -r -a counts <<<"${counts[*]}"

run() {
  echo "### driftwarden-bench $*"
  echo
  echo "load before: $(uptime | sed 's/.*load average/load average/')"
  echo
  "$bench" "$@"
  echo
  echo "load after: $(uptime | sed 's/.*load average/load average/')"
  echo
}

for n in "${counts[@]}"; do
  runs=3
  [ "$n" -ge 5000 ] && runs=1
  run steady --objects "$n"
  run kubectl-diff --objects "$n" --runs "$runs"
  run detection --objects "$n"
  run revert --objects "$n"
  run window-end --objects "$n"
done
run expiry --grants 1000
