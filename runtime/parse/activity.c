/* activity.c - parsing what arrives from Direct Line (handoffd/activity.h): an
 * ActivitySet or a single activity, validated whole in one pass (json_simd.c), into
 * the watermark and each activity's dispatch fields and raw JSON. Owns the shape of an
 * activity and the limits; handoff.c builds the handoff of handoff.initiate events
 * from the same pass. The payload is accepted whole or refused whole, so nothing of a
 * bad payload can be dispatched. */
#include "parse/activity.h"

#include "parse/handoff.h"
#include "parse/json_simd.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_DEPTH_LIMIT = 1024 };	/* the walk recurses once per level */

struct hd_activity_parser {
	struct handoff_collector hc;	/* first: handoff.c's callbacks see the parser as it */
	struct hd_parse_opts opts;
	struct json_simd *js;
	char *copy;			/* the input, when it came without padding */
	size_t copy_cap;
	struct hd_activity *acts;
	size_t nacts, acts_cap;
	int *handoff_of;		/* per activity: its handoff's index, or -1 */
	size_t handoff_cap;
	const char *buf;		/* the payload being parsed */
	struct hd_parse_error *err;
	struct hd_str watermark;
	bool is_set;
};

/* {==== Callbacks of the walk */

static int shape(struct hd_activity_parser *p, const struct hd_str *at, const char *what,
		 size_t index)
{
	return json_simd_fail(p->err, HD_PARSE_SHAPE, at->ptr ? (size_t)(at->ptr - p->buf) : 0,
			      "wrong shape: activity %zu: %s", index, what);
}

/* Dispatch fields must be strings when present: an id that is a number would dedupe
 * wrongly, so the payload is refused rather than guessed at. */
static int check_strings(struct hd_activity_parser *p, const struct json_slot *s)
{
	static const struct { int slot; const char *what; } fields[] = {
		{ ACT_ID, "id is not a string" },
		{ ACT_TYPE, "type is not a string" },
		{ ACT_NAME, "name is not a string" },
		{ ACT_FROM_ID, "from.id is not a string" },
		{ ACT_FROM_ROLE, "from.role is not a string" },
		{ ACT_REPLY_TO_ID, "replyToId is not a string" },
		{ ACT_CLIENT_ACTIVITY_ID, "channelData.clientActivityID is not a string" },
	};

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const struct json_slot *f = &s[fields[i].slot];
		if (f->kind != HD_ABSENT && f->kind != HD_NULL && f->kind != HD_STRING)
			return shape(p, &f->raw, fields[i].what, p->nacts);
	}
	return 0;
}

static bool is_handoff(const struct json_slot *s)
{
	return hd_str_eq(s[ACT_TYPE].str, "event") && hd_str_eq(s[ACT_NAME].str, "handoff.initiate");
}

static int add_activity(struct hd_activity_parser *p, const struct json_slot *self,
			const struct json_slot *s)
{
	struct hd_activity *a;
	int rc = check_strings(p, s), handoff = -1;

	if (rc)
		return rc;
	if (!activity_reserve((void **)&p->acts, &p->acts_cap, p->nacts + 1, sizeof(*a)) ||
	    !activity_reserve((void **)&p->handoff_of, &p->handoff_cap, p->nacts + 1, sizeof(int)))
		return -ENOMEM;
	if (is_handoff(s)) {
		if ((handoff = handoff_collector_take(&p->hc, self, s)) < 0)
			return handoff;
	} else {
		handoff_collector_drop(&p->hc);
	}
	a = &p->acts[p->nacts];
	*a = (struct hd_activity){
		.id = s[ACT_ID].str, .type = s[ACT_TYPE].str, .name = s[ACT_NAME].str,
		.from_id = s[ACT_FROM_ID].str, .from_role = s[ACT_FROM_ROLE].str,
		.reply_to_id = s[ACT_REPLY_TO_ID].str,
		.client_activity_id = s[ACT_CLIENT_ACTIVITY_ID].str,
		.raw = self->raw, .offset = (size_t)(self->raw.ptr - p->buf),
	};
	p->handoff_of[p->nacts++] = handoff;
	return 0;
}

static int activity_begin(void *ctx)
{
	handoff_collector_begin(&((struct hd_activity_parser *)ctx)->hc);
	return 0;
}

static int activity_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	struct hd_activity_parser *p = ctx;

	if (self->kind != HD_OBJECT)
		return shape(p, &self->raw, "not an object", p->nacts);
	return add_activity(p, self, s);
}

