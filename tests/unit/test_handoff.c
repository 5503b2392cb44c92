/* test_handoff.c - the handoff object of handoff.initiate events: context, vars,
 * transcript and raw pieces from the generator's payloads, every known variation
 * (value and content as objects or JSON strings, attachment name case and position,
 * transcript missing, empty or by contentUrl, mixed sets, escapes, nulls), and broken
 * transcripts or contexts that are reported without losing the handoff. */
#include "payloads.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

struct fixture {
	struct hd_activity_parser *p;
	char *text;
	size_t len;
	struct hd_activity_set set;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->p = hd_activity_parser_new(NULL);
	*state = f;
	return f->p ? 0 : -1;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	hd_activity_parser_free(f->p);
	free(f->text);
	free(f);
	return 0;
}

/* The first handoff of the generator's payload for ARGS. */
static const struct hd_handoff *generated(struct fixture *f, const char *args)
{
	const struct hd_handoff *h;

	free(f->text);
	f->text = payload_generate(args, &f->len);
	parse_ok(f->p, f->text, f->len, &f->set);
	h = hd_activity_set_handoff(&f->set);
	assert_non_null(h);
	return h;
}

static const struct hd_handoff *parsed(struct fixture *f, const char *json)
{
	parse_ok(f->p, json, strlen(json), &f->set);
	return hd_activity_set_handoff(&f->set);
}

/* The member KEY of the vars object, or NULL. */
static const struct hd_node *var(const struct hd_handoff *h, const char *key)
{
	const struct hd_node *v = h->context.vars;

	for (const struct hd_node *m = v + 1; v && m < v + v->size; m += m->size)
		if (hd_str_eq(m->key, key))
			return m;
	return NULL;
}

static const char *entry_text(const struct hd_handoff *h, size_t i)
{
	return str_of(h->transcript.entries[i].text);
}

static void test_generated_handoff(void **state)
{
	const struct hd_handoff *h = generated(*state, "3");
	const struct hd_context *c = &h->context;
	const struct hd_transcript_entry *e;

	assert_str(h->activity_id, "Kx7Qb2ZrT9w1LmN4aP8sVd-us|0000003");
	assert_str(h->conversation_id, "Kx7Qb2ZrT9w1LmN4aP8sVd-us");
	assert_str(h->user.id, "dl_user_5c1e0b7a");
	assert_str(h->user.name, "Dana Customer");
	assert_str(h->bot.id, "bot-0a1b2c3d");
	assert_str(h->bot.role, "bot");
	assert_str(h->agent_message, "Customer asked for a human");
	assert_null(c->error);
	assert_str(c->field[HD_CTX_SCOPE]->str, "bot");
	assert_str(c->field[HD_CTX_LAST_TOPIC]->str, "Order status");
	assert_int_equal(c->field[HD_CTX_TOPICS]->kind, HD_ARRAY);
	assert_int_equal(c->field[HD_CTX_TOPICS]->count, 2);
	assert_str(c->field[HD_CTX_TOPICS][2].str, "Order status");
	assert_str(c->field[HD_CTX_LANGUAGE]->str, "en-US");
	assert_str(c->field[HD_CTX_BOT_NAME]->str, "Support Bot");
	assert_string_equal(hd_context_field_name(HD_CTX_LAST_PHRASE), "last_phrase");
	/* vars: every key as sent, custom ones included, values as their JSON types */
	assert_int_equal(c->vars->count, 12);
	assert_str(var(h, "Global.CustomerTier")->str, "gold");
	assert_true(var(h, "Global.OrderNumber")->is_int);
	assert_int_equal(var(h, "Global.OrderNumber")->i, 10042);
	assert_ptr_equal(var(h, "va_Language"), c->field[HD_CTX_LANGUAGE]);
	assert_null(h->transcript.error);
	assert_int_equal(h->transcript.count, 3);
	e = &h->transcript.entries[1];
	assert_str(e->id, "Kx7Qb2ZrT9w1LmN4aP8sVd-us|0000001");
	assert_str(e->type, "message");
	assert_str(e->role, "bot");
	assert_str(e->name, "Support Bot");
	assert_str(e->timestamp, "2026-11-20T09:15:04.100Z");
	assert_string_equal(entry_text(h, 0), "My order #10000 has not arrived, it was due on Tuesday "
			    "\xe2\x80\x94 \xc3\xbcn\xc3\xaf""c\xc3\xb8""d\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80 0");
	assert_str(h->transcript.entries[2].role, "user");
}

