#!/usr/bin/env bash
# The main job, in two parts, each with a kvmemd of its own and a clean
# shutdown at the end:
#
# 1. kvmemd with its default configuration (an empty file: every key at
#    its built-in default, whatever /etc holds) and kvclient-demo, a client
#    decoding 64 requests through it (fork, copy-on-write, reclaim, the
#    prefix cache, every token checked); kvmemctl pools and topology.
# 2. kvmemd with the demo configuration (daemon/demo/kvdemo.conf: the
#    default pool's geometry in small arenas, plus a swap file, so that a
#    2-core machine sees reclaim and swap within seconds) and kvdemo, a
#    small transformer serving a stream of requests through it with every
#    step's logits checked; kvmemctl meminfo, vmstat and prefix.
#
# Usage: run-demo.sh BUILD_DIR. KVDEMO_ARGS adds options to kvdemo's (e.g.
# KVDEMO_ARGS="--requests 400").
set -eu
b=$1
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
d=$(mktemp -d /tmp/kvmem-run-XXXXXX)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	rm -rf "$d"
}
trap cleanup EXIT

# start_kvmemd CONF: run kvmemd on $d/kvmemd.sock with CONF, wait for it.
start_kvmemd() {
	rm -f "$d/kvmemd.sock"
	"$b/daemon/kvmemd" -c "$1" -s "$d/kvmemd.sock" 2>"$d/kvmemd.log" &
	pid=$!
	for _ in $(seq 200); do [ -S "$d/kvmemd.sock" ] && break; sleep 0.05; done
	if [ ! -S "$d/kvmemd.sock" ]; then
		cat "$d/kvmemd.log"
		exit 1
	fi
	export KVMEM_SOCKET=$d/kvmemd.sock
}

# stop_kvmemd: SIGTERM, a clean exit, its log.
stop_kvmemd() {
	kill "$pid"
	wait "$pid"
	pid=
	echo "== kvmemd stopped cleanly; its log:"
	cat "$d/kvmemd.log"
}

echo "== 1. kvmemd (built-in default configuration), socket $d/kvmemd.sock"
: >"$d/default.conf"
start_kvmemd "$d/default.conf"
echo "== kvclient-demo: a client of kvmemd"
"$b/daemon/kvclient-demo"
echo "== kvmemctl pools"
"$b/daemon/kvmemctl" pools
echo "== kvmemctl topology"
"$b/daemon/kvmemctl" topology
stop_kvmemd

echo
echo "== 2. kvmemd -c daemon/demo/kvdemo.conf (+ a swap file in $d)"
cp "$top/daemon/demo/kvdemo.conf" "$d/kvdemo.conf"
printf 'swap.path = %s\n' "$d/swap" >>"$d/kvdemo.conf"
start_kvmemd "$d/kvdemo.conf"
echo "== kvdemo --check: a transformer serving requests through kvmemd"
# shellcheck disable=SC2086
"$b/daemon/kvdemo" --check ${KVDEMO_ARGS:-}
echo "== kvmemctl meminfo"
"$b/daemon/kvmemctl" meminfo
echo "== kvmemctl vmstat"
"$b/daemon/kvmemctl" vmstat
echo "== kvmemctl prefix"
"$b/daemon/kvmemctl" prefix
stop_kvmemd
