#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The Python binding's tests: python3 -m unittest over selftests/python/
# test_*.py, with lib/python on PYTHONPATH and the build's libkvclient.so,
# libkvkernels.so and kvmemd (each test module starts its own kvmemd on a
# private socket, cpu backend). Exits 4 (skip) without python3; the tests
# of kvmem.kernels on torch tensors skip without torch. Arguments go to
# unittest (e.g. -k prefix).
set -u
KSFT_SKIP=4

case "${KSFT_OUTPUT:-}" in
*/asan/*|*/tsan/*)
	# a sanitizer's libkvclient.so cannot be loaded into python3
	echo "# the Python binding uses the default build; skipped in sanitizer runs"
	exit $KSFT_SKIP ;;
esac
command -v python3 >/dev/null || { echo "# no python3"; exit $KSFT_SKIP; }
python3 -c 'import sys; sys.exit(sys.version_info < (3, 7))' ||
	{ echo "# python3 older than 3.7"; exit $KSFT_SKIP; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=${TOP:-$(cd "$here/../.." && pwd)}
if [ -n "${KVMEM_BUILD:-}" ]; then
	build=$KVMEM_BUILD
elif [ -n "${KSFT_OUTPUT:-}" ]; then
	build=${KSFT_OUTPUT%/selftests/*}
else
	build=$top/build
fi
for f in libkvclient.so libkvkernels.so daemon/kvmemd; do
	[ -e "$build/$f" ] || { echo "not ok: $build/$f is missing: run make"; exit 1; }
done

export KVMEM_BUILD=$build
export KVMEM_LIBKVCLIENT=$build/libkvclient.so
export KVMEM_LIBKVKERNELS=$build/libkvkernels.so
export KVMEM_KVMEMD=$build/daemon/kvmemd
if [ -e "$build/libkvkernels_cuda.so" ]; then
	export KVMEM_LIBKVKERNELS_CUDA=$build/libkvkernels_cuda.so
fi
export PYTHONPATH=$top/lib/python${PYTHONPATH:+:$PYTHONPATH}
export PYTHONDONTWRITEBYTECODE=1
unset KVMEM_SOCKET

python3 -c 'import torch' >/dev/null 2>&1 &&
	echo "# torch found: the kernels' tensor tests run" ||
	echo "# no torch: the kernels' tensor tests skip"
cd "$here" || exit 1
exec python3 -m unittest discover -s "$here" -t "$here" -p 'test_*.py' -v "$@"