/* Raw pieces are the text as sent, found inside the payload without a second parse. */
static void test_raw_pieces(void **state)
{
	struct fixture *f = *state;
	const struct hd_handoff *h = generated(f, "3");
	const struct hd_transcript_entry *e = &h->transcript.entries[2];
	const char *content = strstr(f->text, "{\"activities\":[{\"type\":\"message\"");
	const char *entry = strstr(f->text, "{\"type\":\"message\",\"id\":\"Kx7Qb2ZrT9w1LmN4aP8sVd-us|0000002\"");

	assert_ptr_equal(h->raw.ptr, f->set.activities[0].raw.ptr);
	assert_non_null(content);
	assert_memory_equal(h->transcript.raw.ptr, content, h->transcript.raw.len);
	assert_int_equal(h->transcript.raw.ptr[h->transcript.raw.len - 1], '}');
	assert_memory_equal(e->raw.ptr, entry, e->raw.len);
	assert_int_equal(e->raw.ptr[e->raw.len - 1], '}');
	assert_non_null(strstr(str_of(h->context.raw), "\"va_Scope\":\"bot\""));
}

/* value and content sent as JSON strings give the same object; raw texts are decoded. */
static void test_value_and_content_as_strings(void **state)
{
	const struct hd_handoff *h = generated(*state, "3 --value-as-string --content-as-string");

	assert_null(h->context.error);
	assert_str(h->context.field[HD_CTX_LAST_TOPIC]->str, "Order status");
	assert_int_equal(var(h, "Global.OrderNumber")->i, 10042);
	assert_str(h->agent_message, "Customer asked for a human");
	assert_null(h->transcript.error);
	assert_int_equal(h->transcript.count, 3);
	assert_str(h->transcript.entries[1].name, "Support Bot");
	assert_string_equal(entry_text(h, 1), "I'm sorry to hear that. Let me check order #10000 for you. "
			    "Could you confirm the postcode?");
	assert_memory_equal(h->transcript.raw.ptr, "{\"activities\": [{", 17);
	assert_memory_equal(h->transcript.entries[0].raw.ptr, "{\"type\": \"message\"", 18);
	assert_memory_equal(h->context.raw.ptr, "{\"va_Scope\": \"bot\"", 18);
}

static void test_attachment_name_and_position(void **state)
{
	static const char *const args[] = {
		"2 --name transcript", "2 --name TRANSCRIPT", "2 --name tRaNsCrIpT", "2 --card-first",
	};

	for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++) {
		const struct hd_handoff *h = generated(*state, args[i]);
		assert_null(h->transcript.error);
		assert_int_equal(h->transcript.count, 2);
		assert_str(h->transcript.entries[0].role, "user");
	}
}

/* A card's content is walked too (the name comes last), but only the transcript stays. */
static void test_other_attachments_ignored(void **state)
{
	const struct hd_handoff *h = parsed(*state,
		"{\"activities\":[{\"type\":\"event\",\"name\":\"handoff.initiate\",\"attachments\":["
		"{\"content\":{\"activities\":[{\"id\":\"not-me\"}]},\"name\":\"Transcripts\"},"
		"{\"content\":{\"activities\":[{\"id\":\"me\"}]},\"name\":\"Transcript\"},"
		"{\"content\":{\"activities\":[{\"id\":\"nor-me\"}]},\"name\":\"transcript\"}]}]}");

	assert_int_equal(h->transcript.count, 1);
	assert_str(h->transcript.entries[0].id, "me");
}

static void test_transcript_missing_empty_or_by_url(void **state)
{
	const struct hd_handoff *h = generated(*state, "2 --no-transcript");

	assert_string_equal(h->transcript.error, "missing");
	assert_int_equal(h->transcript.count, 0);
	assert_null(h->transcript.raw.ptr);
	assert_str(h->context.field[HD_CTX_SCOPE]->str, "bot");

	h = generated(*state, "0");
	assert_null(h->transcript.error);
	assert_int_equal(h->transcript.count, 0);
	assert_null(h->transcript.entries);
	assert_str(h->transcript.raw, "{\"activities\":[]}");

	h = generated(*state, "2 --content-url");
	assert_string_equal(h->transcript.error, "content url only");
	assert_str(h->transcript.content_url, "https://files.example.invalid/transcript.json");
	assert_int_equal(h->transcript.count, 0);
}

/* The "transferring you" message comes first and stays first. */
static void test_mixed_set_keeps_order(void **state)
{
	struct fixture *f = *state;
	const struct hd_handoff *h = generated(f, "2 --mixed");

	assert_int_equal(f->set.count, 2);
	assert_str(f->set.activities[0].type, "message");
	assert_null(f->set.activities[0].handoff);
	assert_ptr_equal(f->set.activities[1].handoff, h);
	assert_str(h->activity_id, "Kx7Qb2ZrT9w1LmN4aP8sVd-us|0000003");
	assert_str(f->set.watermark, "4");
}

