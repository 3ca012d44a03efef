#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# make install into a scratch DESTDIR, then use only what was installed:
# the daemon with the installed config, kvmemctl, and a client program
# built with pkg-config against the installed header and shared library.
set -u
KSFT_SKIP=4

case "${KSFT_OUTPUT:-}" in
*/asan/*|*/tsan/*)
	echo "# install uses the default build; skipped in sanitizer runs"
	exit $KSFT_SKIP ;;
esac
command -v pkg-config >/dev/null || { echo "# no pkg-config"; exit $KSFT_SKIP; }
unset MAKEFLAGS MAKELEVEL MFLAGS

d=$(mktemp -d /tmp/kvmem-install-XXXXXX)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$d"
}
trap cleanup EXIT
fail() { echo "not ok: $*"; exit 1; }

make -s -C "$TOP" install DESTDIR="$d/root" PREFIX=/usr >"$d/make.log" 2>&1 ||
	{ cat "$d/make.log"; fail "make install"; }
r=$d/root
for f in usr/bin/kvmemd usr/bin/kvmemctl usr/lib/libkvclient.so.1 usr/lib/libkvclient.a \
	 usr/include/kvmem/kvclient.h usr/include/kvmem/uapi/kvmem/kvmem.h \
	 usr/lib/pkgconfig/libkvclient.pc usr/share/man/man3/libkvclient.3 \
	 usr/share/man/man3/kvc_step.3 usr/share/man/man5/kvmemd.conf.5 \
	 usr/share/man/man8/kvmemd.8 usr/share/man/man8/kvmemctl.8 \
	 usr/lib/systemd/system/kvmemd.service etc/kvmemd/kvmemd.conf; do
	[ -e "$r/$f" ] || fail "missing $f"
done
grep -q '^ExecStart=/usr/bin/kvmemd' "$r/usr/lib/systemd/system/kvmemd.service" ||
	fail "unit not substituted"
echo "# installed files present"

cat >"$d/client.c" <<'C'
#include <stdio.h>
#include <kvmem/kvclient.h>

int main(int argc, char **argv)
{
	struct kvc_step_seq s = { .nr_tokens = 3 };
	const uint32_t *frames;
	struct kvc_pool *p;
	uint64_t slots[3];
	struct kvc *c;
	uint32_t nb;

	s.slots = slots;
	if (argc != 2 || kvc_connect(argv[1], &c) || kvc_pool_open(c, "default", &p) ||
	    kvc_seq_create(c, p, &s.seq) || kvc_step(c, &s, 1, 0, NULL) ||
	    kvc_block_table(c, s.seq, &frames, &nb) || nb != 1 ||
	    slots[2] != (uint64_t)frames[0] * p->geom.block_tokens + 2)
		return 1;
	printf("client ok: slot %llu\n", (unsigned long long)slots[2]);
	kvc_close(c);
	return 0;
}
C
export PKG_CONFIG_PATH=$r/usr/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$r
flags=$(pkg-config --cflags --libs libkvclient) || fail "pkg-config"
cc -std=gnu11 -Wall -Wextra -Werror -o "$d/client" "$d/client.c" $flags ||
	fail "building a client against the installed library"
echo "# client built with: $flags"

"$r/usr/bin/kvmemd" -c "$r/etc/kvmemd/kvmemd.conf" -s "$d/sock" 2>"$d/kvmemd.log" &
pid=$!
for _ in $(seq 100); do [ -S "$d/sock" ] && break; sleep 0.05; done
[ -S "$d/sock" ] || { cat "$d/kvmemd.log"; fail "installed kvmemd did not start"; }
LD_LIBRARY_PATH=$r/usr/lib "$d/client" "$d/sock" || fail "client against the installed library"
"$r/usr/bin/kvmemctl" -s "$d/sock" meminfo | grep -q '^DeviceTotal:' || fail "kvmemctl meminfo"
# the Python binding, as installed: its package and kernels, and the
# installed libkvclient (the path recorded at install time is /usr/lib's)
if command -v python3 >/dev/null; then
	py=$r/usr/lib/python3/dist-packages
	[ -e "$py/kvmem/libkvkernels.so" ] || fail "missing the kvmem package's libkvkernels.so"
	grep -q "'/usr/lib/libkvclient.so.1'" "$py/kvmem/_installed.py" ||
		fail "kvmem/_installed.py does not name /usr/lib/libkvclient.so.1"
	(cd / && PYTHONPATH=$py PYTHONDONTWRITEBYTECODE=1 \
		KVMEM_LIBKVCLIENT=$r/usr/lib/libkvclient.so.1 python3 -c '
import sys, kvmem, kvmem.kernels as K
assert kvmem.__file__.startswith(sys.argv[2]), kvmem.__file__
with kvmem.Client(sys.argv[1]) as c:
    p = c.pool("default")
    s = c.seq_create(p)
    [slots] = c.step([(s, 3, [1, 2, 3])])
    assert slots[2] == c.block_table(s)[0] * p.block_tokens + 2
K.library("cpu")
print("python ok: slot", slots[2])
' "$d/sock" "$py") || fail "import kvmem from the installed package"
else
	echo "# no python3: the installed Python binding is not tried"
fi
kill "$pid"
wait "$pid" || fail "kvmemd did not exit cleanly"
pid=
echo "# installed daemon, kvmemctl and client work"
exit 0
