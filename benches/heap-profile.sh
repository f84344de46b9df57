#!/usr/bin/env bash
# Where the operator's heap goes at rest: runs `driftwarden-bench steady`
# with the operator built on glibc's malloc (heaptrack sees malloc only) and
# under heaptrack, kills it 30 s into the steady window (a SIGTERM would
# free everything first), and sums what is still allocated by owner.
#
#   benches/heap-profile.sh [OBJECTS]      # default 10000; needs heaptrack (apt)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
objects=${1:-10000}
command -v heaptrack_print >/dev/null || { apt-get update -qq && apt-get install -y -qq heaptrack zstd; }
work=$(mktemp -d)
cargo build -q --release --features system-allocator --bin driftwarden
cp target/release/driftwarden "$work/driftwarden-glibc"
cargo build -q --release --bin driftwarden --bin driftwarden-bench
cat > "$work/operator" <<WRAP
#!/bin/sh
# Keeps the pid the bench finds the operator by; the interpreter reads the pipe beside it.
mkfifo "$work/pipe"
/usr/lib/heaptrack/libexec/heaptrack_interpret < "$work/pipe" | zstd -q > "$work/heap.zst" &
LD_PRELOAD=/usr/lib/heaptrack/libheaptrack_preload.so DUMP_HEAPTRACK_OUTPUT="$work/pipe" exec "$work/driftwarden-glibc" "\$@"
WRAP
chmod +x "$work/operator"
DRIFTWARDEN_BENCH_OPERATOR="$work/operator" ./target/release/driftwarden-bench steady --objects "$objects" \
	>"$work/steady.out" 2>"$work/steady.err" &
bench=$!
until grep -q "steady state for" "$work/steady.err"; do
	kill -0 "$bench" 2>/dev/null || { cat "$work/steady.err"; exit 1; }
	sleep 2
done
sleep 30
pid=$(pgrep -f "$work/driftwarden-glibc run" | head -1)
grep -E "VmRSS" "/proc/$pid/status"
kill -9 "$pid"
sleep 5
kill "$bench" 2>/dev/null || true
heaptrack_print -f "$work/heap.zst" --print-leaks 0 --print-peaks 0 --print-allocators 0 --print-temporary 0 \
	--print-histogram 0 -F "$work/live.folded" --flamegraph-cost-type leaked | grep -E "peak heap|leaked"
python3 - "$work/live.folded" "$objects" <<'PY'
import collections, re, sys
# First matching rule names the owner of an allocation's stack.
rules = [
    ("watch caches: objects (kube-runtime reflector stores)", r"reflector..store..Writer|utils..reflect..Reflect"),
    ("which DesiredState declares each object (claims)", r"drift..claims..Claims"),
    ("the declared objects, kept (kept::Declarations)", r"kept..Declarations|drift..source"),
    ("a pass's read of the caches (read::Live)", r"drift..read"),
    ("the last pass's diffs and plan", r"drift..plan|drift..steady|ObjectDiff"),
    ("the drift controller's memory (clean_at, reverts)", r"drift..memory"),
    ("HTTP buffers (hyper, bytes)", r"hyper|bytes_mut"),
]
owners, total = collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, n = line.rsplit(" ", 1)
    n = int(n)
    total += n
    owner = next((name for name, pattern in rules if re.search(pattern, stack)), "everything else")
    owners[owner] += n
objects = int(sys.argv[2])
print(f"| live heap at rest, {objects} objects | MiB | bytes per object |")
print("|---|---:|---:|")
for owner, n in owners.most_common():
    print(f"| {owner} | {n / 2**20:.1f} | {n // objects} |")
print(f"| total | {total / 2**20:.1f} | {total // objects} |")
PY
echo "data: $work"
