#!/usr/bin/env bash
# Swap tier throughput: fio (where installed), then bench-swap, on the same
# O_DIRECT file at the same block sizes and queue depths; bench-swap prints
# kvmem's and fio's numbers side by side with their ratios. Asserts nothing
# about time.
#
# Usage: bench-swap.sh BUILD_DIR [bench-swap options...]
#   The file is $TMPDIR/kvmem-bench-swap (/var/tmp without TMPDIR), removed
#   at exit. Environment: SIZE_MIB file size (default 1024), RUNTIME fio
#   seconds per point (1), FIO_FIXED=0 skips fio's second pass with
#   --fixedbufs --registerfiles (the mode kvmem's io_uring engine runs in).
set -eu
b=$1
shift
dir=${TMPDIR:-/var/tmp}
file=$dir/kvmem-bench-swap
size_mib=${SIZE_MIB:-1024}
runtime=${RUNTIME:-1}
bench=$b/mm/bench-swap
work=$(mktemp -d "${TMPDIR:-/tmp}/kvmem-bench-swap.XXXXXX")
cleanup() {
	rm -f "$file"
	rm -rf "$work"
}
trap cleanup EXIT

echo "== machine: $(nproc) CPUs, kernel $(uname -r); the swap file's file system:"
df -T "$dir" | sed 's/^/   /'

# fio_point RW BS QD ENGINE [fio options]: fio's bandwidth in GB/s (1e9 bytes).
fio_point() {
	local rw=$1 bs=$2 qd=$3 engine=$4 json=$work/fio.json
	shift 4
	fio --name=kvmem-swap-"$rw" --filename="$file" --rw="$rw" --bs="$bs" \
		--iodepth="$qd" --ioengine="$engine" --direct=1 --size="${size_mib}M" \
		--runtime="$runtime" --time_based --group_reporting "$@" \
		--output-format=json --output="$json" >"$work/fio.log" 2>&1 || return 1
	python3 - "$json" "$rw" <<-'EOF'
	import json, sys
	text = open(sys.argv[1]).read()
	job = json.loads(text[text.index('{'):])['jobs'][0]
	side = 'write' if sys.argv[2] == 'write' else 'read'
	print('%.4f' % (job[side]['bw_bytes'] / 1e9))
	EOF
}

fio_failed() {
	echo "   fio $* failed:"
	tail -3 "$work/fio.log" | sed 's/^/   /'
}

# run_fio RESULTS: every point, plain and (io_uring) with fixed buffers.
run_fio() {
	local res=$1 engine=io_uring ok=0 bs bytes rw qd gbps
	if ! fio --enghelp=io_uring >/dev/null 2>&1; then
		engine=libaio
		echo "== fio has no io_uring engine: ioengine=libaio, no fixed-buffer pass"
	fi
	for bs in 256K 1M 2M; do
		case $bs in
		*M) bytes=$(( ${bs%M} * 1048576 )) ;;
		*K) bytes=$(( ${bs%K} * 1024 )) ;;
		esac
		for rw in write randread; do
			for qd in 1 8 32; do
				if ! gbps=$(fio_point "$rw" "$bs" "$qd" "$engine") &&
				   [ "$engine" = io_uring ] && [ "$ok" = 0 ]; then
					echo "== fio: io_uring refused here; ioengine=libaio," \
						"no fixed-buffer pass:"
					tail -3 "$work/fio.log" | sed 's/^/   /'
					engine=libaio
					gbps=$(fio_point "$rw" "$bs" "$qd" "$engine") || gbps=
				fi
				if [ -z "$gbps" ]; then
					fio_failed "$rw bs=$bs iodepth=$qd"
					continue
				fi
				ok=1
				echo "$rw $bytes $qd $gbps" >>"$res"
				if [ "$engine" != io_uring ] || [ "${FIO_FIXED:-1}" = 0 ]; then
					continue
				fi
				if gbps=$(fio_point "$rw" "$bs" "$qd" "$engine" \
					  --fixedbufs --registerfiles); then
					echo "$rw+fixed $bytes $qd $gbps" >>"$res"
				else
					fio_failed "$rw bs=$bs iodepth=$qd --fixedbufs --registerfiles"
				fi
			done
		done
	done
	echo "engine $engine" >>"$res"
}

"$bench" -p -s "$size_mib" "$file"
fio_args=()
if ! command -v fio >/dev/null 2>&1; then
	echo "== fio is not installed: the fio columns are absent (apt-get install fio)"
elif ! command -v python3 >/dev/null 2>&1; then
	echo "== python3 is not installed (it reads fio's JSON): the fio columns are absent"
else
	echo "== $(fio --version): --runtime=$runtime per point"
	: >"$work/fio.txt"
	run_fio "$work/fio.txt"
	fio_args=(-F "$work/fio.txt")
fi
echo "== kvmem bench-swap"
"$bench" -s "$size_mib" ${fio_args[@]+"${fio_args[@]}"} "$@" "$file"
