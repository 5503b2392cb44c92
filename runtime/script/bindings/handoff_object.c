/* bindings/handoff_object.c - the handoff object as Lua sees it, built in C from a
 * struct hd_handoff (handoff.c): plain tables for the parties, the context and the
 * transcript, so routing code never decodes JSON, and one `raw` userdata owning a copy
 * of the handoff (hd_handoff_copy_to), which hands out the raw context, transcript and
 * entries on demand so a hub script can forward them verbatim. The tables are built
 * from that copy when first read, so a handoff costs little more than its parse until
 * a script looks at it. Also the `handoff.payload` module. Parsing lives in activity.c
 * and handoff.c, the copy in handoff_copy.c; this file only translates. */
#include "script/bindings/handoff_object.h"
#include "script/json_table.h"

#include <handoffd/activity.h>

#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RAW_METATABLE "handoff.raw"
#define PARSER_KEY "handoff.payload.parser"

/* {==== Keys: every key of the object as a Lua string, made once per state
 *
 * Setting a field by its C name (lua_setfield) costs a probe of Lua's string cache and,
 * when that misses, a hash and a search of the string table: with a few dozen keys per
 * object, that is much of the cost of a small one. The kit, a table in the registry,
 * holds every key, and the raw userdata's metatable. */

enum key {
	K_RAW_MT = 1,
	K_ACTIVITY_ID, K_CONVERSATION_ID, K_REASON, K_CONTEXT_ERROR, K_TRANSCRIPT_ERROR,
	K_TRANSCRIPT_URL, K_RAW, K_CONTEXT, K_TRANSCRIPT, K_USER, K_BOT,
	K_INDEX, K_NEWINDEX, K_PAIRS, K_METATABLE,
	K_ID, K_TYPE, K_ROLE, K_NAME, K_TEXT, K_TIMESTAMP,	/* in the order of enum entry_field */
	K_VARS,
	K_FIELDS,			/* the HD_CTX_NFIELDS friendly names of the context */
	K_NKEYS = K_FIELDS + HD_CTX_NFIELDS
};

static const char *const key_names[K_FIELDS] = {
	[K_ACTIVITY_ID] = "activity_id", [K_CONVERSATION_ID] = "conversation_id",
	[K_REASON] = "reason", [K_CONTEXT_ERROR] = "context_error",
	[K_TRANSCRIPT_ERROR] = "transcript_error", [K_TRANSCRIPT_URL] = "transcript_url",
	[K_RAW] = "raw", [K_CONTEXT] = "context", [K_TRANSCRIPT] = "transcript",
	[K_USER] = "user", [K_BOT] = "bot",
	[K_INDEX] = "__index", [K_NEWINDEX] = "__newindex", [K_PAIRS] = "__pairs",
	[K_METATABLE] = "__metatable",
	[K_ID] = "id", [K_TYPE] = "type", [K_ROLE] = "role", [K_NAME] = "name", [K_TEXT] = "text",
	[K_TIMESTAMP] = "timestamp", [K_VARS] = "vars",
};

static const char kit_key;	/* its address is the kit's key in the registry */

static void push_raw_metatable(lua_State *L);

/* Pushes the kit and returns its stack index. */
static int push_kit(lua_State *L)
{
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &kit_key) == LUA_TTABLE)
		return lua_gettop(L);
	lua_pop(L, 1);
	lua_createtable(L, K_NKEYS - 1, 0);
	push_raw_metatable(L);
	lua_rawseti(L, -2, K_RAW_MT);
	for (int k = K_RAW_MT + 1; k < K_NKEYS; k++) {
		lua_pushstring(L, k < K_FIELDS ? key_names[k] : hd_context_field_name(k - K_FIELDS));
		lua_rawseti(L, -2, k);
	}
	lua_pushvalue(L, -1);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &kit_key);
	return lua_gettop(L);
}

/* Sets key K of the table at -2 to the value on top, which it pops. */
static void set_key(lua_State *L, int kit, enum key k)
{
	lua_rawgeti(L, kit, k);
	lua_insert(L, -2);
	lua_rawset(L, -3);
}

