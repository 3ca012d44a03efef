#!/usr/bin/env bash
# The main job: kvmemd with its default configuration, a client doing real
# work through it (kvclient-demo), then what kvmemctl shows, then a clean
# shutdown. Usage: run-demo.sh BUILD_DIR
set -eu
b=$1
d=$(mktemp -d /tmp/kvmem-run-XXXXXX)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	rm -rf "$d"
}
trap cleanup EXIT

echo "== kvmemd (built-in default configuration), socket $d/kvmemd.sock"
: >"$d/kvmemd.conf"	# empty: every key at its default, whatever /etc holds
"$b/daemon/kvmemd" -c "$d/kvmemd.conf" -s "$d/kvmemd.sock" 2>"$d/kvmemd.log" &
pid=$!
for _ in $(seq 200); do [ -S "$d/kvmemd.sock" ] && break; sleep 0.05; done
if [ ! -S "$d/kvmemd.sock" ]; then
	cat "$d/kvmemd.log"
	exit 1
fi
export KVMEM_SOCKET=$d/kvmemd.sock
echo "== kvmm-demo: the mm core on its own"
"$b/mm/kvmm-demo" | sed -n '1,4p;/requests served/p'
echo "== kvclient-demo: a client of kvmemd"
"$b/daemon/kvclient-demo"
echo "== kvmemctl pools"
"$b/daemon/kvmemctl" pools
echo "== kvmemctl topology"
"$b/daemon/kvmemctl" topology
echo "== kvmemctl vmstat"
"$b/daemon/kvmemctl" vmstat
echo "== kvmemctl prefix"
"$b/daemon/kvmemctl" prefix
kill "$pid"
wait "$pid"
pid=
echo "== kvmemd stopped cleanly; its log:"
cat "$d/kvmemd.log"
