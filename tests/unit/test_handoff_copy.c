/* test_handoff_copy.c - hd_handoff_copy_to: a copy of a parsed handoff points only into
 * its own block, keeps the strings inside the event's text at the same offsets, and
 * still equals the handoff after the parser moved on and the input was overwritten,
 * for every variation that puts strings elsewhere (escapes, parts sent as JSON strings,
 * errors, nulls, missing parts). */
#include "payloads.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

struct block {
	const char *start, *end;
};

static bool str_same(struct hd_str a, struct hd_str b)
{
	return !a.ptr ? !b.ptr : b.ptr && a.len == b.len && !memcmp(a.ptr, b.ptr, a.len);
}

/* S is absent, or lies inside B. */
static void assert_in(struct block b, struct hd_str s)
{
	if (s.ptr)
		assert_true(s.ptr >= b.start && s.ptr + s.len <= b.end);
}

static void assert_same(struct hd_str copy, struct hd_str orig)
{
	if (!str_same(copy, orig))
		fail_msg("copy '%s' != '%s'", str_of(copy), str_of(orig));
}

static void check_strings(struct block b, const struct hd_handoff *c, const struct hd_handoff *h)
{
	const struct hd_str pairs[][2] = {
		{ c->activity_id, h->activity_id }, { c->conversation_id, h->conversation_id },
		{ c->agent_message, h->agent_message }, { c->raw, h->raw },
		{ c->user.id, h->user.id }, { c->user.name, h->user.name }, { c->user.role, h->user.role },
		{ c->bot.id, h->bot.id }, { c->bot.name, h->bot.name }, { c->bot.role, h->bot.role },
		{ c->context.raw, h->context.raw }, { c->transcript.raw, h->transcript.raw },
		{ c->transcript.content_url, h->transcript.content_url },
	};

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		assert_in(b, pairs[i][0]);
		assert_same(pairs[i][0], pairs[i][1]);
	}
	assert_true(!c->context.error == !h->context.error);
	assert_true(!c->transcript.error == !h->transcript.error);
	if (c->context.error)
		assert_string_equal(c->context.error, h->context.error);
	if (c->transcript.error)
		assert_string_equal(c->transcript.error, h->transcript.error);
}

static void check_entries(struct block b, const struct hd_transcript *c, const struct hd_transcript *h)
{
	assert_int_equal(c->count, h->count);
	for (size_t i = 0; i < c->count; i++) {
		const struct hd_transcript_entry *x = &c->entries[i], *y = &h->entries[i];
		const struct hd_str pairs[][2] = {
			{ x->id, y->id }, { x->type, y->type }, { x->role, y->role }, { x->name, y->name },
			{ x->text, y->text }, { x->timestamp, y->timestamp }, { x->raw, y->raw },
		};
		for (size_t k = 0; k < sizeof(pairs) / sizeof(pairs[0]); k++) {
			assert_in(b, pairs[k][0]);
			assert_same(pairs[k][0], pairs[k][1]);
		}
	}
}

static void check_vars(struct block b, const struct hd_context *c, const struct hd_context *h)
{
	size_t n = h->vars ? h->vars->size : 0;

	assert_true(!c->vars == !h->vars);
	for (size_t i = 0; i < n; i++) {
		const struct hd_node *x = &c->vars[i], *y = &h->vars[i];
		assert_int_equal(x->kind, y->kind);
		assert_int_equal(x->size, y->size);
		assert_int_equal(x->count, y->count);
		assert_true(x->is_int == y->is_int && x->i == y->i && !memcmp(&x->d, &y->d, sizeof(x->d)));
		assert_in(b, x->key);
		assert_in(b, x->str);
		assert_in(b, x->raw);
		assert_same(x->key, y->key);
		assert_same(x->str, y->str);
		assert_same(x->raw, y->raw);
	}
	for (int f = 0; f < HD_CTX_NFIELDS; f++) {
		assert_true(!c->field[f] == !h->field[f]);
		if (c->field[f])
			assert_int_equal(c->field[f] - c->vars, h->field[f] - h->vars);
	}
}