static int set_watermark(struct hd_activity_parser *p, const struct json_slot *w)
{
	switch (w->kind) {
	case HD_STRING:
		p->watermark = w->str;
		return 0;
	case HD_NUMBER:		/* opaque either way: keep its text */
		p->watermark = w->raw;
		return 0;
	case HD_ABSENT:
	case HD_NULL:
		return 0;
	default:
		return json_simd_fail(p->err, HD_PARSE_SHAPE, (size_t)(w->raw.ptr - p->buf),
				      "wrong shape: watermark is not a string");
	}
}

/* The root is an ActivitySet when it has "activities", else a single activity. */
static int root_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	struct hd_activity_parser *p = ctx;
	const struct json_slot *acts = &s[ACT_ACTIVITIES];

	if (acts->kind == HD_ABSENT)
		return add_activity(p, self, s);
	/* What the set's own members captured stays unreferenced until the next parse:
	 * dropping it here would drop what the last activity kept. */
	if (acts->kind != HD_ARRAY)
		return json_simd_fail(p->err, HD_PARSE_SHAPE, (size_t)(acts->raw.ptr - p->buf),
				      "wrong shape: activities is not an array");
	p->is_set = true;
	return set_watermark(p, &s[ACT_WATERMARK]);
}

/* }==== */

/* {==== The shape of an activity: what dispatch and handoff.c read from it */