static void set_str(lua_State *L, int kit, enum key k, struct hd_str s)
{
	if (!s.ptr)
		return;
	lua_rawgeti(L, kit, k);
	lua_pushlstring(L, s.ptr, s.len);
	lua_rawset(L, -3);
}

static void set_cstr(lua_State *L, int kit, enum key k, const char *s)
{
	if (!s)
		return;
	lua_rawgeti(L, kit, k);
	lua_pushstring(L, s);
	lua_rawset(L, -3);
}

/* }==== */

/* {==== The raw userdata: h.raw, and the owner of the copy the lazy fields are built from */

/* The copy is the userdata's own memory, so that the collector counts it: the tables
 * built from it come later or never, and an object that looked small to the collector
 * while it held megabytes would leave many such copies waiting to be collected. */
struct handoff_box {
	unsigned pending;	/* the lazy fields not built (nor assigned) yet: bit F is lazy[F] */
	struct hd_handoff *h;	/* the copy, inside this userdata */
};

static const struct hd_handoff *check_raw(lua_State *L)
{
	return ((struct handoff_box *)luaL_checkudata(L, 1, RAW_METATABLE))->h;
}

static int push_text(lua_State *L, struct hd_str s)
{
	if (!s.ptr)
		luaL_pushfail(L);
	else
		lua_pushlstring(L, s.ptr, s.len);
	return 1;
}

static int l_raw_activity(lua_State *L)
{
	return push_text(L, check_raw(L)->raw);
}

static int l_raw_context(lua_State *L)
{
	return push_text(L, check_raw(L)->context.raw);
}

static int l_raw_transcript(lua_State *L)
{
	return push_text(L, check_raw(L)->transcript.raw);
}

static int l_raw_entry(lua_State *L)
{
	const struct hd_transcript *t = &check_raw(L)->transcript;
	lua_Integer i = luaL_checkinteger(L, 2);

	if (i < 1 || (lua_Unsigned)i > t->count) {
		luaL_pushfail(L);
		return 1;
	}
	return push_text(L, t->entries[i - 1].raw);
}

static int l_raw_len(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)check_raw(L)->transcript.count);
	return 1;
}

static const luaL_Reg raw_methods[] = {
	{ "activity", l_raw_activity },
	{ "context", l_raw_context },
	{ "entry", l_raw_entry },
	{ "transcript", l_raw_transcript },
	{ NULL, NULL },
};

static void push_raw_metatable(lua_State *L)
{
	if (!luaL_newmetatable(L, RAW_METATABLE))
		return;
	luaL_newlib(L, raw_methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, l_raw_len);
	lua_setfield(L, -2, "__len");
}

/* Pushes the raw userdata holding a copy of H. */
static struct handoff_box *push_box(lua_State *L, int kit, const struct hd_handoff *h)
{
	size_t size = hd_handoff_copy_size(h);
	struct handoff_box *box;

	if (!size || size > SIZE_MAX - sizeof(*box))
		luaL_error(L, "handoff too large to copy");
	box = lua_newuserdatauv(L, sizeof(*box) + size, 0);
	box->pending = 0;
	box->h = hd_handoff_copy_to(box + 1, h);
	lua_rawgeti(L, kit, K_RAW_MT);
	lua_setmetatable(L, -2);
	return box;
}

/* }==== */

/* {==== Tables */

static void push_party(lua_State *L, int kit, const struct hd_party *p)
{
	lua_createtable(L, 0, 3);
	set_str(L, kit, K_ID, p->id);
	set_str(L, kit, K_NAME, p->name);
	set_str(L, kit, K_ROLE, p->role);
}

/* The context table: vars converted once, and each well-known variable set under its
 * friendly name as the same Lua value (a JSON null there is nil, not cjson.null). */
