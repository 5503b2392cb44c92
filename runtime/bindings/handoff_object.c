/* bindings/handoff_object.c - the handoff object as Lua sees it, built in C from a
 * struct hd_handoff (handoff.c): plain tables for the parties, the context and the
 * transcript, so routing code never decodes JSON, and one `raw` userdata holding a copy
 * of the event's JSON text, which hands out the raw context, transcript and entries on
 * demand so a hub script can forward them verbatim. Also the `handoff.payload` module.
 * Parsing lives in activity.c and handoff.c; this file only translates. */
#include "handoff_object.h"

#include <handoffd/activity.h>

#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RAW_METATABLE "handoff.raw"
#define PARSER_KEY "handoff.payload.parser"

/* {==== The raw userdata: one block holding the spans and the bytes they point into */

struct raw_span {
	size_t off;
	size_t len;
	bool present;
};

struct handoff_raw {
	size_t nentries;
	struct raw_span activity, context, transcript;
	struct raw_span entries[];	/* followed by the bytes */
};

/* The userdata holds the block; the block lives outside Lua's heap, since a payload of
 * megabytes counted as Lua allocation would pull every next collection forward. */
struct raw_box {
	struct handoff_raw *block;
};

/* Where the copied pieces go: the event's text first, then the context and transcript
 * texts that were decoded from JSON strings and so are not inside it. */
struct layout {
	struct hd_str region[3];
	size_t off[3];
	int n;
	size_t total;
};

static bool inside(struct hd_str outer, struct hd_str s)
{
	return outer.ptr && s.ptr >= outer.ptr && s.ptr + s.len <= outer.ptr + outer.len;
}

static void layout_add(struct layout *l, struct hd_str s)
{
	if (!s.ptr)
		return;
	for (int i = 0; i < l->n; i++)
		if (inside(l->region[i], s))
			return;
	l->region[l->n] = s;
	l->off[l->n++] = l->total;
	l->total += s.len;
}

static struct raw_span layout_span(const struct layout *l, struct hd_str s)
{
	for (int i = 0; s.ptr && i < l->n; i++)
		if (inside(l->region[i], s))
			return (struct raw_span){ l->off[i] + (size_t)(s.ptr - l->region[i].ptr), s.len, true };
	return (struct raw_span){ 0, 0, false };
}

static char *raw_bytes(struct handoff_raw *r)
{
	return (char *)&r->entries[r->nentries];
}

static void push_raw(lua_State *L, const struct hd_handoff *h)
{
	const struct hd_transcript *t = &h->transcript;
	struct layout l = { .n = 0 };
	struct raw_box *box = lua_newuserdatauv(L, sizeof(*box), 0);
	struct handoff_raw *r;

	box->block = NULL;	/* collectable as it is if the allocation below fails */
	luaL_setmetatable(L, RAW_METATABLE);
	layout_add(&l, h->raw);
	layout_add(&l, h->context.raw);
	layout_add(&l, t->raw);
	r = malloc(sizeof(*r) + t->count * sizeof(r->entries[0]) + l.total);
	if (!r)
		luaL_error(L, "not enough memory");
	box->block = r;
	r->nentries = t->count;
	r->activity = layout_span(&l, h->raw);
	r->context = layout_span(&l, h->context.raw);
	r->transcript = layout_span(&l, t->raw);
	for (size_t i = 0; i < t->count; i++)
		r->entries[i] = layout_span(&l, t->entries[i].raw);
	for (int i = 0; i < l.n; i++)
		memcpy(raw_bytes(r) + l.off[i], l.region[i].ptr, l.region[i].len);
}

static struct handoff_raw *check_raw(lua_State *L)
{
	return ((struct raw_box *)luaL_checkudata(L, 1, RAW_METATABLE))->block;
}

static int l_raw_gc(lua_State *L)
{
	struct raw_box *box = luaL_checkudata(L, 1, RAW_METATABLE);

	free(box->block);
	box->block = NULL;
	return 0;
}

static int push_span(lua_State *L, struct handoff_raw *r, struct raw_span s)
{
	if (!s.present)
		luaL_pushfail(L);
	else
		lua_pushlstring(L, raw_bytes(r) + s.off, s.len);
	return 1;
}

static int l_raw_activity(lua_State *L)
{
	struct handoff_raw *r = check_raw(L);
	return push_span(L, r, r->activity);
}

static int l_raw_context(lua_State *L)
{
	struct handoff_raw *r = check_raw(L);
	return push_span(L, r, r->context);
}

static int l_raw_transcript(lua_State *L)
{
	struct handoff_raw *r = check_raw(L);
	return push_span(L, r, r->transcript);
}

static int l_raw_entry(lua_State *L)
{
	struct handoff_raw *r = check_raw(L);
	lua_Integer i = luaL_checkinteger(L, 2);

	if (i < 1 || (lua_Unsigned)i > r->nentries) {
		luaL_pushfail(L);
		return 1;
	}
	return push_span(L, r, r->entries[i - 1]);
}

