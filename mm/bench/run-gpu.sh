#!/bin/bash
# SPDX-License-Identifier: MIT
#
# mm/bench/run-gpu.sh - the CUDA device tier on a GPU machine, from the
# repository root:
#
#	mm/bench/run-gpu.sh [LOGDIR]
#
# 1. builds everything (the daemon, libkvclient, the selftests, the
#    transfer benchmark; CUDA kernels where nvcc is);
# 2. runs selftests/cuda (the same tests on the cuda and the cpu backend)
#    and the daemon, prefix and swap collections, whose daemons pick the
#    cuda backend (device.backend = auto) where a GPU is usable;
# 3. runs the main job (scripts/run-demo.sh) on the GPU;
# 4. times demotion and promotion through the mm against one large copy
#    (bench-transfer) and prints its table;
# 5. times swap-in through the bounce frames of a GPU device tier against
#    the same rounds on a memfd device tier (bench-swap -g 0, 2 MiB blocks,
#    32 per call, on a 2 GiB file under $TMPDIR or /var/tmp).
# Logs go to LOGDIR (default build/gpu-logs). Exits non-zero when a test
# failed.
set -u -o pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
logs=${1:-$top/build/gpu-logs}
mkdir -p "$logs"
cd "$top"
B=$top/build
export PATH=$PATH:/usr/local/cuda/bin
rc=0

echo "== build"
make -j"$(nproc)" all "$B/mm/bench-transfer" "$B/mm/bench-swap" >"$logs/build.log" 2>&1 || {
	tail -40 "$logs/build.log"
	exit 1
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null |
	tee "$logs/gpu.txt" || true

echo "== selftests: cuda daemon prefix swap python (kvmem.hf on transformers)"
selftests/run_kselftest.sh -o "$B/selftests" -c cuda -c daemon -c prefix -c swap -c python \
	>"$logs/selftests.log" 2>&1 || rc=1
grep -E '^(ok|not ok)|^# (ok|not ok|#.*SKIP)|passed, .* failed' "$logs/selftests.log"

echo "== make run (scripts/run-demo.sh)"
scripts/run-demo.sh "$B" >"$logs/run.log" 2>&1 || rc=1
grep -E 'kvdemo|backend|GPU|cuda|^kvmemd|^  (requests|check|throughput|kvmemd|output)' "$logs/run.log" | head -30

echo "== bench-transfer"
"$B/mm/bench-transfer" 2>&1 | tee "$logs/bench-transfer.md" || rc=1

echo "== bench-swap -g 0 (swap-in through bounce frames)"
SIZE_MIB=2048 FIO_FIXED=0 RUNTIME=1 scripts/bench-swap.sh "$B" -b 2048 -d 32 -t 2 -g 0 2>&1 |
	tee "$logs/bench-swap-gpu.md" || rc=1
exit $rc
