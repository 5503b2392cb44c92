/* handoff.c - the handoff object of a handoff.initiate event (handoffd/handoff.h).
 * While activity.c walks an activity, this file keeps what a handoff needs: the
 * captured `value` and the entries of the attachment named "transcript" in any case.
 * When the activity turns out to be a handoff.initiate event it builds the handoff:
 * parties, context fields, transcript, and the second parse of a context or transcript
 * sent as a JSON string. Problems in the context or transcript are reported in the
 * handoff, never by refusing the payload. Knows nothing about dispatch (activity.c)
 * or Lua (bindings/handoff_object.c). */
#include "parse/handoff.h"

#include "parse/activity.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { NO_NODE = UINT32_MAX, ARENA_CHUNK = 16 * 1024 };

struct arena_chunk {
	struct arena_chunk *next;
	size_t used, cap;
	char data[];
};

/* A handoff under construction: node and entry positions wait as indices until the
 * arrays they point into stop growing. */
struct handoff_build {
	struct hd_handoff h;
	size_t first_entry;
	uint32_t vars;
	uint32_t field[HD_CTX_NFIELDS];
};

enum attachment_slot { ATT_NAME, ATT_CONTENT, ATT_CONTENT_URL, ATT_ACTIVITIES, ATT_NSLOTS };
enum entry_slot { ENT_ID, ENT_TYPE, ENT_TEXT, ENT_TIMESTAMP, ENT_ROLE, ENT_NAME, ENT_NSLOTS };

#define VA(k) { k, sizeof(k) - 1 }
static const struct {
	const char *key;
	size_t len;
} context_keys[HD_CTX_NFIELDS] = {
	VA("va_Scope"), VA("va_LastTopic"), VA("va_Topics"), VA("va_LastPhrase"), VA("va_Phrases"),
	VA("va_AgentMessage"), VA("va_BotId"), VA("va_BotName"), VA("va_Language"),
	VA("va_ConversationId"),
};

static const char *const context_names[HD_CTX_NFIELDS] = {
	"scope", "last_topic", "topics", "last_phrase", "phrases",
	"agent_message", "bot_id", "bot_name", "language", "conversation_id",
};

/* {==== Arena: copies of what a second parse produced, alive until the next parse */

static void *arena_alloc(struct handoff_collector *hc, size_t n)
{
	struct arena_chunk *c = hc->arena;
	void *p;

	n = (n + 7) & ~(size_t)7;
	if (!c || c->cap - c->used < n) {
		size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
		c = malloc(sizeof(*c) + cap);
		if (!c) {
			hc->nomem = true;
			return NULL;
		}
		c->next = hc->arena;
		c->used = 0;
		c->cap = cap;
		hc->arena = c;
	}
	p = c->data + c->used;
	c->used += n;
	return p;
}

static void arena_free(struct arena_chunk *c)
{
	while (c) {
		struct arena_chunk *next = c->next;
		free(c);
		c = next;
	}
}

/* A copy of S followed by HD_PARSE_PADDING zero bytes, so that it can be parsed. */
static char *arena_padded(struct handoff_collector *hc, struct hd_str s)
{
	char *p = arena_alloc(hc, s.len + HD_PARSE_PADDING);

	if (p) {
		if (s.len)
			memcpy(p, s.ptr, s.len);
		memset(p + s.len, 0, HD_PARSE_PADDING);
	}
	return p;
}

/* Copies S unless it already lies in [DOC, DOC + LEN): strings a second parse
 * unescaped live in its parser, which the next second parse reuses. */
static void arena_keep(struct handoff_collector *hc, struct hd_str *s, const char *doc, size_t len)
{
	char *p;

	if (!s->ptr || (s->ptr >= doc && s->ptr <= doc + len))
		return;
	p = arena_alloc(hc, s->len + 1);
	if (p) {
		memcpy(p, s->ptr, s->len);
		p[s->len] = '\0';
	}
	s->ptr = p;
}

static const char *arena_printf(struct handoff_collector *hc, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static const char *arena_printf(struct handoff_collector *hc, const char *fmt, ...)
{
	char *p = arena_alloc(hc, 160);
	va_list ap;

	if (!p)
		return "out of memory";
	va_start(ap, fmt);
	vsnprintf(p, 160, fmt, ap);
	va_end(ap);
	return p;
}

/* }==== */

/* {==== Schemas of attachments and transcript entries */

static int entry_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	struct handoff_collector *hc = ctx;
	struct hd_transcript_entry *e;

	hc->entry_index++;
	if (self->kind != HD_OBJECT) {
		if (!hc->bad_entry)
			hc->bad_entry = hc->entry_index;
		return 0;
	}
	if (!activity_reserve((void **)&hc->entries, &hc->entries_cap, hc->nentries + 1, sizeof(*e)))
		return -ENOMEM;
	e = &hc->entries[hc->nentries++];
	e->id = s[ENT_ID].str;
	e->type = s[ENT_TYPE].str;
	e->role = s[ENT_ROLE].str;
	e->name = s[ENT_NAME].str;
	e->text = s[ENT_TEXT].str;
	e->timestamp = s[ENT_TIMESTAMP].str;
	e->raw = self->raw;
	return 0;
}

