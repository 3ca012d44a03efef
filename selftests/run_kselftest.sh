#!/bin/bash
# SPDX-License-Identifier: MIT
#
# run_kselftest.sh - run the kvmem selftests and report in TAP 13.
#
# Each collection is a folder of selftests/ with a Makefile; its tests are
# what `make list` names: gen:NAME, a program built into OUTDIR/COLLECTION,
# and prog:NAME, a bash script in the folder. Every test runs from its
# collection's folder, under the timeout of the collection's `settings' file
# (timeout=N seconds, 0 for none; 45 by default), with KSFT_OUTPUT and TOP in
# its environment. Its output is shown as TAP comments, its runtime on its
# result line. The last line is "P passed, F failed"; the exit code is 0 if
# nothing failed, else 1.

set -u

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELFTESTS=$TOP/selftests
DEFAULT_TIMEOUT=45
KILL_AFTER=5

usage()
{
	cat <<EOF
Usage: $0 [-o OUTDIR] [-c COLLECTION]... [-t COLLECTION:TEST]... [-l] [-h]
  -o OUTDIR   where the built tests are (default: \$KSFT_OUTPUT, or
              $TOP/build/selftests); collection C's are in OUTDIR/C
  -c NAME     run only this collection (repeatable)
  -t C:TEST   run only this test of collection C (repeatable)
  -l          list the tests as C:TEST and exit
  -h          show this help
EOF
}

die()
{
	echo "$0: $*" >&2
	exit 1
}

# The collections: sorted folders of selftests/ that have a Makefile.
all_collections()
{
	local mk

	for mk in "$SELFTESTS"/*/Makefile; do
		[[ -f $mk ]] || continue
		mk=${mk%/Makefile}
		echo "${mk##*/}"
	done | LC_ALL=C sort
}

# The tests of collection $1, as "gen:NAME" and "prog:NAME" lines.
collection_tests()
{
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
		make -s --no-print-directory -C "$SELFTESTS/$1" list |
		grep -E '^(gen|prog):[^[:space:]]+$'
	return "${PIPESTATUS[0]}"
}

# The timeout of collection $1 from its settings file.
collection_timeout()
{
	local settings=$SELFTESTS/$1/settings val

	if [[ -f $settings ]]; then
		val=$(sed -n 's/^[[:space:]]*timeout[[:space:]]*=[[:space:]]*\([0-9]\+\)[[:space:]]*$/\1/p' \
			"$settings" | tail -n 1)
		[[ -n $val ]] && { echo "$val"; return; }
	fi
	echo "$DEFAULT_TIMEOUT"
}

# Microseconds since the epoch.
now_us()
{
	local t=$EPOCHREALTIME

	echo $(( ${t%.*} * 1000000 + 10#${t#*.} ))
}

# Print microseconds $1 as seconds with two decimals.
fmt_secs()
{
	local cs=$(( ($1 + 5000) / 10000 ))

	printf '%d.%02d' $(( cs / 100 )) $(( cs % 100 ))
}

# Run test $3 (kind $2: gen or prog) of collection $1 with a timeout of $4
# seconds, its output prefixed with "# ". Return the test's exit status.
#
# timeout(1) leads a process group of its own. It kills the group when time
# is up, and the group is killed again once the test has exited, so that
# nothing the test left behind holds the output pipe open.
run_test()
{
	local coll=$1 kind=$2 name=$3 secs=$4 cmd

	if [[ $kind == gen ]]; then
		cmd=("$OUTDIR/$coll/$name")
	else
		cmd=(bash "$SELFTESTS/$coll/$name")
	fi
	(
		cd "$SELFTESTS/$coll" || exit 1
		# shellcheck disable=SC2030 # the test's own KSFT_OUTPUT
		export KSFT_OUTPUT=$OUTDIR/$coll TOP
		timeout --kill-after="$KILL_AFTER" "$secs" "${cmd[@]}" </dev/null 2>&1 &
		pid=$!
		trap 'kill -TERM -- -$pid 2>/dev/null' INT TERM HUP
		while :; do
			wait "$pid"
			rc=$?
			kill -0 "$pid" 2>/dev/null || break
		done
		kill -KILL -- -"$pid" 2>/dev/null
		exit "$rc"
	) 2>&1 | awk '{ print "# " $0; fflush() }'
	return "${PIPESTATUS[0]}"
}

# Check that test $3 of collection $1 can run; print why not and fail if not.
test_present()
{
	local coll=$1 kind=$2 name=$3 path

	if [[ $kind == gen ]]; then
		path=$OUTDIR/$coll/$name
		[[ -x $path && -f $path ]] && return 0
		echo "# Warning: $path is missing or not executable (not built?)"
	else
		path=$SELFTESTS/$coll/$name
		[[ -f $path ]] && return 0
		echo "# Warning: $path is missing"
	fi
	return 1
}

# Run the test of line $1 ("coll kind name") as TAP test number $2.
run_one()
{
	local coll kind name num=$2 secs start rc elapsed desc

	read -r coll kind name <<<"$1"
	desc="selftests: $coll: $name"
	echo "# $desc"
	if [[ $kind == error ]]; then
		echo "# 'make -C selftests/$coll list' failed"
		echo "not ok $num $desc # make list failed"
		(( failed++ ))
		return
	fi
	if ! test_present "$coll" "$kind" "$name"; then
		echo "not ok $num $desc # missing"
		(( failed++ ))
		return
	fi
	secs=$(collection_timeout "$coll")
	start=$(now_us)
	run_test "$coll" "$kind" "$name" "$secs"
	rc=$?
	elapsed=$(fmt_secs $(( $(now_us) - start )))
	case $rc in
	0)
		echo "ok $num $desc # (${elapsed}s)"
		(( passed++ )) ;;
	4)
		echo "ok $num $desc # SKIP (${elapsed}s)"
		(( skipped++ )) ;;
	124)
		echo "not ok $num $desc # TIMEOUT ${secs}s"
		(( failed++ )) ;;
	*)
		echo "not ok $num $desc # exit=$rc (${elapsed}s)"
		(( failed++ )) ;;
	esac
}

