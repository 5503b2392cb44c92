#!/bin/sh
# relay_ab.sh BEFORE_BIN AFTER_BIN [runs=3] [conversations=100] [messages=20]
# Runs the relay benchmark on two handoffd builds in turn (A B A B ...), so both see the same
# machine load, and prints each run's CPU per relayed message with the load average. Build
# the two non-sanitized binaries first, e.g. for the commit before a change:
#   git worktree add /tmp/relay-before <commit>   (or git archive <commit> | tar -x -C DIR)
#   cmake -S /tmp/relay-before -B /tmp/relay-before/build -DCMAKE_BUILD_TYPE=RelWithDebInfo
#   cmake --build /tmp/relay-before/build -j2 --target handoffd
set -eu
before=$1 after=$2 runs=${3:-3} convs=${4:-100} msgs=${5:-20}
bench="$(dirname "$0")/bench_relay.py"
for i in $(seq "$runs"); do
	for side in before after; do
		if [ "$side" = before ]; then bin=$before; else bin=$after; fi
		load=$(cut -d' ' -f1-3 /proc/loadavg)
		cpu=$(/usr/bin/python3 "$bench" "$bin" "$convs" "$msgs" | sed -n 's/^handoffd CPU: \([0-9,]*\) us.*/\1/p')
		echo "run $i $side: $cpu us per relayed message (loadavg $load)"
	done
done
