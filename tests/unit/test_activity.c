/* test_activity.c - ActivitySets and single activities: the dispatch fields, raw spans,
 * order, the watermark, and every class of bad input (malformed JSON, invalid UTF-8,
 * wrong shapes, nesting, size) refused whole with its reason and byte offset. */
#include "payloads.h"

#include <handoffd/activity.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static int setup(void **state)
{
	*state = hd_activity_parser_new(NULL);
	return *state ? 0 : -1;
}

static int teardown(void **state)
{
	hd_activity_parser_free(*state);
	return 0;
}

static const char SET[] =
	"{\"activities\":[\n"
	" {\"type\":\"message\",\"id\":\"c1|0000001\",\"from\":{\"id\":\"dl_u1\",\"role\":\"user\"},"
	"\"text\":\"hi\",\"channelData\":{\"clientActivityID\":\"cid-1\",\"x\":[1,2]}},\n"
	" {\"id\":\"c1|0000002\",\"type\":\"message\",\"replyToId\":\"c1|0000001\","
	"\"from\":{\"role\":\"bot\",\"name\":\"Support Bot\",\"id\":\"bot-1\"},\"text\":\"hello\"},\n"
	" {\"type\":\"typing\",\"id\":\"c1|0000003\",\"from\":{\"id\":\"bot-1\"}}\n"
	"],\"watermark\":\"7\"}";

static void test_set_fields_in_order(void **state)
{
	struct hd_activity_set set;
	const struct hd_activity *a;

	parse_ok(*state, SET, strlen(SET), &set);
	assert_true(set.is_set);
	assert_str(set.watermark, "7");
	assert_int_equal(set.count, 3);
	assert_int_equal(set.handoffs, 0);
	a = &set.activities[0];
	assert_str(a->id, "c1|0000001");
	assert_str(a->type, "message");
	assert_str(a->from_id, "dl_u1");
	assert_str(a->from_role, "user");
	assert_str(a->client_activity_id, "cid-1");
	assert_null(a->reply_to_id.ptr);
	assert_null(a->name.ptr);
	assert_null(a->handoff);
	a = &set.activities[1];
	assert_str(a->id, "c1|0000002");
	assert_str(a->reply_to_id, "c1|0000001");
	assert_str(a->from_id, "bot-1");
	assert_str(a->from_role, "bot");
	assert_null(a->client_activity_id.ptr);
	assert_str(set.activities[2].type, "typing");
	assert_null(set.activities[2].from_role.ptr);
}

/* The raw span is the activity's text exactly, found at its offset in the input. */
static void test_raw_spans(void **state)
{
	struct hd_activity_set set;
	const char *second = strstr(SET, "{\"id\":\"c1|0000002\"");

	parse_ok(*state, SET, strlen(SET), &set);
	assert_int_equal(set.activities[1].offset, second - SET);
	assert_int_equal(set.activities[1].raw.len, strchr(second, '\n') - second - 1);
	assert_memory_equal(set.activities[1].raw.ptr, second, set.activities[1].raw.len);
	assert_int_equal(set.activities[0].raw.ptr[0], '{');
	assert_int_equal(set.activities[0].raw.ptr[set.activities[0].raw.len - 1], '}');
}

static void test_single_activity(void **state)
{
	static const char one[] = "  {\"type\":\"message\",\"id\":\"c|1\",\"text\":\"x\"}\n";
	struct hd_activity_set set;

	parse_ok(*state, one, strlen(one), &set);
	assert_false(set.is_set);
	assert_null(set.watermark.ptr);
	assert_int_equal(set.count, 1);
	assert_str(set.activities[0].id, "c|1");
	assert_int_equal(set.activities[0].offset, 2);
	assert_int_equal(set.activities[0].raw.len, strlen(one) - 3);
}

static void test_watermark_forms(void **state)
{
	struct hd_activity_set set;

	parse_ok(*state, "{\"activities\":[],\"watermark\":null}", 34, &set);
	assert_null(set.watermark.ptr);
	assert_true(set.is_set);
	assert_int_equal(set.count, 0);
	parse_ok(*state, "{\"activities\":[]}", 17, &set);
	assert_null(set.watermark.ptr);
	parse_ok(*state, "{\"watermark\":12,\"activities\":[]}", 32, &set);
	assert_str(set.watermark, "12");
}

