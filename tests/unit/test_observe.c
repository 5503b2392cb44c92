/* test_observe.c - the building blocks of what operators see: a histogram's buckets,
 * sum and count as Prometheus reads them, and a conversation's event ring keeping the
 * last CONV_EVENTS_MAX events in order. */
#include "relay/conv_events.h"
#include "base/metrics.h"

#include <event2/buffer.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static char *render(struct metrics *m)
{
	struct evbuffer *out = evbuffer_new();
	size_t n;
	char *text;

	assert_non_null(out);
	metrics_render(m, out);
	n = evbuffer_get_length(out);
	text = calloc(1, n + 1);
	assert_non_null(text);
	evbuffer_remove(out, text, n);
	evbuffer_free(out);
	return text;
}

static void test_histogram_buckets_are_cumulative_with_inf(void **state)
{
	static const double bounds[] = { 0.1, 1 };
	struct metrics *m = metrics_new();
	struct metrics_histogram *h, *again;
	char *text;

	(void)state;
	h = metrics_histogram(m, "x_seconds", "to=\"bot\"", "Help", bounds, 2);
	again = metrics_histogram(m, "x_seconds", "to=\"bot\"", "Help", bounds, 2);
	assert_ptr_equal(h, again);
	metrics_observe(h, 0.05);
	metrics_observe(h, 0.1);	/* on the bound: le="0.1" */
	metrics_observe(h, 0.5);
	metrics_observe(h, 7);
	metrics_observe(NULL, 1);
	text = render(m);
	assert_non_null(strstr(text, "# TYPE x_seconds histogram\n"));
	assert_non_null(strstr(text, "x_seconds_bucket{to=\"bot\",le=\"0.1\"} 2\n"));
	assert_non_null(strstr(text, "x_seconds_bucket{to=\"bot\",le=\"1\"} 3\n"));
	assert_non_null(strstr(text, "x_seconds_bucket{to=\"bot\",le=\"+Inf\"} 4\n"));
	assert_non_null(strstr(text, "x_seconds_sum{to=\"bot\"} 7.6500000000000004\n"));
	assert_non_null(strstr(text, "x_seconds_count{to=\"bot\"} 4\n"));
	free(text);
	metrics_free(m);
}

static void test_histogram_without_labels(void **state)
{
	struct metrics *m = metrics_new();
	char *text;

	(void)state;
	metrics_observe(metrics_histogram(m, "y_seconds", NULL, "Help", metrics_chat_buckets, metrics_chat_nbuckets),
			0.02);
	text = render(m);
	assert_non_null(strstr(text, "y_seconds_bucket{le=\"0.01\"} 0\n"));
	assert_non_null(strstr(text, "y_seconds_bucket{le=\"0.025\"} 1\n"));
	assert_non_null(strstr(text, "y_seconds_bucket{le=\"60\"} 1\n"));
	assert_non_null(strstr(text, "y_seconds_count 1\n"));
	free(text);
	metrics_free(m);
}

static void test_event_ring_keeps_the_last_in_order(void **state)
{
	struct conv_events *ev = NULL;

	(void)state;
	assert_null(conv_events_at(ev, 0));
	for (int i = 0; i < CONV_EVENTS_MAX + 7; i++)
		conv_events_add(&ev, i % 2 ? CONV_EV_RETRY : CONV_EV_STATE, "event %d", i);
	assert_non_null(ev);
	assert_int_equal(ev->count, CONV_EVENTS_MAX);
	assert_string_equal(conv_events_at(ev, 0)->detail, "event 7");
	assert_string_equal(conv_events_at(ev, CONV_EVENTS_MAX - 1)->detail, "event 56");
	assert_string_equal(conv_event_kind_name(conv_events_at(ev, 0)->kind), "retry");
	assert_null(conv_events_at(ev, CONV_EVENTS_MAX));
	assert_true(ev->opened_ms > 0);
	conv_events_free(ev);
}

static void test_event_detail_is_cut(void **state)
{
	struct conv_events *ev = NULL;
	char long_text[400];

	(void)state;
	memset(long_text, 'x', sizeof(long_text) - 1);
	long_text[sizeof(long_text) - 1] = '\0';
	conv_events_add(&ev, CONV_EV_ERROR, "%s", long_text);
	assert_int_equal(strlen(conv_events_at(ev, 0)->detail), CONV_EVENT_DETAIL_MAX - 1);
	conv_events_free(ev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_histogram_buckets_are_cumulative_with_inf),
		cmocka_unit_test(test_histogram_without_labels),
		cmocka_unit_test(test_event_ring_keeps_the_last_in_order),
		cmocka_unit_test(test_event_detail_is_cut),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
