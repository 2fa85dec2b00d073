#!/usr/bin/env bash
# Run a command in a fresh memory cgroup (v1) and print its wall time and the peak memory of
# the command with all its children together (RSS + page cache), which per-process RSS
# figures cannot give for forked workers sharing pages.
#   scripts/peak_memory.sh qac build --log ... --out ...
set -euo pipefail
cg=/sys/fs/cgroup/memory/qac-peak-$$
mkdir "$cg"
trap 'rmdir "$cg" 2>/dev/null || true' EXIT
start=$(date +%s.%N)
( echo $BASHPID > "$cg/cgroup.procs"; exec "$@" )
end=$(date +%s.%N)
peak=$(cat "$cg/memory.max_usage_in_bytes")
python3 -c 'import sys; s, e, p = map(float, sys.argv[1:]); print(f"wall {e - s:.1f} s, peak memory {p / 2**20:.0f} MB (command and children, cgroup)", file=sys.stderr)' "$start" "$end" "$peak"
