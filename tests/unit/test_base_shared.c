/* test_base_shared.c - the small helpers every part shares: the JSON string escaper
 * (whole or cut to fit), the jittered backoff's window and cap, the generator's spread
 * and the two clocks. */
#include "base/backoff.h"
#include "base/clock.h"
#include "base/json_text.h"
#include "base/random.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

static void test_escape_whole(void **state)
{
	char out[16];

	(void)state;
	assert_int_equal(json_text_escape_whole(out, sizeof(out), "a\"b\\c\n"), 13);
	assert_string_equal(out, "a\\\"b\\\\c\\u000a");
	/* 15 bytes and the NUL fit exactly; one more does not, and nothing is cut silently. */
	assert_int_equal(json_text_escape_whole(out, sizeof(out), "0123456789abcde"), 15);
	assert_int_equal(json_text_escape_whole(out, sizeof(out), "0123456789abcdef"), -ENOSPC);
	/* An escape is never split: \u0001 needs 6 bytes. */
	assert_int_equal(json_text_escape_whole(out, 7, "\x01"), 6);
	assert_int_equal(json_text_escape_whole(out, 6, "\x01"), -ENOSPC);
	assert_int_equal(json_text_escape_whole(out, 0, ""), -ENOSPC);
}

static void test_escape_cut_to_fit(void **state)
{
	char out[8];
	size_t n;

	(void)state;
	n = json_text_escape(out, sizeof(out), 0, "\"\"\"\"", 4);
	assert_int_equal(n, 6);	/* three escapes; a fourth would leave no room for the NUL */
	assert_string_equal(out, "\\\"\\\"\\\"");
	n = json_text_string(out, sizeof(out), 0, "abcdefghij");
	assert_int_equal(n, 7);
	assert_string_equal(out, "\"abcde\"");	/* cut, still quoted */
}

static void test_backoff_window(void **state)
{
	struct backoff b = { 100, 1000 };
	struct rng rng;
	uint64_t max0 = 0, max3 = 0, max_late = 0;

	(void)state;
	rng_seed(&rng);
	for (int i = 0; i < 2000; i++) {
		uint64_t d0 = backoff_delay_ms(&b, &rng, 0);
		uint64_t d3 = backoff_delay_ms(&b, &rng, 3);
		uint64_t late = backoff_delay_ms(&b, &rng, 4000000000u);

		assert_true(d0 <= 100);
		assert_true(d3 <= 800);
		assert_true(late <= 1000);
		max0 = d0 > max0 ? d0 : max0;
		max3 = d3 > max3 ? d3 : max3;
		max_late = late > max_late ? late : max_late;
	}
	/* Full jitter spreads over the whole window (2000 draws: the top tenth is all but sure). */
	assert_true(max0 >= 90);
	assert_true(max3 >= 720);
	assert_true(max_late >= 900);
}

static void test_backoff_zero_base(void **state)
{
	struct backoff b = { 0, 0 };
	struct rng rng;

	(void)state;
	rng_seed(&rng);
	assert_int_equal(backoff_delay_ms(&b, &rng, 4000000000u), 0);
}

static void test_rng_spread(void **state)
{
	struct rng a, b;
	unsigned buckets[16] = { 0 };

	(void)state;
	rng_seed(&a);
	rng_seed(&b);
	assert_int_not_equal(a.state, 0);
	assert_int_not_equal(rng_next(&a), rng_next(&b));	/* two owners, two sequences */
	for (int i = 0; i < 16000; i++)
		buckets[rng_next(&a) >> 60]++;
	for (int i = 0; i < 16; i++)
		assert_true(buckets[i] > 700 && buckets[i] < 1300);
}

static void test_clocks(void **state)
{
	uint64_t m1 = clock_mono_ms(), u1 = clock_mono_us();
	uint64_t wall = clock_wall_ms();
	uint64_t now_s = (uint64_t)time(NULL);

	(void)state;
	assert_true(clock_mono_ms() >= m1);
	assert_true(clock_mono_us() >= u1);
	assert_true(u1 / 1000 + 1 >= m1);
	assert_true(wall / 1000 + 1 >= now_s && wall / 1000 <= now_s + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_whole),
		cmocka_unit_test(test_escape_cut_to_fit),
		cmocka_unit_test(test_backoff_window),
		cmocka_unit_test(test_backoff_zero_base),
		cmocka_unit_test(test_rng_spread),
		cmocka_unit_test(test_clocks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
