#!/usr/bin/env bash
# Run a command in a fresh memory cgroup (v1) and print its wall time and the peak memory of
# the command with all its children together (RSS + page cache), which per-process RSS
# figures cannot give for forked workers sharing pages; also, where a cpuacct cgroup (v1)
# can be made, the CPU time (user + system) of the command and all its children.
#   scripts/peak_memory.sh qac build --log ... --out ...
set -euo pipefail
cg=/sys/fs/cgroup/memory/qac-peak-$$
cpu=/sys/fs/cgroup/cpuacct/qac-peak-$$
mkdir "$cg"
mkdir "$cpu" 2>/dev/null || cpu=
trap 'rmdir "$cg" $cpu 2>/dev/null || true' EXIT
start=$(date +%s.%N)
( echo $BASHPID > "$cg/cgroup.procs"; [ -z "$cpu" ] || echo $BASHPID > "$cpu/cgroup.procs"; exec "$@" )
end=$(date +%s.%N)
peak=$(cat "$cg/memory.max_usage_in_bytes")
used=$([ -z "$cpu" ] || cat "$cpu/cpuacct.usage")
python3 -c 'import sys; s, e, p = map(float, sys.argv[1:4]); c = f", cpu {float(sys.argv[4]) / 1e9:.1f} s" if sys.argv[4] else ""; print(f"wall {e - s:.1f} s, peak memory {p / 2**20:.0f} MB{c} (command and children, cgroup)", file=sys.stderr)' "$start" "$end" "$peak" "$used"