static int l_raw_len(lua_State *L)
{
	struct handoff_raw *r = check_raw(L);

	lua_pushinteger(L, (lua_Integer)r->nentries);
	return 1;
}

static const luaL_Reg raw_methods[] = {
	{ "activity", l_raw_activity },
	{ "context", l_raw_context },
	{ "entry", l_raw_entry },
	{ "transcript", l_raw_transcript },
	{ NULL, NULL },
};

static void register_raw(lua_State *L)
{
	if (!luaL_newmetatable(L, RAW_METATABLE)) {
		lua_pop(L, 1);
		return;
	}
	luaL_newlib(L, raw_methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, l_raw_len);
	lua_setfield(L, -2, "__len");
	lua_pushcfunction(L, l_raw_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);
}

/* }==== */

/* {==== Tables */

static void set_str(lua_State *L, const char *key, struct hd_str s)
{
	if (!s.ptr)
		return;
	lua_pushlstring(L, s.ptr, s.len);
	lua_setfield(L, -2, key);
}

static void push_party(lua_State *L, const struct hd_party *p)
{
	lua_createtable(L, 0, 3);
	set_str(L, "id", p->id);
	set_str(L, "name", p->name);
	set_str(L, "role", p->role);
}

/* A JSON value as its Lua type; a JSON null is the light userdata NULL that lua-cjson
 * calls cjson.null, so that a key sent with null stays in the table. */
