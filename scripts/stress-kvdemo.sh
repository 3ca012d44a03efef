#!/usr/bin/env bash
# kvdemo --check against kvmemd on many small pools, one client and then
# several at once: the stress that found ADMIT's min watermark, reclaim's
# uncounted evictions, the idle reserve and the two-client deadlock
# (Documentation/kvdemo.md); then clients killed mid-run beside others,
# and clients while kvmemctl changes the tunables under them. Each run
# must pass --check, and after each shape kvmemd (its clients gone, its
# prefix cache dropped) must hold every device frame free again. Prints a
# line per failure and a count; exits 1 when any run failed. Asserts
# nothing about time.
#
# Usage: stress-kvdemo.sh BUILD_DIR [SEEDS]   (SEEDS per shape, default 3)
set -u
b=$1
seeds=${2:-3}
d=$(mktemp -d /tmp/kvmem-stress-XXXXXX)
pid=
tuner=
fails=0
runs=0
model=(--dim 64 --ffn 128 --vocab 128 -q)
cleanup() {
	[ -n "$tuner" ] && kill "$tuner" 2>/dev/null
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$d"
}
trap cleanup EXIT

# start DEV HOST SWAP DTYPE: a kvmemd whose default pool has those arenas;
# the runner's own group administers it (the tuned part sets tunables and
# drops caches, which only admins may)
start() {
	rm -f "$d/sock" "$d/swap"
	cat >"$d/conf" <<EOF
pool.default.layers = 4
pool.default.kv_heads = 4
pool.default.head_dim = 64
pool.default.block_tokens = 16
pool.default.dtype = $4
pool.default.device_mem = $1
pool.default.host_mem = $2
pool.default.swap_mem = $3
socket.path = $d/sock
swap.path = $d/swap
admin.group = $(id -gn)
EOF
	"$b/daemon/kvmemd" -c "$d/conf" >"$d/kvmemd.log" 2>&1 &
	pid=$!
	for _ in $(seq 200); do [ -S "$d/sock" ] && break; sleep 0.05; done
}

# stop WHAT: the pool whole again (clients reaped, cache dropped), then stop
stop() {
	local m free total
	for _ in $(seq 100); do
		m=$("$b/daemon/kvmemctl" -s "$d/sock" meminfo 2>&1)
		[ "$(awk '/^Sequences:/ { print $2 }' <<<"$m")" = 0 ] && break
		sleep 0.05
	done
	"$b/daemon/kvmemctl" -s "$d/sock" prefix drop >/dev/null 2>&1
	m=$("$b/daemon/kvmemctl" -s "$d/sock" meminfo 2>&1)
	free=$(awk '/^DeviceFree:/ { print $2 }' <<<"$m")
	total=$(awk '/^DeviceTotal:/ { print $2 }' <<<"$m")
	if [ -z "$total" ] || [ "$free" != "$total" ]; then
		echo "FAIL $1: device tier ${free:-?}/${total:-?} kB free afterwards"
		fails=$((fails + 1))
	fi
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	pid=
}

# one WHAT LOG: count a kvdemo run whose exit status is in $?
one() {
	local rc=$?
	runs=$((runs + 1))
	if [ "$rc" != 0 ]; then
		echo "FAIL $1: rc $rc: $(grep -m2 -E 'STEP of|stopped after|differ' "$2" | tr '\n' ' ')"
		fails=$((fails + 1))
	fi
}

# clients WHAT SEED0 N: four kvdemo --check of N requests at once (seeds
# SEED0 + 1..4), each counted
clients() {
	local c pids=()
	for c in 1 2 3 4; do
		"$b/daemon/kvdemo" -s "$d/sock" -S $(($2 + c)) -n "$3" -b 6 --check "${model[@]}" \
			>"$d/out$c" 2>&1 &
		pids+=($!)
	done
	for c in 1 2 3 4; do
		wait "${pids[$((c - 1))]}"
		one "$1, client $c" "$d/out$c"
	done
}