static const struct json_member entry_from_members[] = {
	{ JSON_KEY("role"), .slot = ENT_ROLE },
	{ JSON_KEY("name"), .slot = ENT_NAME },
};

static const struct json_schema entry_from = { JSON_MEMBERS(entry_from_members) };

static const struct json_member entry_members[] = {
	{ JSON_KEY("id"), .slot = ENT_ID },
	{ JSON_KEY("type"), .slot = ENT_TYPE },
	{ JSON_KEY("text"), .slot = ENT_TEXT },
	{ JSON_KEY("timestamp"), .slot = ENT_TIMESTAMP },
	{ JSON_KEY("from"), .slot = -1, .object = &entry_from },
};

static const struct json_schema entry_schema = {
	JSON_MEMBERS(entry_members), .nslots = ENT_NSLOTS, .done = entry_done,
};

static const struct json_member content_members[] = {
	{ JSON_KEY("activities"), .slot = ATT_ACTIVITIES, .each = &entry_schema },
};

static const struct json_schema content_schema = { JSON_MEMBERS(content_members) };

static int attachment_begin(void *ctx)
{
	struct handoff_collector *hc = ctx;

	hc->attachment_mark = hc->nentries;
	hc->entry_index = 0;
	hc->bad_entry = 0;
	return 0;
}

static bool is_transcript(struct hd_str name)
{
	return name.ptr && name.len == 10 && !strncasecmp(name.ptr, "transcript", 10);
}

/* The first attachment named "transcript" keeps its entries; any other drops them. */
static int attachment_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	struct handoff_collector *hc = ctx;
	struct transcript_candidate *t = &hc->transcript;

	if (t->found || self->kind != HD_OBJECT || !is_transcript(s[ATT_NAME].str)) {
		hc->nentries = hc->attachment_mark;
		return 0;
	}
	t->found = true;
	t->first = hc->attachment_mark;
	t->end = hc->nentries;
	t->bad_entry = hc->bad_entry;
	t->content = s[ATT_CONTENT];
	t->url = s[ATT_CONTENT_URL];
	t->activities = s[ATT_ACTIVITIES];
	return 0;
}

static const struct json_member attachment_members[] = {
	{ JSON_KEY("name"), .slot = ATT_NAME },
	{ JSON_KEY("contentUrl"), .slot = ATT_CONTENT_URL },
	{ JSON_KEY("content"), .slot = ATT_CONTENT, .object = &content_schema },
};

const struct json_schema handoff_attachment_schema = {
	JSON_MEMBERS(attachment_members), .nslots = ATT_NSLOTS,
	.begin = attachment_begin, .done = attachment_done,
};

/* A transcript sent as a JSON string is a document of its own. */
static int content_root_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	struct handoff_collector *hc = ctx;

	(void)self;
	hc->transcript.activities = s[ATT_ACTIVITIES];
	return 0;
}

static const struct json_schema content_root_schema = {
	JSON_MEMBERS(content_members), .nslots = ATT_NSLOTS, .done = content_root_done,
};

/* A context sent as a JSON string: the whole document is captured. */
static int context_root_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	(void)s;
	*(uint32_t *)ctx = self->node;
	return 0;
}

static const struct json_schema context_root_schema = { .done = context_root_done };

/* }==== */

/* {==== Second parses, of a context or transcript sent as a JSON string */

static int second_parse(struct handoff_collector *hc, const char *doc, size_t len,
			const struct json_walk *w, struct hd_parse_error *err)
{
	if (!hc->sub && !(hc->sub = json_simd_new()))
		return -ENOMEM;
	memset(err, 0, sizeof(*err));
	return json_simd_walk(hc->sub, doc, len, len + HD_PARSE_PADDING, w, err);
}

static const char *describe(struct handoff_collector *hc, const struct hd_parse_error *err)
{
	if (err->status == HD_PARSE_SHAPE)
		return "not an object";
	return arena_printf(hc, "%s at byte %zu", err->reason, err->offset);
}

