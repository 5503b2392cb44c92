#!/bin/sh
# relay_ab.sh BEFORE AFTER [runs=3] [conversations=100] [messages=20]
# Runs the relay benchmark (bench_relay.py) on two handoffd builds in turn (A B A B ...), so
# both see the same machine load, and prints each run's CPU per relayed message with the
# load average. BEFORE and AFTER are each a non-sanitized handoffd binary, or a git commit
# of this repository, which is then built first (RelWithDebInfo, in a temporary directory
# removed at the end), e.g. from the source directory:
#   tests/bench/relay_ab.sh 760d278 build/handoffd 5 100 40
set -eu
before=$1 after=$2 runs=${3:-3} convs=${4:-100} msgs=${5:-20}
bench="$(cd "$(dirname "$0")" && pwd)/bench_relay.py"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Prints the binary to run for $1: itself, or the handoffd built from that commit.
binary_for() {
	if [ -x "$1" ] && [ ! -d "$1" ]; then
		echo "$1"
		return
	fi
	src="$tmp/$(echo "$1" | tr -c 'A-Za-z0-9._\n-' '_')"
	mkdir -p "$src"
	git -C "$repo" archive "$1" | tar -x -C "$src"
	cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHANDOFFD_TESTS=OFF >&2
	cmake --build "$src/build" -j2 --target handoffd >&2
	echo "$src/build/handoffd"
}

before=$(binary_for "$before")
after=$(binary_for "$after")
for i in $(seq "$runs"); do
	for side in before after; do
		if [ "$side" = before ]; then bin=$before; else bin=$after; fi
		load=$(cut -d' ' -f1-3 /proc/loadavg)
		cpu=$(/usr/bin/python3 "$bench" "$bin" "$convs" "$msgs" | sed -n 's/^handoffd CPU: \([0-9,]*\) us.*/\1/p')
		echo "run $i $side: $cpu us per relayed message (loadavg $load)"
	done
done
