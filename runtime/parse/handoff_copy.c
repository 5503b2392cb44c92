/* handoff_copy.c - a handoff that outlives its parse (hd_handoff_copy_to, handoffd/handoff.h).
 * A parsed handoff points into the input, the parser's unescape buffers and its arena,
 * all reused by the next parse. The copy is one block, in memory the caller gives: the
 * struct, the transcript entries, the context's nodes, then the bytes. The event's JSON
 * text and the decoded context and transcript texts are copied whole, since nearly
 * every string lies inside one of them; only the rest (escaped strings, error
 * messages) is copied one by one.
 * Parsing is activity.c's and handoff.c's; using the copy is the caller's. */
#include <handoffd/handoff.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A text copied whole, and where it goes in the copy's bytes. */
struct region {
	struct hd_str text;
	size_t off;
};

/* The copy is made in two passes over the same code: the first (BYTES NULL) only counts
 * the bytes, the second places every string into them. */
struct copier {
	struct region region[3];
	int nregions;
	size_t used;
	char *bytes;
};

static bool inside(struct hd_str outer, struct hd_str s)
{
	uintptr_t o = (uintptr_t)outer.ptr, p = (uintptr_t)s.ptr;

	return p >= o && p - o <= outer.len && s.len <= outer.len - (p - o);
}

static void add_region(struct copier *c, struct hd_str s)
{
	for (int i = 0; s.ptr && i < c->nregions; i++)
		if (inside(c->region[i].text, s))
			return;
	if (!s.ptr)
		return;
	c->region[c->nregions++] = (struct region){ s, c->used };
	if (c->bytes)
		memcpy(c->bytes + c->used, s.ptr, s.len);
	c->used += s.len;
}

static void place_elsewhere(struct copier *c, struct hd_str *s)
{
	for (int i = 1; i < c->nregions; i++) {
		const struct region *r = &c->region[i];
		if (inside(r->text, *s)) {
			if (c->bytes)
				s->ptr = c->bytes + r->off + (size_t)(s->ptr - r->text.ptr);
			return;
		}
	}
	if (c->bytes) {
		memcpy(c->bytes + c->used, s->ptr, s->len);
		s->ptr = c->bytes + c->used;
	}
	c->used += s->len;
}

/* Makes *S point into the copy's bytes. Counting, it only reserves room for S when no
 * region holds it, and writes nothing. Nearly every string lies in the first region
 * (the event's text, at offset 0), so that one is tried here. */
static inline void place(struct copier *c, struct hd_str *s)
{
	if (!s->ptr)
		return;
	if (inside(c->region[0].text, *s)) {
		if (c->bytes)
			s->ptr = c->bytes + (size_t)(s->ptr - c->region[0].text.ptr);
		return;
	}
	place_elsewhere(c, s);
}

static void place_cstr(struct copier *c, const char **s)
{
	struct hd_str str = { *s, *s ? strlen(*s) + 1 : 0 };

	place(c, &str);
	if (c->bytes)
		*s = str.ptr;
}

static void place_party(struct copier *c, struct hd_party *p)
{
	place(c, &p->id);
	place(c, &p->name);
	place(c, &p->role);
}

static void place_entries(struct copier *c, struct hd_transcript_entry *e, size_t n)
{
	for (; n > 0; n--, e++) {
		place(c, &e->id);
		place(c, &e->type);
		place(c, &e->role);
		place(c, &e->name);
		place(c, &e->text);
		place(c, &e->timestamp);
		place(c, &e->raw);
	}
}

static void place_nodes(struct copier *c, struct hd_node *n, size_t count)
{
	for (; count > 0; count--, n++) {
		place(c, &n->key);
		place(c, &n->str);
		place(c, &n->raw);
	}
}

/* Places every string of H, the regions first. Counting, H is the original and is only
 * read (hence the casts); copying, it is the copy, arrays included. */
static void place_all(struct copier *c, struct hd_handoff *h)
{
	add_region(c, h->raw);
	add_region(c, h->context.raw);
	add_region(c, h->transcript.raw);
	place(c, &h->activity_id);
	place(c, &h->conversation_id);
	place(c, &h->agent_message);
	place(c, &h->raw);
	place_party(c, &h->user);
	place_party(c, &h->bot);
	place(c, &h->context.raw);
	place_cstr(c, &h->context.error);
	place(c, &h->transcript.raw);
	place(c, &h->transcript.content_url);
	place_cstr(c, &h->transcript.error);
	place_entries(c, (struct hd_transcript_entry *)h->transcript.entries, h->transcript.count);
	place_nodes(c, (struct hd_node *)h->context.vars, h->context.vars ? h->context.vars->size : 0);
}

/* Copies H's arrays after the struct at COPY and points the copy at them. */
static void copy_arrays(struct hd_handoff *copy, const struct hd_handoff *h, size_t nnodes)
{
	struct hd_transcript_entry *entries = (struct hd_transcript_entry *)(copy + 1);
	struct hd_node *nodes = (struct hd_node *)(entries + h->transcript.count);

	*copy = *h;
	copy->transcript.entries = h->transcript.count ? entries : NULL;
	if (h->transcript.count)
		memcpy(entries, h->transcript.entries, h->transcript.count * sizeof(*entries));
	copy->context.vars = nnodes ? nodes : NULL;
	if (nnodes)
		memcpy(nodes, h->context.vars, nnodes * sizeof(*nodes));
	for (int f = 0; f < HD_CTX_NFIELDS; f++) {
		const struct hd_node *n = h->context.field[f];
		copy->context.field[f] = n && nnodes ? nodes + (n - h->context.vars) : NULL;
	}
}

/* The bytes of the struct and its arrays, or 0 when they would not fit in a size_t. */
static size_t arrays_size(const struct hd_handoff *h)
{
	size_t nnodes = h->context.vars ? h->context.vars->size : 0;

	if (h->transcript.count > SIZE_MAX / 4 / sizeof(struct hd_transcript_entry) ||
	    nnodes > SIZE_MAX / 4 / sizeof(struct hd_node))
		return 0;
	return sizeof(*h) + h->transcript.count * sizeof(struct hd_transcript_entry) +
	       nnodes * sizeof(struct hd_node);
}

size_t hd_handoff_copy_size(const struct hd_handoff *h)
{
	size_t arrays = arrays_size(h);
	struct copier c = { .nregions = 0 };

	place_all(&c, (struct hd_handoff *)h);
	return arrays && c.used <= SIZE_MAX - arrays ? arrays + c.used : 0;
}

struct hd_handoff *hd_handoff_copy_to(void *mem, const struct hd_handoff *h)
{
	struct hd_handoff *copy = mem;
	struct copier c = { .nregions = 0, .bytes = (char *)mem + arrays_size(h) };

	copy_arrays(copy, h, h->context.vars ? h->context.vars->size : 0);
	place_all(&c, copy);
	return copy;
}