static void context_from_string(struct handoff_collector *hc, struct handoff_build *b,
				struct hd_str text)
{
	uint32_t root = NO_NODE;
	struct json_walk w = { .root = &context_root_schema, .ctx = &root, .tree = &hc->tree,
			       .max_depth = hc->max_depth, .capture_root = true };
	struct hd_parse_error err;
	size_t mark = hc->tree.count;
	char *doc = arena_padded(hc, text);
	int rc;

	if (!doc)
		return;
	rc = second_parse(hc, doc, text.len, &w, &err);
	if (rc < 0) {
		hc->tree.count = mark;
		hc->nomem |= rc == -ENOMEM;
		b->h.context.error = describe(hc, &err);
		return;
	}
	for (size_t i = mark; i < hc->tree.count; i++) {
		arena_keep(hc, &hc->tree.nodes[i].key, doc, text.len);
		arena_keep(hc, &hc->tree.nodes[i].str, doc, text.len);
	}
	b->vars = root;
	b->h.context.raw = (struct hd_str){ doc, text.len };
}

static void transcript_from_string(struct handoff_collector *hc, struct handoff_build *b,
				   struct hd_str text)
{
	struct transcript_candidate *t = &hc->transcript;
	struct json_walk w = { .root = &content_root_schema, .ctx = hc, .max_depth = hc->max_depth };
	struct hd_parse_error err;
	char *doc = arena_padded(hc, text);
	size_t mark = hc->nentries;
	int rc;

	if (!doc)
		return;
	hc->entry_index = 0;
	hc->bad_entry = 0;
	t->activities = (struct json_slot){ 0 };
	rc = second_parse(hc, doc, text.len, &w, &err);
	if (rc < 0) {
		hc->nentries = mark;
		hc->nomem |= rc == -ENOMEM;
		b->h.transcript.error = describe(hc, &err);
		return;
	}
	for (size_t i = mark; i < hc->nentries; i++) {
		struct hd_transcript_entry *e = &hc->entries[i];
		struct hd_str *fields[] = { &e->id, &e->type, &e->role, &e->name, &e->text, &e->timestamp };
		for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++)
			arena_keep(hc, fields[f], doc, text.len);
	}
	t->first = mark;
	t->end = hc->nentries;
	t->bad_entry = hc->bad_entry;
	b->h.transcript.raw = (struct hd_str){ doc, text.len };
}

/* }==== */

/* {==== Building a handoff */

/* Points the well-known fields at their variables. Every key is looked at, so the
 * comparison first rules out what cannot match (no "va_" prefix, other length). */
static void find_fields(struct handoff_collector *hc, struct handoff_build *b)
{
	const struct hd_node *nodes = hc->tree.nodes;
	uint32_t end = b->vars + nodes[b->vars].size;

	for (uint32_t i = b->vars + 1; i < end; i += nodes[i].size) {
		struct hd_str key = nodes[i].key;
		if (key.len < 4 || memcmp(key.ptr, "va_", 3))
			continue;
		for (int f = 0; f < HD_CTX_NFIELDS; f++)
			if (key.len == context_keys[f].len && !memcmp(key.ptr, context_keys[f].key, key.len))
				b->field[f] = i;
		if (b->field[HD_CTX_LAST_PHRASE] == NO_NODE && hd_str_eq(key, "va_LastPhrases"))
			b->field[HD_CTX_LAST_PHRASE] = i;
	}
}

static void read_context(struct handoff_collector *hc, struct handoff_build *b,
			 const struct json_slot *value)
{
	switch (value->kind) {
	case HD_OBJECT:
		b->vars = value->node;
		b->h.context.raw = value->raw;
		break;
	case HD_STRING:
		context_from_string(hc, b, value->str);
		break;
	case HD_ABSENT:
	case HD_NULL:
		b->h.context.error = "missing";
		break;
	default:
		b->h.context.error = "not an object";
		break;
	}
	if (b->vars != NO_NODE)
		find_fields(hc, b);
}

static void read_transcript(struct handoff_collector *hc, struct handoff_build *b)
{
	struct transcript_candidate *t = &hc->transcript;
	struct hd_transcript *tr = &b->h.transcript;

	if (!t->found) {
		tr->error = "missing";
		return;
	}
	tr->content_url = t->url.str;
	switch (t->content.kind) {
	case HD_OBJECT:
		tr->raw = t->content.raw;
		break;
	case HD_STRING:
		transcript_from_string(hc, b, t->content.str);
		if (tr->error)
			return;
		break;
	case HD_ABSENT:
	case HD_NULL:
		tr->error = t->url.str.ptr ? "content url only" : "no content";
		return;
	default:
		tr->error = "not an object";
		return;
	}
	b->first_entry = t->first;
	tr->count = t->end - t->first;
	if (t->activities.kind == HD_ABSENT)
		tr->error = "no activities";
	else if (t->activities.kind != HD_ARRAY)
		tr->error = "activities is not an array";
	else if (t->bad_entry)
		tr->error = arena_printf(hc, "entry %zu is not an object", t->bad_entry);
}