static void push_context(lua_State *L, int kit, const struct hd_context *c)
{
	const struct hd_node *n = c->vars;
	const struct hd_node *m = n ? n + 1 : NULL;
	int ctx;

	lua_createtable(L, 0, HD_CTX_NFIELDS + 1);
	ctx = lua_gettop(L);
	lua_createtable(L, 0, n ? (int)n->count : 0);
	for (uint32_t i = 0; n && i < n->count; i++, m += m->size) {
		lua_pushlstring(L, m->key.ptr ? m->key.ptr : "", m->key.len);
		json_node_push(L, m, false);
		for (int f = 0; f < HD_CTX_NFIELDS; f++) {
			if (c->field[f] != m || m->kind == HD_NULL)
				continue;
			lua_rawgeti(L, kit, K_FIELDS + f);
			lua_pushvalue(L, -2);
			lua_rawset(L, ctx);
		}
		lua_rawset(L, -3);
	}
	set_key(L, kit, K_VARS);
}

/* The transcript is the bulk of the object, so the values that neighbouring entries
 * repeat (type, role, name) are pushed from a small cache on the stack instead of being
 * interned again. */
enum entry_field { F_ID, F_TYPE, F_ROLE, F_NAME, F_TEXT, F_TIMESTAMP, NFIELDS, NCACHED = 3, WAYS = 2 };

struct entry_cache {
	int kit;
	int base;			/* stack index before the cache */
	struct hd_str seen[NCACHED][WAYS];
	unsigned next[NCACHED];
};

static int cache_slot(const struct entry_cache *ec, int field, unsigned way)
{
	return ec->base + 1 + field * WAYS + (int)way;
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

static void set_field(lua_State *L, struct entry_cache *ec, enum entry_field field, struct hd_str s)
{
	if (!s.ptr)
		return;
	lua_rawgeti(L, ec->kit, K_ID + (int)field);
	if (field >= F_TYPE && field < F_TYPE + NCACHED)
		push_cached(L, ec, field - F_TYPE, s);
	else
		lua_pushlstring(L, s.ptr, s.len);
	lua_rawset(L, -3);
}

static void push_transcript(lua_State *L, int kit, const struct hd_transcript *t)
{
	struct entry_cache ec = { .kit = kit, .base = lua_gettop(L) };

	luaL_checkstack(L, NCACHED * WAYS + 4, NULL);
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

/* }==== */

/* {==== Lazy fields: the bulk of the object is built on its first read
 *
 * h.context, h.transcript, h.user and h.bot are absent from h until read: h's own
 * metatable builds a field from the copy on its first read and stores it with rawset,
 * so every later read finds a plain table and never comes back here. A field holds the
 * same table it would hold if built at once, so lua-cjson, ipairs, # and next see plain
 * tables. The laziness shows only on h itself: pairs(h) builds everything first
 * (__pairs), an assignment replaces the field for good (__newindex), and the metatable
 * is protected (getmetatable(h) is false), since replacing it would lose the fields not
 * yet built; rawget(h, "transcript") and next(h) do not build. */

static void push_context_of(lua_State *L, int kit, const struct hd_handoff *h)
{
	push_context(L, kit, &h->context);
}

static void push_transcript_of(lua_State *L, int kit, const struct hd_handoff *h)
{
	push_transcript(L, kit, &h->transcript);
}

static void push_user_of(lua_State *L, int kit, const struct hd_handoff *h)
{
	push_party(L, kit, &h->user);
}

static void push_bot_of(lua_State *L, int kit, const struct hd_handoff *h)
{
	push_party(L, kit, &h->bot);
}

static const struct {
	enum key key;
	void (*push)(lua_State *L, int kit, const struct hd_handoff *h);
} lazy[] = {
	{ K_CONTEXT, push_context_of },
	{ K_TRANSCRIPT, push_transcript_of },
	{ K_USER, push_user_of },
	{ K_BOT, push_bot_of },
};

enum { NLAZY = sizeof(lazy) / sizeof(lazy[0]), ALL_LAZY = (1u << NLAZY) - 1 };

/* The lazy field named by the key at IDX, or -1. */
static int lazy_field(lua_State *L, int idx)
{
	const char *k;
	size_t len;

	if (lua_type(L, idx) != LUA_TSTRING)
		return -1;
	k = lua_tolstring(L, idx, &len);
	for (int f = 0; f < NLAZY; f++) {
		const char *name = key_names[lazy[f].key];
		if (strlen(name) == len && !memcmp(k, name, len))
			return f;
	}
	return -1;
}

/* The box of the handoff object at index 1, kept at [1] of its own metatable. */
static struct handoff_box *object_box(lua_State *L, int kit)
{
	struct handoff_box *box = NULL;
	int top = lua_gettop(L);

	luaL_checktype(L, 1, LUA_TTABLE);
	if (lua_getmetatable(L, 1) && lua_rawgeti(L, -1, 1) == LUA_TUSERDATA &&
	    lua_getmetatable(L, -1) && lua_rawgeti(L, kit, K_RAW_MT) && lua_rawequal(L, -1, -2))
		box = lua_touserdata(L, top + 2);
	if (!box)
		luaL_error(L, "not a handoff object");
	lua_settop(L, top);
	return box;
}

/* Builds lazy field F of the object at index 1 and leaves its value on the stack. */
static void build(lua_State *L, int kit, struct handoff_box *box, int f)
{
	lazy[f].push(L, kit, box->h);
	lua_rawgeti(L, kit, lazy[f].key);
	lua_pushvalue(L, -2);
	lua_rawset(L, 1);
	box->pending &= ~(1u << f);
}

static int l_object_index(lua_State *L)
{
	int f = lazy_field(L, 2);
	int kit;
	struct handoff_box *box;

	if (f < 0)
		return 0;
	kit = push_kit(L);
	box = object_box(L, kit);
	if (!(box->pending & (1u << f)))
		return 0;	/* built, or assigned, then set to nil by the script */
	build(L, kit, box, f);
	return 1;
}

static int l_object_newindex(lua_State *L)
{
	int f = lazy_field(L, 2);

	if (f >= 0)
		object_box(L, push_kit(L))->pending &= ~(1u << f);
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 3);
	lua_rawset(L, 1);
	return 0;
}

static int l_object_next(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 2);
	if (lua_next(L, 1))
		return 2;
	lua_pushnil(L);
	return 1;
}