/* Strings inside the event's text are at the same offsets in the copy's. */
static void check_offsets(const struct hd_handoff *c, const struct hd_handoff *h)
{
	for (size_t i = 0; i < h->transcript.count; i++) {
		struct hd_str s = h->transcript.entries[i].text;
		if (s.ptr && s.ptr >= h->raw.ptr && s.ptr + s.len <= h->raw.ptr + h->raw.len)
			assert_int_equal(c->transcript.entries[i].text.ptr - c->raw.ptr, s.ptr - h->raw.ptr);
	}
}

/* Copies the handoff of the generator's payload for ARGS (parsed in place), then parses
 * something else with the same parser and overwrites the input, and compares the copy
 * with a fresh parse of the same payload. */
static void check_copy(const char *args)
{
	struct hd_activity_parser *p = hd_activity_parser_new(NULL), *fresh = hd_activity_parser_new(NULL);
	struct hd_activity_set set;
	struct hd_parse_error err;
	size_t len, size;
	char *text = payload_generate(args, &len), *pristine = malloc(len);
	const struct hd_handoff *h;
	struct hd_handoff *copy;
	void *mem;

	assert_non_null(pristine);
	memcpy(pristine, text, len);
	assert_int_equal(hd_activity_parse(p, text, len, len + HD_PARSE_PADDING, &set, &err), 0);
	h = hd_activity_set_handoff(&set);
	assert_non_null(h);
	size = hd_handoff_copy_size(h);
	assert_true(size >= sizeof(*copy) + h->raw.len);
	mem = malloc(size);
	assert_non_null(mem);
	copy = hd_handoff_copy_to(mem, h);
	assert_ptr_equal(copy, mem);
	check_offsets(copy, h);
	parse_something_else(p);
	memset(text, 'x', len);
	parse_ok(fresh, pristine, len, &set);
	h = hd_activity_set_handoff(&set);
	struct block b = { mem, (char *)mem + size };
	check_strings(b, copy, h);
	check_entries(b, &copy->transcript, &h->transcript);
	check_vars(b, &copy->context, &h->context);
	free(mem);
	free(text);
	free(pristine);
	hd_activity_parser_free(p);
	hd_activity_parser_free(fresh);
}

static void test_copies(void **state)
{
	static const char *const variants[] = {
		"5", "5 --ascii --vars 4", "5 --escape-all --vars 2", "5 --value-as-string --content-as-string",
		"4 --escape-all --value-as-string --content-as-string",
		"5 --ascii --value-as-string --content-as-string --nulls", "3 --content-url",
		"3 --no-transcript", "0", "4 --mixed --card-first --name transcript",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++)
		check_copy(variants[i]);
}

/* Errors made by the parser (in its arena) are copied too. */
static void test_copies_errors(void **state)
{
	static const char json[] =
		"{\"activities\":[{\"type\":\"event\",\"name\":\"handoff.initiate\",\"value\":\"{\\\"a\\\":tru}\","
		"\"attachments\":[{\"name\":\"Transcript\",\"content\":{\"activities\":[1,{\"id\":\"x\"}]}}]}]}";
	struct hd_activity_parser *p = hd_activity_parser_new(NULL);
	struct hd_activity_set set;
	const struct hd_handoff *h;
	struct hd_handoff *copy;
	void *mem;

	(void)state;
	parse_ok(p, json, sizeof(json) - 1, &set);
	h = hd_activity_set_handoff(&set);
	assert_non_null(h);
	assert_non_null(h->context.error);
	assert_non_null(h->transcript.error);
	mem = malloc(hd_handoff_copy_size(h));
	assert_non_null(mem);
	copy = hd_handoff_copy_to(mem, h);
	assert_string_equal(copy->context.error, h->context.error);
	assert_string_equal(copy->transcript.error, h->transcript.error);
	assert_true(copy->context.error != h->context.error && copy->transcript.error != h->transcript.error);
	assert_int_equal(copy->transcript.count, 1);
	assert_str(copy->transcript.entries[0].id, "x");
	parse_something_else(p);
	assert_true(strstr(copy->context.error, "malformed JSON") != NULL);
	assert_string_equal(copy->transcript.error, "entry 1 is not an object");
	free(mem);
	hd_activity_parser_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_copies),
		cmocka_unit_test(test_copies_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