#define PARTY_SCHEMA(name, first) \
	static const struct json_member name##_members[] = { \
		{ JSON_KEY("id"), .slot = (first) }, \
		{ JSON_KEY("name"), .slot = (first) + 1 }, \
		{ JSON_KEY("role"), .slot = (first) + 2 }, \
	}; \
	static const struct json_schema name = { JSON_MEMBERS(name##_members) }

PARTY_SCHEMA(from_schema, ACT_FROM_ID);
PARTY_SCHEMA(recipient_schema, ACT_RECIPIENT_ID);
PARTY_SCHEMA(rel_user_schema, ACT_REL_USER_ID);
PARTY_SCHEMA(rel_bot_schema, ACT_REL_BOT_ID);

static const struct json_member conversation_members[] = {
	{ JSON_KEY("id"), .slot = ACT_CONVERSATION_ID },
};
static const struct json_schema conversation_schema = { JSON_MEMBERS(conversation_members) };

static const struct json_member rel_conversation_members[] = {
	{ JSON_KEY("id"), .slot = ACT_REL_CONVERSATION_ID },
};
static const struct json_schema rel_conversation_schema = { JSON_MEMBERS(rel_conversation_members) };

static const struct json_member channel_data_members[] = {
	{ JSON_KEY("clientActivityID"), .slot = ACT_CLIENT_ACTIVITY_ID },
};
static const struct json_schema channel_data_schema = { JSON_MEMBERS(channel_data_members) };

static const struct json_member relates_to_members[] = {
	{ JSON_KEY("user"), .slot = -1, .object = &rel_user_schema },
	{ JSON_KEY("bot"), .slot = -1, .object = &rel_bot_schema },
	{ JSON_KEY("conversation"), .slot = -1, .object = &rel_conversation_schema },
};
static const struct json_schema relates_to_schema = { JSON_MEMBERS(relates_to_members) };

static const struct json_member activity_members[] = {
	{ JSON_KEY("type"), .slot = ACT_TYPE },
	{ JSON_KEY("id"), .slot = ACT_ID },
	{ JSON_KEY("name"), .slot = ACT_NAME },
	{ JSON_KEY("from"), .slot = -1, .object = &from_schema },
	{ JSON_KEY("replyToId"), .slot = ACT_REPLY_TO_ID },
	{ JSON_KEY("channelData"), .slot = -1, .object = &channel_data_schema },
	{ JSON_KEY("conversation"), .slot = -1, .object = &conversation_schema },
	{ JSON_KEY("recipient"), .slot = -1, .object = &recipient_schema },
	{ JSON_KEY("value"), .slot = ACT_VALUE, .capture = true },
	{ JSON_KEY("attachments"), .slot = ACT_ATTACHMENTS, .each = &handoff_attachment_schema },
	{ JSON_KEY("relatesTo"), .slot = -1, .object = &relates_to_schema },
};

static const struct json_schema activity_schema = {
	JSON_MEMBERS(activity_members), .nslots = ACT_NSLOTS,
	.begin = activity_begin, .done = activity_done,
};

static const struct json_member set_members[] = {
	{ JSON_KEY("activities"), .slot = ACT_ACTIVITIES, .each = &activity_schema },
	{ JSON_KEY("watermark"), .slot = ACT_WATERMARK },
};

static const struct json_schema root_schema = {
	JSON_MEMBERS(set_members), .also = &activity_schema, .nslots = ACT_NSLOTS,
	.begin = activity_begin, .done = root_done,
};

/* }==== */

struct hd_activity_parser *hd_activity_parser_new(const struct hd_parse_opts *opts)
{
	static const struct hd_parse_opts defaults = HD_PARSE_OPTS_DEFAULT;
	struct hd_activity_parser *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->opts = opts ? *opts : defaults;
	if (p->opts.max_depth < 1)
		p->opts.max_depth = 1;
	if (p->opts.max_depth > MAX_DEPTH_LIMIT)
		p->opts.max_depth = MAX_DEPTH_LIMIT;
	handoff_collector_init(&p->hc, p->opts.max_depth);
	p->js = json_simd_new();
	if (!p->js) {
		hd_activity_parser_free(p);
		return NULL;
	}
	return p;
}

void hd_activity_parser_free(struct hd_activity_parser *p)
{
	if (!p)
		return;
	handoff_collector_release(&p->hc);
	json_simd_free(p->js);
	free(p->copy);
	free(p->acts);
	free(p->handoff_of);
	free(p);
}

/* A padded copy of BUF, for inputs that cannot be read in place. */
static const char *padded(struct hd_activity_parser *p, const char *buf, size_t len)
{
	size_t need = len + HD_PARSE_PADDING;

	if (need > p->copy_cap) {
		char *c = malloc(need);
		if (!c)
			return NULL;
		free(p->copy);
		p->copy = c;
		p->copy_cap = need;
	}
	memcpy(p->copy, buf, len);
	memset(p->copy + len, 0, HD_PARSE_PADDING);
	return p->copy;
}

static void publish(struct hd_activity_parser *p, struct hd_activity_set *set)
{
	set->handoffs = 0;
	for (size_t i = 0; i < p->nacts; i++) {
		p->acts[i].handoff = p->handoff_of[i] < 0 ? NULL
			: handoff_collector_get(&p->hc, (size_t)p->handoff_of[i]);
		set->handoffs += p->handoff_of[i] >= 0;
	}
	set->watermark = p->watermark;
	set->is_set = p->is_set;
	set->count = p->nacts;
	set->activities = p->nacts ? p->acts : NULL;
}

static int walk(struct hd_activity_parser *p, const char *buf, size_t len, size_t cap)
{
	struct json_walk w = { .root = &root_schema, .ctx = p, .tree = &p->hc.tree,
			       .max_depth = p->opts.max_depth };

	if (cap < len + HD_PARSE_PADDING) {
		if (!(buf = padded(p, buf, len)))
			return -ENOMEM;
		cap = len + HD_PARSE_PADDING;
	}
	p->buf = buf;
	return json_simd_walk(p->js, buf, len, cap, &w, p->err);
}

int hd_activity_parse(struct hd_activity_parser *p, const char *buf, size_t len, size_t cap,
		      struct hd_activity_set *set, struct hd_parse_error *err)
{
	int rc;

	memset(set, 0, sizeof(*set));
	memset(err, 0, sizeof(*err));
	p->nacts = 0;
	p->watermark = (struct hd_str){ 0 };
	p->is_set = false;
	p->err = err;
	handoff_collector_reset(&p->hc);
	if (len > p->opts.max_bytes)
		return json_simd_fail(err, HD_PARSE_SIZE, p->opts.max_bytes,
				      "payload too large: %zu bytes, limit %zu", len, p->opts.max_bytes);
	rc = walk(p, buf, len, cap);
	if (rc == -ENOMEM)
		json_simd_fail(err, HD_PARSE_NOMEM, 0, "out of memory");
	else if (rc < 0)	/* a reason for every refusal, even one that cannot happen */
		json_simd_fail(err, HD_PARSE_SYNTAX, 0, "internal error %d", rc);
	if (rc < 0) {
		p->nacts = 0;
		handoff_collector_reset(&p->hc);
		return rc == -ENOMEM ? rc : -EPROTO;
	}
	publish(p, set);
	return 0;
}