static int l_object_pairs(lua_State *L)
{
	int kit = push_kit(L);
	struct handoff_box *box = object_box(L, kit);

	for (int f = 0; f < NLAZY; f++) {
		if (box->pending & (1u << f)) {
			build(L, kit, box, f);
			lua_pop(L, 1);
		}
	}
	lua_pushcfunction(L, l_object_next);
	lua_pushvalue(L, 1);
	lua_pushnil(L);
	return 3;
}

/* Gives the table at -2 its own metatable, holding the box on top (popped). */
static void set_object_metatable(lua_State *L, int kit, struct handoff_box *box)
{
	box->pending = ALL_LAZY;
	lua_createtable(L, 1, 4);
	lua_insert(L, -2);
	lua_rawseti(L, -2, 1);
	lua_pushcfunction(L, l_object_index);
	set_key(L, kit, K_INDEX);
	lua_pushcfunction(L, l_object_newindex);
	set_key(L, kit, K_NEWINDEX);
	lua_pushcfunction(L, l_object_pairs);
	set_key(L, kit, K_PAIRS);
	lua_pushboolean(L, 0);
	set_key(L, kit, K_METATABLE);
	lua_setmetatable(L, -2);
}

/* }==== */

void handoff_object_push(lua_State *L, const struct hd_handoff *h)
{
	struct handoff_box *box;
	int kit;

	luaL_checkstack(L, 10, NULL);
	kit = push_kit(L);
	lua_createtable(L, 0, 12);
	set_str(L, kit, K_ACTIVITY_ID, h->activity_id);
	set_str(L, kit, K_CONVERSATION_ID, h->conversation_id);
	set_str(L, kit, K_REASON, h->agent_message);
	set_cstr(L, kit, K_CONTEXT_ERROR, h->context.error);
	set_cstr(L, kit, K_TRANSCRIPT_ERROR, h->transcript.error);
	set_str(L, kit, K_TRANSCRIPT_URL, h->transcript.content_url);
	box = push_box(L, kit, h);
	lua_rawgeti(L, kit, K_RAW);
	lua_pushvalue(L, -2);
	lua_rawset(L, -4);
	set_object_metatable(L, kit, box);
	lua_remove(L, kit);
}

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