/* \u escapes and surrogate pairs decode to the same UTF-8 as the raw text. */
static void test_unicode_escapes(void **state)
{
	struct fixture *f = *state;
	char plain[512];
	const struct hd_handoff *h = generated(f, "2");

	snprintf(plain, sizeof(plain), "%s", entry_text(h, 0));
	h = generated(f, "2 --ascii");
	assert_non_null(strstr(f->text, "\\ud83d\\ude00"));
	assert_string_equal(entry_text(h, 0), plain);
	assert_str(h->context.field[HD_CTX_PHRASES][1].str, plain);
	h = generated(f, "2 --ascii --content-as-string --value-as-string");
	assert_string_equal(entry_text(h, 0), plain);
	assert_str(h->context.field[HD_CTX_PHRASES][1].str, plain);
}

static void test_nulls_where_strings_are_expected(void **state)
{
	const struct hd_handoff *h = generated(*state, "3 --nulls");
	const struct hd_node *nothing = var(h, "Global.Nothing");

	assert_null(h->transcript.error);
	assert_int_equal(h->transcript.count, 3);
	assert_null(h->transcript.entries[1].text.ptr);
	assert_null(h->transcript.entries[2].name.ptr);
	assert_str(h->transcript.entries[2].role, "user");
	assert_int_equal(h->context.field[HD_CTX_LAST_TOPIC]->kind, HD_NULL);
	assert_non_null(nothing);
	assert_int_equal(nothing->kind, HD_NULL);
	assert_str(nothing->raw, "null");
}

/* Without relatesTo the parties come from the event itself. */
static void test_parties_without_relates_to(void **state)
{
	const struct hd_handoff *h = parsed(*state,
		"{\"type\":\"event\",\"name\":\"handoff.initiate\",\"id\":\"e1\","
		"\"from\":{\"id\":\"b1\",\"name\":\"Bot\",\"role\":\"bot\"},"
		"\"recipient\":{\"id\":\"u1\",\"role\":\"user\"},"
		"\"value\":{\"va_LastPhrases\":\"agent please\",\"va_ConversationId\":\"conv-9\"}}");

	assert_str(h->bot.id, "b1");
	assert_str(h->bot.name, "Bot");
	assert_str(h->user.id, "u1");
	assert_null(h->user.name.ptr);
	assert_str(h->conversation_id, "conv-9");
	assert_str(h->context.field[HD_CTX_LAST_PHRASE]->str, "agent please");
	assert_null(h->agent_message.ptr);
	assert_string_equal(h->transcript.error, "missing");
}

/* A broken transcript or context inside a valid payload is reported, not fatal. */
static void test_broken_transcripts(void **state)
{
	static const struct {
		const char *attachment;
		const char *error;
		size_t count;
	} cases[] = {
		{ "{\"name\":\"Transcript\",\"content\":\"{\\\"activities\\\": [{\\\"id\\\": 1,}]}\"}",
		  "malformed JSON: expected a member, ',' or '}' at byte 25", 0 },
		{ "{\"name\":\"Transcript\",\"content\":\"not json\"}", "malformed JSON", 0 },
		{ "{\"name\":\"Transcript\",\"content\":\"[1,2]\"}", "not an object", 0 },
		{ "{\"name\":\"Transcript\",\"content\":{\"activities\":{}}}", "activities is not an array", 0 },
		{ "{\"name\":\"Transcript\",\"content\":{\"items\":[]}}", "no activities", 0 },
		{ "{\"name\":\"Transcript\",\"content\":42}", "not an object", 0 },
		{ "{\"name\":\"Transcript\"}", "no content", 0 },
		{ "{\"name\":\"Transcript\",\"content\":{\"activities\":[{\"id\":\"a\"},7,{\"id\":\"b\"}]}}",
		  "entry 2 is not an object", 2 },
	};
	char json[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(json, sizeof(json), "{\"activities\":[{\"type\":\"event\",\"name\":\"handoff.initiate\","
			 "\"value\":{\"va_Scope\":\"bot\"},\"attachments\":[%s]}]}", cases[i].attachment);
		const struct hd_handoff *h = parsed(*state, json);
		assert_non_null(h);
		if (!h->transcript.error || !strstr(h->transcript.error, cases[i].error))
			fail_msg("%s: want \"%s\", got \"%s\"", cases[i].attachment, cases[i].error,
				 h->transcript.error ? h->transcript.error : "(none)");
		assert_int_equal(h->transcript.count, cases[i].count);
		assert_str(h->context.field[HD_CTX_SCOPE]->str, "bot");
	}
}