static struct hd_party party(const struct json_slot *s, int first)
{
	return (struct hd_party){ s[first].str, s[first + 1].str, s[first + 2].str };
}

static bool party_sent(const struct json_slot *s, int first)
{
	return s[first].kind || s[first + 1].kind || s[first + 2].kind;
}

static struct hd_str node_str(struct handoff_collector *hc, uint32_t index)
{
	return index == NO_NODE ? (struct hd_str){ 0 } : hc->tree.nodes[index].str;
}

int handoff_collector_take(struct handoff_collector *hc, const struct json_slot *self,
			   const struct json_slot *s)
{
	struct handoff_build *b;

	if (!activity_reserve((void **)&hc->builds, &hc->builds_cap, hc->nbuilds + 1, sizeof(*b)))
		return -ENOMEM;
	b = &hc->builds[hc->nbuilds];
	memset(b, 0, sizeof(*b));
	b->vars = NO_NODE;
	for (int f = 0; f < HD_CTX_NFIELDS; f++)
		b->field[f] = NO_NODE;
	b->h.activity_id = s[ACT_ID].str;
	b->h.raw = self->raw;
	b->h.user = party(s, party_sent(s, ACT_REL_USER_ID) ? ACT_REL_USER_ID : ACT_RECIPIENT_ID);
	b->h.bot = party(s, party_sent(s, ACT_REL_BOT_ID) ? ACT_REL_BOT_ID : ACT_FROM_ID);
	read_context(hc, b, &s[ACT_VALUE]);
	read_transcript(hc, b);
	b->h.agent_message = node_str(hc, b->field[HD_CTX_AGENT_MESSAGE]);
	b->h.conversation_id = s[ACT_CONVERSATION_ID].str;
	if (!b->h.conversation_id.ptr)
		b->h.conversation_id = s[ACT_REL_CONVERSATION_ID].str;
	if (!b->h.conversation_id.ptr)
		b->h.conversation_id = node_str(hc, b->field[HD_CTX_CONVERSATION_ID]);
	if (hc->nomem)
		return -ENOMEM;
	return (int)hc->nbuilds++;
}

/* }==== */

int handoff_collector_init(struct handoff_collector *hc, unsigned max_depth)
{
	memset(hc, 0, sizeof(*hc));
	hc->max_depth = max_depth;
	return 0;
}

void handoff_collector_release(struct handoff_collector *hc)
{
	free(hc->tree.nodes);
	free(hc->entries);
	free(hc->builds);
	json_simd_free(hc->sub);
	arena_free(hc->arena);
	memset(hc, 0, sizeof(*hc));
}

void handoff_collector_reset(struct handoff_collector *hc)
{
	hc->tree.count = 0;
	hc->nentries = 0;
	hc->nbuilds = 0;
	arena_free(hc->arena);
	hc->arena = NULL;
	hc->nomem = false;
}

void handoff_collector_begin(struct handoff_collector *hc)
{
	hc->tree_mark = hc->tree.count;
	hc->entries_mark = hc->nentries;
	memset(&hc->transcript, 0, sizeof(hc->transcript));
}

void handoff_collector_drop(struct handoff_collector *hc)
{
	hc->tree.count = hc->tree_mark;
	hc->nentries = hc->entries_mark;
}

static const struct hd_node *node_at(struct handoff_collector *hc, uint32_t index)
{
	return index == NO_NODE ? NULL : &hc->tree.nodes[index];
}

const struct hd_handoff *handoff_collector_get(struct handoff_collector *hc, size_t index)
{
	struct handoff_build *b = &hc->builds[index];

	b->h.transcript.entries = b->h.transcript.count ? &hc->entries[b->first_entry] : NULL;
	b->h.context.vars = node_at(hc, b->vars);
	for (int f = 0; f < HD_CTX_NFIELDS; f++)
		b->h.context.field[f] = node_at(hc, b->field[f]);
	return &b->h;
}

const char *hd_context_field_name(enum hd_context_field f)
{
	return (unsigned)f < HD_CTX_NFIELDS ? context_names[f] : NULL;
}

const struct hd_handoff *hd_activity_set_handoff(const struct hd_activity_set *set)
{
	for (size_t i = 0; i < set->count; i++)
		if (set->activities[i].handoff)
			return set->activities[i].handoff;
	return NULL;
}