static void test_handoff_only_for_handoff_initiate_events(void **state)
{
	static const char text[] =
		"{\"activities\":["
		"{\"type\":\"event\",\"name\":\"handoff.status\",\"value\":{\"state\":\"accepted\"}},"
		"{\"type\":\"message\",\"name\":\"handoff.initiate\"},"
		"{\"name\":\"handoff.initiate\",\"type\":\"event\",\"id\":\"h1\"}]}";
	struct hd_activity_set set;

	parse_ok(*state, text, strlen(text), &set);
	assert_int_equal(set.count, 3);
	assert_int_equal(set.handoffs, 1);
	assert_null(set.activities[0].handoff);
	assert_null(set.activities[1].handoff);
	assert_non_null(set.activities[2].handoff);
	assert_ptr_equal(hd_activity_set_handoff(&set), set.activities[2].handoff);
}

/* Escapes in values and in member names are decoded before anything compares them. */
static void test_escapes(void **state)
{
	static const char text[] =
		"{\"activities\":[{\"typ\\u0065\":\"message\",\"id\":\"\\u0041\\ud83d\\ude00\\\"\\n\","
		"\"from\":{\"id\":\"\\u00fc\"}}]}";
	struct hd_activity_set set;

	parse_ok(*state, text, strlen(text), &set);
	assert_str(set.activities[0].type, "message");
	assert_str(set.activities[0].id, "A\xf0\x9f\x98\x80\"\n");
	assert_str(set.activities[0].from_id, "\xc3\xbc");
}

/* A buffer with padding is read in place; without it the parser copies it first. */
static void test_in_place_and_copied(void **state)
{
	size_t len;
	char *text = payload_generate("2 --mixed", &len);
	struct hd_activity_set set;
	struct hd_parse_error err;

	assert_int_equal(hd_activity_parse(*state, text, len, len + HD_PARSE_PADDING, &set, &err), 0);
	assert_ptr_equal(set.activities[0].raw.ptr, text + set.activities[0].offset);
	assert_int_equal(set.count, 2);
	assert_int_equal(hd_activity_parse(*state, text, len, len, &set, &err), 0);
	assert_true(set.activities[0].raw.ptr < text || set.activities[0].raw.ptr >= text + len);
	assert_memory_equal(set.activities[1].raw.ptr, text + set.activities[1].offset,
			    set.activities[1].raw.len);
	assert_non_null(set.activities[1].handoff);
	free(text);
}

struct bad {
	const char *json;
	enum hd_parse_status status;
	size_t offset;
	const char *reason;
};

static void expect_bad(struct hd_activity_parser *p, const struct bad *b, size_t len)
{
	struct hd_activity_set set;
	struct hd_parse_error err;
	int rc = hd_activity_parse(p, b->json, len, len, &set, &err);

	if (rc != -EPROTO || err.status != b->status || err.offset != b->offset ||
	    !strstr(err.reason, b->reason))
		fail_msg("%s: want status %d at %zu \"%s\", got rc %d status %d at %zu \"%s\"",
			 b->json, b->status, b->offset, b->reason, rc, err.status, err.offset, err.reason);
	assert_int_equal(set.count, 0);
	assert_null(set.activities);
}