static void test_broken_contexts(void **state)
{
	static const struct {
		const char *value;
		const char *error;
	} cases[] = {
		{ "\"Please transfer me\"", "malformed JSON" },
		{ "\"[1,2]\"", "not an object" },
		{ "[1,2]", "not an object" },
		{ "null", "missing" },
	};
	char json[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(json, sizeof(json), "{\"type\":\"event\",\"name\":\"handoff.initiate\",\"value\":%s}",
			 cases[i].value);
		const struct hd_handoff *h = parsed(*state, json);
		if (!h->context.error || !strstr(h->context.error, cases[i].error))
			fail_msg("%s: want \"%s\", got \"%s\"", cases[i].value, cases[i].error,
				 h->context.error ? h->context.error : "(none)");
		assert_null(h->context.vars);
		for (int fld = 0; fld < HD_CTX_NFIELDS; fld++)
			assert_null(h->context.field[fld]);
	}
}

/* Each handoff.initiate of a set gets its own handoff, however its parts were sent. */
static void test_two_handoffs_in_one_set(void **state)
{
	const struct hd_handoff *h = parsed(*state,
		"{\"activities\":["
		"{\"type\":\"event\",\"name\":\"handoff.initiate\",\"id\":\"h1\",\"value\":\"{\\\"k\\\":\\\"v1\\\"}\","
		"\"attachments\":[{\"name\":\"transcript\",\"content\":\"{\\\"activities\\\":[{\\\"id\\\":\\\"t1\\\"}]}\"}]},"
		"{\"type\":\"message\",\"value\":{\"k\":\"skipped\"},"
		"\"attachments\":[{\"name\":\"Transcript\",\"content\":{\"activities\":[{\"id\":\"x\"}]}}]},"
		"{\"type\":\"event\",\"name\":\"handoff.initiate\",\"id\":\"h2\",\"value\":{\"k\":\"v2\"},"
		"\"attachments\":[{\"name\":\"Transcript\",\"content\":{\"activities\":[{\"id\":\"t2\"},{\"id\":\"t3\"}]}}]}"
		"]}");
	struct fixture *f = *state;
	const struct hd_handoff *h2 = f->set.activities[2].handoff;

	assert_int_equal(f->set.handoffs, 2);
	assert_str(h->activity_id, "h1");
	assert_str(var(h, "k")->str, "v1");
	assert_int_equal(h->transcript.count, 1);
	assert_str(h->transcript.entries[0].id, "t1");
	assert_str(h2->activity_id, "h2");
	assert_str(var(h2, "k")->str, "v2");
	assert_int_equal(h2->transcript.count, 2);
	assert_str(h2->transcript.entries[1].id, "t3");
}

/* Deep values inside vars keep their structure and JSON types. */
static void test_vars_types(void **state)
{
	const struct hd_handoff *h = parsed(*state,
		"{\"type\":\"event\",\"name\":\"handoff.initiate\",\"value\":{"
		"\"i\":-7,\"big\":18446744073709551615,\"huge\":123456789012345678901234567890,"
		"\"f\":2.5e3,\"t\":true,\"n\":null,\"o\":{\"a\":[1,{\"b\":\"c\"}]},\"e\\u0301\":\"\"}}");
	const struct hd_node *o = var(h, "o");

	assert_true(var(h, "i")->is_int);
	assert_int_equal(var(h, "i")->i, -7);
	assert_false(var(h, "big")->is_int);
	assert_true(var(h, "big")->d > 1.8e19);
	assert_false(var(h, "huge")->is_int);
	assert_true(var(h, "huge")->d > 1.2e29);
	assert_false(var(h, "f")->is_int);
	assert_true(var(h, "f")->d == 2500.0);
	assert_int_equal(var(h, "t")->kind, HD_TRUE);
	assert_int_equal(var(h, "n")->kind, HD_NULL);
	assert_int_equal(o->count, 1);
	assert_int_equal(o[1].kind, HD_ARRAY);
	assert_str(o[1].key, "a");
	assert_int_equal(o[1].count, 2);
	assert_str(o[4].key, "b");
	assert_str(o[4].str, "c");
	assert_str(o->raw, "{\"a\":[1,{\"b\":\"c\"}]}");
	assert_non_null(var(h, "e\xcc\x81"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_generated_handoff, setup, teardown),
		cmocka_unit_test_setup_teardown(test_raw_pieces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_value_and_content_as_strings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_attachment_name_and_position, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_attachments_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transcript_missing_empty_or_by_url, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mixed_set_keeps_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unicode_escapes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nulls_where_strings_are_expected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parties_without_relates_to, setup, teardown),
		cmocka_unit_test_setup_teardown(test_broken_transcripts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_broken_contexts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_handoffs_in_one_set, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vars_types, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
