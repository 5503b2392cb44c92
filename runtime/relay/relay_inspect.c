/* relay_inspect.c - the inspection API's view of the relay's conversations (see
 * relay_inspect.h). Lists are built by collecting the matching conversations, sorting
 * them by key and cutting a page: conversations number at most limits.conversations, and
 * an operator's request is rare. */
#include "relay/relay_inspect.h"

#include "relay/conv_events.h"
#include "directline/directline.h"
#include "parse/json_simd.h"
#include "base/clock.h"
#include "base/json_text.h"
#include "relay/relay_internal.h"

#include <errno.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

static void add_string(struct evbuffer *out, const char *s)
{
	size_t cap = s ? strlen(s) * 6 + 3 : 0;
	char *buf = cap ? malloc(cap) : NULL;

	if (!s) {
		evbuffer_add(out, "null", 4);
		return;
	}
	if (!buf) {
		evbuffer_add(out, "\"\"", 2);
		return;
	}
	evbuffer_add(out, buf, json_text_string(buf, cap, 0, s));
	free(buf);
}

static void summarize(const struct conversation *c, struct relay_conv_summary *s)
{
	const struct conv_events *ev = c->events;

	memset(s, 0, sizeof(*s));
	s->key = c->key;
	s->state = conv_state_name(c->state);
	s->stream = !c->dl ? "none" : directline_parked(c->dl) ? "parked" : "streaming";
	s->handoff_id = c->handoff_id;
	s->route_json = c->route_json;
	if (ev) {
		s->opened_ms = ev->opened_ms;
		s->last_to_bot_ms = ev->last_to_bot_ms;
		s->last_to_hub_ms = ev->last_to_hub_ms;
		s->handoff_ms = ev->handoff_ms;
	}
	s->queued_to_bot = c->pending[QUEUE_TO_BOT];
	s->queued_to_hub = c->pending[QUEUE_TO_HUB];
	s->retrying = c->queues[QUEUE_TO_BOT].scheduled || c->queues[QUEUE_TO_HUB].scheduled;
}

struct each_ctx {
	relay_inspect_fn fn;
	void *arg;
};

static void each_one(struct conversation *c, void *arg)
{
	struct each_ctx *e = arg;
	struct relay_conv_summary s;

	summarize(c, &s);
	e->fn(&s, e->arg);
}

void relay_inspect_each(struct relay *r, relay_inspect_fn fn, void *arg)
{
	struct each_ctx e = { fn, arg };

	convstore_each(r->convs, each_one, &e);
}

static void add_ms(struct evbuffer *out, const char *name, uint64_t ms)
{
	if (ms)
		evbuffer_add_printf(out, ",\"%s\":%.3f", name, (double)ms / 1000.0);
	else
		evbuffer_add_printf(out, ",\"%s\":null", name);
}

/* The members every answer has: key, state, stream, times (unix seconds), queues. */
static void add_summary(struct evbuffer *out, const struct relay_conv_summary *s)
{
	uint64_t now = clock_wall_ms();

	evbuffer_add(out, "{\"key\":", 7);
	add_string(out, s->key);
	evbuffer_add_printf(out, ",\"state\":\"%s\",\"stream\":\"%s\"", s->state, s->stream);
	if (s->opened_ms)
		evbuffer_add_printf(out, ",\"age\":%.3f", (double)(now - s->opened_ms) / 1000.0);
	else
		evbuffer_add_printf(out, ",\"age\":null");
	add_ms(out, "opened_at", s->opened_ms);
	add_ms(out, "last_to_bot", s->last_to_bot_ms);
	add_ms(out, "last_to_hub", s->last_to_hub_ms);
	evbuffer_add_printf(out, ",\"queued\":{\"to_bot\":%u,\"to_hub\":%u},\"retrying\":%s", s->queued_to_bot,
			    s->queued_to_hub, s->retrying ? "true" : "false");
}

int relay_inspect_one(struct relay *r, const char *key, struct relay_conv_summary *s,
		      const struct conv_events **events)
{
	const struct conversation *c = convstore_get(r->convs, key);

	if (!c)
		return -ENOENT;
	summarize(c, s);
	*events = c->events;
	return 0;
}

/* ---- the list ---- */

struct list_ctx {
	const struct conversation **v;
	size_t n, cap;
	bool any_state;
	enum conv_state state;
	const char *after;
	bool oom;
};

static void collect(struct conversation *c, void *arg)
{
	struct list_ctx *l = arg;

	if ((!l->any_state && c->state != l->state) || (l->after && strcmp(c->key, l->after) <= 0) || l->oom)
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		const struct conversation **v = realloc(l->v, cap * sizeof(*v));

		if (!v) {
			l->oom = true;
			return;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = c;
}

static int by_key(const void *a, const void *b)
{
	const struct conversation *const *x = a, *const *y = b;

	return strcmp((*x)->key, (*y)->key);
}

int relay_inspect_list(struct relay *r, const char *state, size_t limit, const char *after,
		       struct evbuffer *out)
{
	struct list_ctx l = { .any_state = !state || !*state, .after = after && *after ? after : NULL };
	struct relay_conv_summary s;
	size_t i;

	if (!l.any_state && conv_state_parse(state, &l.state) < 0)
		return -EINVAL;
	if (limit == 0 || limit > RELAY_INSPECT_LIMIT_MAX)
		limit = limit ? RELAY_INSPECT_LIMIT_MAX : RELAY_INSPECT_LIMIT_DEFAULT;
	convstore_each(r->convs, collect, &l);
	if (l.oom) {
		free(l.v);
		return -ENOMEM;
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), by_key);
	evbuffer_add_printf(out, "{\"total\":%zu,\"conversations\":[", l.n);
	for (i = 0; i < l.n && i < limit; i++) {
		summarize(l.v[i], &s);
		if (i)
			evbuffer_add(out, ",", 1);
		add_summary(out, &s);
		evbuffer_add(out, "}", 1);
	}
	evbuffer_add(out, "],\"next\":", 9);
	add_string(out, i < l.n && i > 0 ? l.v[i - 1]->key : NULL);
	evbuffer_add(out, "}", 1);
	free(l.v);
	return 0;
}

