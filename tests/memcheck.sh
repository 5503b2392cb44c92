#!/bin/sh
# memcheck.sh [build-dir=build-memcheck]
# Runs the unit tests, the Lua tests and the demo under valgrind's memcheck, on a build made
# for it: without the sanitizers (valgrind cannot run an ASan binary) and without mimalloc
# (valgrind would take its operator delete[] for a mismatched free). A test fails on any
# memcheck error or on memory definitely or indirectly lost. ctest runs it as `memcheck`
# (about 2 minutes with the build on 2 cores); prints one line per program and the
# valgrind report of each that failed, and exits 1 if any did.
#   tests/memcheck.sh
set -u
src="$(cd "$(dirname "$0")/.." && pwd)"
build=${1:-build-memcheck}
command -v valgrind >/dev/null || { echo "memcheck.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# Only what runs below: the daemon and the unit tests (not the benchmarks, tools or fuzzers).
targets="handoffd $(cd "$src/tests/unit" && ls test_*.c | sed 's/\.c$//' | tr '\n' ' ')"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHANDOFFD_MIMALLOC=OFF >/dev/null &&
	# shellcheck disable=SC2086
	cmake --build "$build" -j"$(nproc)" --target $targets >/dev/null || exit 1
build=$(cd "$build" && pwd)
export HANDOFFD_TEST_DIR="$src/tests"	# the unit tests' fixtures
vg="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect"
failed=0

# check NAME CMD...: runs CMD, which writes its memcheck report to $logs/NAME.vg; a failure
# (an exit code, or anything in the report) is printed with the report.
check() {
	name=$1
	shift
	if "$@" >"$logs/$name.out" 2>&1 && [ ! -s "$logs/$name.vg" ]; then
		echo "ok     $name"
	else
		echo "FAILED $name"
		cat "$logs/$name.vg" 2>/dev/null
		tail -20 "$logs/$name.out"
		failed=1
	fi
}

for name in $targets; do
	[ "$name" = handoffd ] && continue
	check "$name" $vg --log-file="$logs/$name.vg" "$build/tests/$name"
done
cd "$src/tests/lua" || exit 1	# where ctest runs them
for t in "$src"/tests/lua/*.test.lua; do
	name=lua.$(basename "$t" .test.lua)
	check "$name" $vg --log-file="$logs/$name.vg" "$build/handoffd" test "$t"
done
# The demo starts handoffd itself: through a wrapper, so the daemon runs under memcheck (a
# memcheck error makes it exit 99, which the demo reports).
printf '#!/bin/sh\nexec %s --log-file=%s "%s" "$@"\n' "$vg" "$logs/demo.vg" "$build/handoffd" >"$logs/handoffd"
chmod +x "$logs/handoffd"
check demo /usr/bin/python3 "$src/tests/demo/demo.py" "$logs/handoffd"
exit $failed
