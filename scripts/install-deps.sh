#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages kvmem builds against, if any is missing.
# Called by `make deps` (and so by `make check` and `make run`).
set -eu

pkgs="build-essential pkg-config liburing-dev libhwloc-dev libjemalloc-dev"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
	echo "kvmem: missing packages:$missing (install them; no apt-get here)" >&2
	exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 || {
		echo "kvmem: missing packages:$missing; run as root or install sudo" >&2
		exit 1
	}
	sudo="sudo"
fi
echo "kvmem: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends $missing
