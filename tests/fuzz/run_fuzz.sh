#!/bin/sh
# Bounded fuzzing run: seeds from tests/fuzz/<fuzzer>_seeds/ when that exists, else from
# the payload generator, then libFuzzer for SECONDS.
# Usage: run_fuzz.sh FUZZER TESTS_DIR WORK_DIR SECONDS. Fails when the fuzzer finds a
# crash; the input is left in WORK_DIR (crash-*) to be fixed and kept as a regression.
set -eu
fuzzer=$1 tests=$2 work=$3 seconds=$4
gen="python3 $tests/payloads/genpayload.py"
seeds_dir="$tests/fuzz/$(basename "$fuzzer")_seeds"

rm -rf "$work/seeds"
mkdir -p "$work/seeds" "$work/corpus"
cd "$work"
if [ -d "$seeds_dir" ]; then
	exec "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
		-print_final_stats=1 -artifact_prefix="$work/" corpus "$seeds_dir"
fi
i=0
for args in "0" "1" "2 --mixed" "3 --value-as-string" "3 --content-as-string" "2 --ascii" \
	"2 --name transcript --card-first" "2 --no-transcript" "2 --content-url" "3 --nulls" \
	"2 --vars 3 --ascii --value-as-string --content-as-string" "2 --escape-all --value-as-string"; do
	# shellcheck disable=SC2086
	$gen $args > "$work/seeds/gen-$i.json"
	i=$((i + 1))
done
printf '{"activities":[{"type":"message","id":"a","from":{"id":"u","role":"user"}}],"watermark":"1"}' \
	> "$work/seeds/small.json"
exec "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
	-print_final_stats=1 -artifact_prefix="$work/" corpus seeds "$tests/fuzz/regressions"
