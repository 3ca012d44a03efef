#!/bin/bash
# SPDX-License-Identifier: MIT
#
# kernels/bench/run-gpu.sh - build, check and time the CUDA kernels on a GPU
# machine, from the repository root:
#
#	kernels/bench/run-gpu.sh [-q] [LOGDIR]
#
# 1. builds the kernel libraries, the benchmark and the kernel selftests
#    (CUDA for sm_90a and sm_80);
# 2. runs the GPU selftests (CUDA against the CPU kernels) and, where
#    compute-sanitizer exists, its memcheck over a reduced sweep;
# 3. times PyTorch SDPA on contiguous KV (kernels/bench/sdpa_ref.py) and
#    the kernels, and prints the table (bench-kernels-gpu).
# -q runs a reduced set of shapes. Logs go to LOGDIR (default build/gpu-logs).
# KV_BENCH_VARIANTS="0 1 2 3" first checks (gpu_test) and times those
# decode kernel variants on the reduced set (see kv_cuda_decode_variant in
# kernels/cuda/decode.cu). KV_BENCH_FLUSH=write flushes L2 by a write
# instead of a read before each timed run (see bench-kernels-gpu -F).
set -eu -o pipefail

quick=
if [[ ${1:-} == -q ]]; then
	quick=-q
	shift
fi
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
logs=${1:-$top/build/gpu-logs}
mkdir -p "$logs"
cd "$top"
B=$top/build
flush=${KV_BENCH_FLUSH:-read}
export PATH=$PATH:/usr/local/cuda/bin

echo "== build"
make -j"$(nproc)" "$B/libkvkernels.a" "$B/libkvkernels_cuda.a" \
	"$B/kernels/bench-kernels-gpu" 2>&1 | tee "$logs/build.log" | grep -v '^  ' || true
make --no-print-directory -C selftests/kernels TOP="$top" Q=@ \
	KV_CFLAGS="-std=gnu11 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -I$top -I$top/selftests -pthread" \
	KV_LDFLAGS=-pthread KV_LIBS="$B/libkvkernels.a -lpthread -lm" \
	OUTPUT="$B/selftests/kernels" all 2>&1 | tee -a "$logs/build.log"

echo "== GPU selftests"
rc=0
(cd selftests/kernels && "$B/selftests/kernels/gpu_test") 2>&1 | tee "$logs/gpu_test.log" || rc=$?
echo "gpu_test exit $rc"
(cd selftests/kernels && "$B/selftests/kernels/gpu_quant_test") 2>&1 |
	tee "$logs/gpu_quant_test.log" || rc=$?
echo "gpu_quant_test exit $rc"
for v in ${KV_BENCH_VARIANTS:-}; do
	(cd selftests/kernels && KV_DECODE_VARIANT=$v "$B/selftests/kernels/gpu_test") \
		>"$logs/gpu_test-variant-$v.log" 2>&1 && vr=0 || vr=$?
	echo "gpu_test, decode variant $v: exit $vr ($(grep -c '^ok' "$logs/gpu_test-variant-$v.log") ok)"
	[[ $vr == 0 ]] || rc=$vr
done

if command -v compute-sanitizer >/dev/null 2>&1; then
	echo "== compute-sanitizer memcheck (reduced sweep)"
	(cd selftests/kernels && KV_TEST_SMALL=1 compute-sanitizer --tool memcheck \
		--error-exitcode 99 "$B/selftests/kernels/gpu_test") \
		>"$logs/memcheck.log" 2>&1 && mc=0 || mc=$?
	(cd selftests/kernels && KV_TEST_SMALL=1 compute-sanitizer --tool memcheck \
		--error-exitcode 99 "$B/selftests/kernels/gpu_quant_test") \
		>>"$logs/memcheck.log" 2>&1 || mc=$?
	grep -E '^(ok|not ok)|ERROR SUMMARY|Totals' "$logs/memcheck.log" || true
	echo "memcheck exit $mc"
fi

echo "== SDPA reference"
sdpa=$logs/sdpa.tsv
if python3 -c 'import torch' 2>/dev/null; then
	PYTHONUNBUFFERED=1 python3 kernels/bench/sdpa_ref.py $quick -F "$flush" >"$sdpa" \
		2>"$logs/sdpa.err" ||
		echo "sdpa_ref.py failed (see sdpa.err)"
	cat "$logs/sdpa.err"
else
	echo "no PyTorch: the table has no SDPA columns"
	: >"$sdpa"
fi

echo "== benchmark"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw --format=csv 2>/dev/null | tee "$logs/gpu.txt" || true
if [[ -n ${KV_BENCH_VARIANTS:-} ]]; then
	for v in $KV_BENCH_VARIANTS; do
		"$B/kernels/bench-kernels-gpu" -q -D -v "$v" -F "$flush" -s "$sdpa" 2>&1 |
			tee "$logs/variant-$v.md"
	done
fi
"$B/kernels/bench-kernels-gpu" $quick -F "$flush" -s "$sdpa" 2>&1 | tee "$logs/bench.md"