static void push_node(lua_State *L, const struct hd_node *n)
{
	const struct hd_node *c = n + 1;

	luaL_checkstack(L, 3, "context nested too deep");
	switch (n->kind) {
	case HD_OBJECT:
		lua_createtable(L, 0, (int)n->count);
		for (uint32_t i = 0; i < n->count; i++, c += c->size) {
			lua_pushlstring(L, c->key.ptr ? c->key.ptr : "", c->key.len);
			push_node(L, c);
			lua_rawset(L, -3);
		}
		break;
	case HD_ARRAY:
		lua_createtable(L, (int)n->count, 0);
		for (uint32_t i = 0; i < n->count; i++, c += c->size) {
			push_node(L, c);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		break;
	case HD_STRING:
		lua_pushlstring(L, n->str.ptr, n->str.len);
		break;
	case HD_NUMBER:
		if (n->is_int)
			lua_pushinteger(L, (lua_Integer)n->i);
		else
			lua_pushnumber(L, (lua_Number)n->d);
		break;
	case HD_TRUE:
	case HD_FALSE:
		lua_pushboolean(L, n->kind == HD_TRUE);
		break;
	default:
		lua_pushlightuserdata(L, NULL);
		break;
	}
}

/* The context table: vars converted once, and each well-known variable set under its
 * friendly name as the same Lua value (a JSON null there is nil, not cjson.null). */
static void push_context(lua_State *L, const struct hd_context *c)
{
	const struct hd_node *n = c->vars;
	const struct hd_node *m = n ? n + 1 : NULL;

	lua_createtable(L, 0, HD_CTX_NFIELDS + 1);
	lua_createtable(L, 0, n ? (int)n->count : 0);
	for (uint32_t i = 0; n && i < n->count; i++, m += m->size) {
		lua_pushlstring(L, m->key.ptr ? m->key.ptr : "", m->key.len);
		push_node(L, m);
		for (int f = 0; f < HD_CTX_NFIELDS; f++) {
			if (c->field[f] != m || m->kind == HD_NULL)
				continue;
			lua_pushvalue(L, -1);
			lua_setfield(L, -5, hd_context_field_name(f));
		}
		lua_rawset(L, -3);
	}
	lua_setfield(L, -2, "vars");
}

/* The transcript is the bulk of the object, so its entries are built with the field
 * names kept on the stack (no string lookups) and with the values that neighbouring
 * entries repeat (type, role, name) pushed from a small cache instead of re-interned. */
enum { F_ID, F_TYPE, F_ROLE, F_NAME, F_TEXT, F_TIMESTAMP, NFIELDS, NCACHED = 3, WAYS = 2 };

struct entry_cache {
	int base;			/* stack index before the field names */
	struct hd_str seen[NCACHED][WAYS];
	unsigned next[NCACHED];
};

static int cache_slot(const struct entry_cache *ec, int field, unsigned way)
{
	return ec->base + NFIELDS + 1 + field * WAYS + (int)way;
}

static void push_cached(lua_State *L, struct entry_cache *ec, int field, struct hd_str s)
{
	struct hd_str *seen = ec->seen[field];
	unsigned way;

	for (way = 0; way < WAYS; way++)
		if (seen[way].ptr && seen[way].len == s.len && !memcmp(seen[way].ptr, s.ptr, s.len)) {
			lua_pushvalue(L, cache_slot(ec, field, way));
			return;
		}
	way = ec->next[field]++ % WAYS;
	lua_pushlstring(L, s.ptr, s.len);
	lua_pushvalue(L, -1);
	lua_replace(L, cache_slot(ec, field, way));
	seen[way] = s;
}

static void set_field(lua_State *L, struct entry_cache *ec, int field, struct hd_str s)
{
	if (!s.ptr)
		return;
	lua_pushvalue(L, ec->base + 1 + field);
	if (field >= F_TYPE && field < F_TYPE + NCACHED)
		push_cached(L, ec, field - F_TYPE, s);
	else
		lua_pushlstring(L, s.ptr, s.len);
	lua_rawset(L, -3);
}

static void push_transcript(lua_State *L, const struct hd_transcript *t)
{
	static const char *const names[NFIELDS] = { "id", "type", "role", "name", "text", "timestamp" };
	struct entry_cache ec = { .base = lua_gettop(L) };

	luaL_checkstack(L, NFIELDS + NCACHED * WAYS + 4, NULL);
	for (int f = 0; f < NFIELDS; f++)
		lua_pushstring(L, names[f]);
	for (int i = 0; i < NCACHED * WAYS; i++)
		lua_pushnil(L);
	lua_createtable(L, t->count > INT32_MAX ? INT32_MAX : (int)t->count, 0);
	for (size_t i = 0; i < t->count; i++) {
		const struct hd_transcript_entry *e = &t->entries[i];
		lua_createtable(L, 0, NFIELDS);
		set_field(L, &ec, F_ID, e->id);
		set_field(L, &ec, F_TYPE, e->type);
		set_field(L, &ec, F_ROLE, e->role);
		set_field(L, &ec, F_NAME, e->name);
		set_field(L, &ec, F_TEXT, e->text);
		set_field(L, &ec, F_TIMESTAMP, e->timestamp);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	lua_replace(L, ec.base + 1);
	lua_settop(L, ec.base + 1);
}

static void set_cstr(lua_State *L, const char *key, const char *s)
{
	if (!s)
		return;
	lua_pushstring(L, s);
	lua_setfield(L, -2, key);
}

void handoff_object_push(lua_State *L, const struct hd_handoff *h)
{
	luaL_checkstack(L, 8, NULL);
	register_raw(L);
	lua_createtable(L, 0, 12);
	set_str(L, "activity_id", h->activity_id);
	set_str(L, "conversation_id", h->conversation_id);
	set_str(L, "reason", h->agent_message);
	push_party(L, &h->user);
	lua_setfield(L, -2, "user");
	push_party(L, &h->bot);
	lua_setfield(L, -2, "bot");
	push_context(L, &h->context);
	lua_setfield(L, -2, "context");
	set_cstr(L, "context_error", h->context.error);
	push_transcript(L, &h->transcript);
	lua_setfield(L, -2, "transcript");
	set_cstr(L, "transcript_error", h->transcript.error);
	set_str(L, "transcript_url", h->transcript.content_url);
	push_raw(L, h);
	lua_setfield(L, -2, "raw");
}

/* }==== */

/* {==== require "handoff.payload" */

/* One parser per Lua state, kept in the registry and freed with it. */
static int l_parser_gc(lua_State *L)
{
	struct hd_activity_parser **box = lua_touserdata(L, 1);

	hd_activity_parser_free(*box);
	*box = NULL;
	return 0;
}

static struct hd_activity_parser *state_parser(lua_State *L)
{
	struct hd_activity_parser **box;

	if (lua_getfield(L, LUA_REGISTRYINDEX, PARSER_KEY) == LUA_TUSERDATA) {
		box = lua_touserdata(L, -1);
		lua_pop(L, 1);
		return *box;
	}
	lua_pop(L, 1);
	box = lua_newuserdatauv(L, sizeof(*box), 0);
	*box = NULL;
	lua_createtable(L, 0, 1);
	lua_pushcfunction(L, l_parser_gc);
	lua_setfield(L, -2, "__gc");
	lua_setmetatable(L, -2);
	*box = hd_activity_parser_new(NULL);
	if (!*box)
		luaL_error(L, "out of memory");
	lua_setfield(L, LUA_REGISTRYINDEX, PARSER_KEY);
	return *box;
}

static int l_payload_handoff(lua_State *L)
{
	size_t len;
	const char *json = luaL_checklstring(L, 1, &len);
	struct hd_activity_parser *p = state_parser(L);
	struct hd_activity_set set;
	struct hd_parse_error err;
	const struct hd_handoff *h;

	if (hd_activity_parse(p, json, len, len, &set, &err) < 0) {
		luaL_pushfail(L);
		lua_pushfstring(L, "%s at byte %I", err.reason, (lua_Integer)err.offset);
		return 2;
	}
	h = hd_activity_set_handoff(&set);
	if (!h) {
		luaL_pushfail(L);
		lua_pushliteral(L, "no handoff.initiate event");
		return 2;
	}
	handoff_object_push(L, h);
	return 1;
}

static const luaL_Reg payload_funcs[] = {
	{ "handoff", l_payload_handoff },
	{ NULL, NULL },
};

int luaopen_handoff_payload(lua_State *L)
{
	luaL_newlib(L, payload_funcs);
	return 1;
}

/* }==== */