for dev in 256K 384K 640K 1M; do
	for host in 0 128K 512K; do
		for swap in 0 4M; do
			for dt in fp16 int8 int4; do
				what="device $dev host $host swap $swap $dt"
				start "$dev" "$host" "$swap" "$dt"
				for s in $(seq "$seeds"); do
					"$b/daemon/kvdemo" -s "$d/sock" -S "$s" -n 40 -b $((1 + 5 * s)) \
						--check "${model[@]}" >"$d/out" 2>&1
					one "$what seed $s" "$d/out"
				done
				stop "$what"
			done
		done
	done
done

# several clients at once on one pool
for dev in 512K 1M 2M; do
	for host in 0 256K; do
		for dt in fp16 int8; do
			what="device $dev host $host $dt, 4 clients"
			start "$dev" "$host" 4M "$dt"
			clients "$what" 0 20
			stop "$what"
		done
	done
done

# a client killed (SIGKILL) at a random moment beside one that must finish:
# the daemon reaps the dead one's sequences and pins, and the pool is whole
kills=0
for dev in 384K 1M; do
	for dt in fp16 int8 int4; do
		what="device $dev host 128K swap 4M $dt, a client killed"
		start "$dev" 128K 4M "$dt"
		for s in $(seq "$seeds"); do
			RANDOM=$s
			"$b/daemon/kvdemo" -s "$d/sock" -S $((100 + s)) -n 40 -b 6 "${model[@]}" \
				>"$d/victim" 2>&1 &
			victim=$!
			"$b/daemon/kvdemo" -s "$d/sock" -S $((200 + s)) -n 20 -b 4 --check \
				"${model[@]}" >"$d/out" 2>&1 &
			survivor=$!
			sleep "0.$((10 + RANDOM % 60))"
			kill -KILL "$victim" 2>/dev/null
			wait "$victim" 2>/dev/null
			[ $? = 137 ] && kills=$((kills + 1))	# not one that had finished
			wait "$survivor"
			one "$what, seed $s" "$d/out"
		done
		stop "$what"
	done
done

# tuned live: four clients while the tunables change under them and the
# caches are dropped and checkpointed (kvmemctl, as a sysadmin would); every
# kvmemctl command must succeed, every client pass, the pool be whole
ctl() {
	"$b/daemon/kvmemctl" -s "$d/sock" "$@" >"$d/ctl" 2>&1 ||
		echo "kvmemctl $*: $(head -1 "$d/ctl")" >>"$d/ctlfail"
}
# tune SEED: until $d/untune exists or $d is gone (bash reseeds RANDOM in
# a subshell)
tune() {
	RANDOM=$1
	while [ -d "$d" ] && [ ! -e "$d/untune" ]; do
		case $((RANDOM % 6)) in
		0) ctl sysctl vm.min_free_kbytes=$((RANDOM % 33)) ;;
		1) ctl sysctl vm.watermark_scale_factor=$((1 + RANDOM % 3000)) ;;
		2) ctl sysctl vm.reclaim_batch=$((1 + RANDOM % 256)) ;;
		3) ctl drop-caches ;;
		4) ctl prefix drop ;;
		*) ctl checkpoint ;;
		esac
		sleep "0.0$((1 + RANDOM % 5))"
	done
}
tuned=0
for dev in 512K 1M; do
	for dt in fp16 int8; do
		what="device $dev host 256K swap 4M $dt, tuned live"
		start "$dev" 256K 4M "$dt"
		: >"$d/ctlfail"
		rm -f "$d/untune"
		tune 7 &
		tuner=$!
		clients "$what" 300 40
		touch "$d/untune"	# its last command ends before stop()
		wait "$tuner"
		tuner=
		if [ -s "$d/ctlfail" ]; then
			echo "FAIL $what: $(head -2 "$d/ctlfail" | tr '\n' ' ')"
			fails=$((fails + 1))
		fi
		tuned=$((tuned + 1))
		stop "$what"
	done
done

echo "$runs kvdemo runs, $fails failed ($kills clients killed mid-run, $tuned pools tuned live)"
[ "$fails" = 0 ]