static void test_malformed_json(void **state)
{
	static const struct bad cases[] = {
		{ "{\"activities\":[{\"type\":\"message\"}]", HD_PARSE_SYNTAX, 34, "unexpected end" },
		{ "{\"activities\":[{\"type\":\"message\",}]}", HD_PARSE_SYNTAX, 33, "expected a member" },
		{ "{\"activities\":[{\"type\" \"message\"}]}", HD_PARSE_SYNTAX, 23, "expected a member" },
		{ "{\"activities\":[{\"type\":\"a\"} {\"type\":\"b\"}]}", HD_PARSE_SYNTAX, 28, "expected a value, ','" },
		{ "{\"activities\":[],\"watermark\":tru}", HD_PARSE_SYNTAX, 29, "invalid literal" },
		{ "{\"activities\":[],\"n\":01}", HD_PARSE_SYNTAX, 21, "invalid number" },
		{ "{\"activities\":[]} x", HD_PARSE_SYNTAX, 18, "trailing content" },
		{ "{\"activities\":[{\"type\":\"message\"}]}]", HD_PARSE_SYNTAX, 35, "trailing content" },
		{ "{\"a\":1,\"b\"}", HD_PARSE_SYNTAX, 10, "expected a member" },
		{ "{\"activities\":[]}{}", HD_PARSE_SYNTAX, 17, "trailing content" },
		{ "{\"activities\":[{\"text\":\"a\\qb\"}]}", HD_PARSE_SYNTAX, 23, "invalid string escape" },
		{ "{\"activities\":[{\"text\":\"a\\ud800\"}]}", HD_PARSE_SYNTAX, 23, "invalid string escape" },
		{ "{\"activities\":[{\"text\":\"abc", HD_PARSE_SYNTAX, 23, "unterminated string" },
		{ "{\"activities\":[{\"text\":\"a\tb\"}]}", HD_PARSE_SYNTAX, 25, "control character" },
		/* Parts the parser has no use for are checked all the same. */
		{ "{\"activities\":[{\"type\":\"message\",\"channelData\":{\"x\":[1,,2]}}]}",
		  HD_PARSE_SYNTAX, 55, "expected a value" },
		{ "{\"activities\":[{\"entities\":[{\"a\":nul}]}]}", HD_PARSE_SYNTAX, 33, "invalid literal" },
		{ "{\"activities\":[{\"k\\x\":1}]}", HD_PARSE_SYNTAX, 16, "invalid string escape" },
		{ "", HD_PARSE_SYNTAX, 0, "empty payload" },
		{ " \n\t", HD_PARSE_SYNTAX, 0, "empty payload" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_bad(*state, &cases[i], strlen(cases[i].json));
}

static void test_invalid_utf8(void **state)
{
	static const struct bad cases[] = {
		{ "{\"activities\":[{\"text\":\"ab\xff\"}]}", HD_PARSE_UTF8, 26, "invalid UTF-8" },
		{ "{\"activities\":[{\"text\":\"\xc0\xaf\"}]}", HD_PARSE_UTF8, 24, "invalid UTF-8" },
		{ "{\"activities\":[{\"text\":\"\xed\xa0\x80\"}]}", HD_PARSE_UTF8, 24, "invalid UTF-8" },
		{ "{\"activities\":[{\"text\":\"\xf4\x90\x80\x80\"}]}", HD_PARSE_UTF8, 24, "invalid UTF-8" },
		{ "{\"activities\":[]}\xe2\x82", HD_PARSE_UTF8, 17, "invalid UTF-8" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_bad(*state, &cases[i], strlen(cases[i].json));
}

static void test_wrong_shapes(void **state)
{
	static const struct bad cases[] = {
		{ "{\"activities\":{\"type\":\"message\"}}", HD_PARSE_SHAPE, 14, "activities is not an array" },
		{ "{\"activities\":\"none\"}", HD_PARSE_SHAPE, 14, "activities is not an array" },
		{ "{\"activities\":[{\"type\":\"message\"},42]}", HD_PARSE_SHAPE, 34, "activity 1: not an object" },
		{ "{\"activities\":[{\"id\":5}]}", HD_PARSE_SHAPE, 21, "activity 0: id is not a string" },
		{ "{\"activities\":[{\"from\":{\"id\":[]}}]}", HD_PARSE_SHAPE, 29, "from.id is not a string" },
		{ "{\"activities\":[],\"watermark\":{}}", HD_PARSE_SHAPE, 29, "watermark is not a string" },
		{ "[{\"type\":\"message\"}]", HD_PARSE_SHAPE, 0, "not a JSON object" },
		{ " \"activities\"", HD_PARSE_SHAPE, 1, "not a JSON object" },
		{ "42", HD_PARSE_SHAPE, 0, "not a JSON object" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_bad(*state, &cases[i], strlen(cases[i].json));
}

/* Nesting of DEPTH levels: {"activities":[{"x":[[...]]}]} has DEPTH = 3 + brackets. */
static char *nested(size_t brackets, const char *where)
{
	size_t n = strlen(where) + 2 * brackets + 64;
	char *s = malloc(n), *p = s;

	p += sprintf(p, "{\"activities\":[{\"type\":\"message\",\"%s\":", where);
	for (size_t i = 0; i < brackets; i++)
		*p++ = '[';
	for (size_t i = 0; i < brackets; i++)
		*p++ = ']';
	strcpy(p, "}]}");
	return s;
}

static void test_depth_limit(void **state)
{
	struct hd_parse_opts opts = HD_PARSE_OPTS_DEFAULT;
	struct hd_activity_parser *p;
	struct hd_activity_set set;
	char *ok, *deep;
	size_t at;

	(void)state;
	opts.max_depth = 8;
	p = hd_activity_parser_new(&opts);
	ok = nested(5, "channelData");
	parse_ok(p, ok, strlen(ok), &set);
	assert_int_equal(set.count, 1);
	deep = nested(6, "channelData");
	at = strchr(deep, '[') - deep;		/* the activities array */
	at = strchr(deep + at + 1, '[') - deep + 5;
	expect_bad(p, &(struct bad){ deep, HD_PARSE_DEPTH, at, "nesting deeper than 8" }, strlen(deep));
	free(deep);
	deep = nested(6, "value");		/* captured values have the same limit */
	expect_bad(p, &(struct bad){ deep, HD_PARSE_DEPTH, at - 6, "nesting deeper than 8" }, strlen(deep));
	free(deep);
	free(ok);
	hd_activity_parser_free(p);
}

/* The default limit holds against nesting that would exhaust a recursive parser. */
static void test_depth_default(void **state)
{
	char *deep = nested(100000, "channelData");
	struct hd_activity_set set;
	struct hd_parse_error err;

	assert_int_equal(hd_activity_parse(*state, deep, strlen(deep), strlen(deep), &set, &err), -EPROTO);
	assert_int_equal(err.status, HD_PARSE_DEPTH);
	free(deep);
}

static void test_size_limit(void **state)
{
	struct hd_parse_opts opts = HD_PARSE_OPTS_DEFAULT;
	static const char text[] = "{\"activities\":[],\"watermark\":\"1234567890\"}";
	struct hd_activity_parser *p;
	struct hd_activity_set set;

	(void)state;
	opts.max_bytes = strlen(text);
	p = hd_activity_parser_new(&opts);
	parse_ok(p, text, strlen(text), &set);
	opts.max_bytes--;
	hd_activity_parser_free(p);
	p = hd_activity_parser_new(&opts);
	expect_bad(p, &(struct bad){ text, HD_PARSE_SIZE, strlen(text) - 1, "payload too large" },
		   strlen(text));
	hd_activity_parser_free(p);
}

/* A bad activity after good ones refuses the whole set: nothing can be dispatched. */
static void test_no_partial_dispatch(void **state)
{
	static const char text[] =
		"{\"activities\":[{\"type\":\"message\",\"id\":\"1\"},{\"type\":\"message\",\"id\":\"2\"},"
		"{\"type\":\"message\",\"id\":\"3\",\"text\":\"\\x\"}],\"watermark\":\"3\"}";
	struct hd_activity_set set;
	struct hd_parse_error err;

	parse_ok(*state, SET, strlen(SET), &set);
	assert_int_equal(hd_activity_parse(*state, text, strlen(text), strlen(text), &set, &err), -EPROTO);
	assert_int_equal(set.count, 0);
	assert_null(set.activities);
	assert_null(set.watermark.ptr);
	parse_ok(*state, SET, strlen(SET), &set);
	assert_int_equal(set.count, 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_set_fields_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_raw_spans, setup, teardown),
		cmocka_unit_test_setup_teardown(test_single_activity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watermark_forms, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handoff_only_for_handoff_initiate_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_escapes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_in_place_and_copied, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_json, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_utf8, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_shapes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_depth_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_depth_default, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_partial_dispatch, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