# Fill TESTS with "coll kind name" lines for the selected tests.
discover()
{
	local coll list line kind name

	for coll in "${COLLECTIONS[@]}"; do
		if ! list=$(collection_tests "$coll"); then
			TESTS+=("$coll error list")
			continue
		fi
		while read -r line; do
			[[ -n $line ]] || continue
			kind=${line%%:*}
			name=${line#*:}
			if (( ${#ONLY[@]} )) && [[ -z ${WHOLE[$coll]+x} &&
			      -z ${ONLY["$coll:$name"]+x} ]]; then
				continue
			fi
			TESTS+=("$coll $kind $name")
		done <<<"$list"
	done
}

# Check the -t names against the discovered tests.
check_only()
{
	local want t c k n found

	for want in "${!ONLY[@]}"; do
		found=
		for t in "${TESTS[@]}"; do
			read -r c k n <<<"$t"
			[[ $k != error && $c:$n == "$want" ]] && found=1
		done
		[[ -n $found ]] || die "no test '$want' (-l lists them)"
	done
}

# Pick the collections from -c and -t, checking that they exist. -c takes
# a whole collection, -t one test; together they add up.
select_collections()
{
	local -A want=()
	local c

	mapfile -t COLLECTIONS < <(all_collections)
	for c in "${!WHOLE[@]}" "${!ONLY[@]}"; do
		c=${c%%:*}
		[[ -f $SELFTESTS/$c/Makefile ]] || die "no collection '$c'"
		want[$c]=1
	done
	(( ${#want[@]} )) || return 0
	for c in "${!COLLECTIONS[@]}"; do
		[[ -n ${want[${COLLECTIONS[$c]}]+x} ]] || unset "COLLECTIONS[$c]"
	done
	COLLECTIONS=("${COLLECTIONS[@]}")
}

# shellcheck disable=SC2031 # KSFT_OUTPUT as the caller set it
OUTDIR=${KSFT_OUTPUT:-$TOP/build/selftests}
LIST=
declare -A WHOLE=() ONLY=()
while getopts "o:c:t:lh" opt; do
	case $opt in
	o) OUTDIR=$OPTARG ;;
	c) WHOLE[$OPTARG]=1 ;;
	t) [[ $OPTARG == ?*:?* ]] || die "-t wants COLLECTION:TEST, not '$OPTARG'"
	   ONLY[$OPTARG]=1 ;;
	l) LIST=1 ;;
	h) usage; exit 0 ;;
	*) usage >&2; exit 1 ;;
	esac
done
shift $((OPTIND - 1))
(( $# == 0 )) || { usage >&2; exit 1; }
[[ $OUTDIR == /* ]] || OUTDIR=$PWD/$OUTDIR

COLLECTIONS=()
TESTS=()
select_collections
discover
check_only

if [[ -n $LIST ]]; then
	for t in "${TESTS[@]}"; do
		read -r c k n <<<"$t"
		[[ $k == error ]] && { echo "$c: make list failed" >&2; continue; }
		echo "$c:$n"
	done
	exit 0
fi

passed=0
failed=0
skipped=0
trap 'echo "# interrupted"; echo "$passed passed, $((failed + 1)) failed"; exit 130' INT TERM HUP
echo "TAP version 13"
echo "1..${#TESTS[@]}"
num=0
for t in "${TESTS[@]}"; do
	(( num++ ))
	run_one "$t" "$num"
done
(( skipped )) && echo "# $skipped skipped"
echo "$passed passed, $failed failed"
(( failed == 0 ))