/* ---- one conversation ---- */

struct keys_ctx {
	struct json_tree tree;
	uint32_t root;
	bool found;
};

static int keys_done(void *ctx, const struct json_slot *self, const struct json_slot *slots)
{
	struct keys_ctx *k = ctx;

	(void)slots;
	if (self->kind == HD_OBJECT) {
		k->root = self->node;
		k->found = true;
	}
	return 0;
}

/* The member names of the hub data object DATA, never their values. */
static void add_data_keys(struct evbuffer *out, const char *data)
{
	static const struct json_schema root = { .done = keys_done };
	struct keys_ctx k;
	struct json_walk w = { .root = &root, .ctx = &k, .tree = &k.tree, .max_depth = 64, .capture_root = true };
	struct hd_parse_error err;
	struct json_simd *js = json_simd_new();
	size_t len = data ? strlen(data) : 0;
	char *buf = data ? calloc(1, len + HD_PARSE_PADDING) : NULL;

	memset(&k, 0, sizeof(k));
	evbuffer_add(out, "[", 1);
	if (js && buf) {
		memcpy(buf, data, len);
		if (json_simd_walk(js, buf, len, len + HD_PARSE_PADDING, &w, &err) == 0 && k.found) {
			const struct hd_node *obj = &k.tree.nodes[k.root];
			uint32_t child = k.root + 1;

			for (uint32_t i = 0; i < obj->count; i++) {
				const struct hd_node *n = &k.tree.nodes[child];
				char *name = strndup(n->key.ptr, n->key.len);

				if (i)
					evbuffer_add(out, ",", 1);
				add_string(out, name ? name : "");
				free(name);
				child += n->size;
			}
		}
	}
	evbuffer_add(out, "]", 1);
	free(k.tree.nodes);
	free(buf);
	json_simd_free(js);
}

static void add_events(struct evbuffer *out, const struct conv_events *ev)
{
	evbuffer_add(out, "[", 1);
	for (unsigned i = 0; ev && i < ev->count; i++) {
		const struct conv_event *e = conv_events_at(ev, i);

		evbuffer_add_printf(out, "%s{\"at\":%.3f,\"event\":\"%s\",\"detail\":", i ? "," : "",
				    (double)e->at_ms / 1000.0, conv_event_kind_name(e->kind));
		add_string(out, e->detail);
		evbuffer_add(out, "}", 1);
	}
	evbuffer_add(out, "]", 1);
}

int relay_inspect_show(struct relay *r, const char *key, bool show_content, struct evbuffer *out)
{
	const struct conversation *c = convstore_get(r->convs, key);
	struct relay_conv_summary s;

	if (!c)
		return -ENOENT;
	summarize(c, &s);
	add_summary(out, &s);
	evbuffer_add(out, ",\"handoff_id\":", 14);
	add_string(out, c->handoff_id);
	evbuffer_add(out, ",\"dl_conversation_id\":", 22);
	add_string(out, c->dl_conversation_id);
	evbuffer_add_printf(out, ",\"route\":%s", c->route_json ? c->route_json : "null");
	evbuffer_add(out, ",\"data_keys\":", 13);
	add_data_keys(out, c->hub_data);
	if (show_content)
		evbuffer_add_printf(out, ",\"user\":%s,\"data\":%s", c->user_json ? c->user_json : "null",
				    c->hub_data ? c->hub_data : "null");
	evbuffer_add(out, ",\"events\":", 10);
	add_events(out, c->events);
	evbuffer_add(out, "}", 1);
	return 0;
}

static uint64_t value(const uint64_t *counter)
{
	return counter ? *counter : 0;
}

void relay_inspect_totals(const struct relay *r, struct relay_totals *t)
{
	t->to_bot = value(r->m_to_bot);
	t->to_hub = value(r->m_to_hub);
	t->retries = value(r->m_retries);
	t->dropped = value(r->m_dropped);
	t->handoffs_started = value(r->m_handoffs_started);
	t->handoffs_accepted = value(r->m_handoffs_accepted);
	t->handoffs_failed = value(r->m_handoffs_failed);
	t->handoffs_completed = value(r->m_handoffs_completed);
}

/* ---- unsticking ---- */

/* The front's id inside KEY ("<front>:<id>"), or NULL when KEY is not the front's. */
static const char *front_id(struct relay *r, const char *key)
{
	size_t n = strlen(r->front);

	if (strncmp(key, r->front, n) != 0 || key[n] != ':' || !convstore_get(r->convs, key))
		return NULL;
	return key + n + 1;
}

int relay_inspect_end(struct relay *r, const char *key)
{
	const char *id = front_id(r, key);

	return id ? relay_end(r, id) : -ENOENT;
}

int relay_inspect_return_to_bot(struct relay *r, const char *key)
{
	const char *id = front_id(r, key);
	struct conversation *c = id ? convstore_get(r->convs, key) : NULL;

	if (!c)
		return -ENOENT;
	if (c->state != CONV_ROUTING && c->state != CONV_AGENT)
		return -EINVAL;
	conv_events_add(&c->events, CONV_EV_STATE, "an operator gave the conversation back to the bot");
	return relay_handoff_event(r, id, "completed", "{\"return_to_bot\":true}");
}
