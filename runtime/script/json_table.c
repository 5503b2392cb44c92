/* json_table.c - JSON text as the Lua table lua-cjson would decode it to, built from
 * simdjson's parse (parse/json_simd.h) with every table sized up front.
 * cjson grows each table from empty, rehashing it at every power of two, and that was
 * most of the decode of a bot's activity, which every delivery to a hub decodes. The
 * result is the one cjson gives: the same keys and values, numbers as floats (cjson
 * reads every number with strtod, and so does this file), null as the NULL light
 * userdata (cjson.null), arrays as plain tables. Only a JSON object in strict JSON is
 * taken here; anything else (invalid UTF-8, the invalid numbers cjson accepts, nesting
 * deeper than JSON_TABLE_DEPTH, another root) is refused, for the caller to give to
 * cjson, which decodes it or says why not, as before. (A script that lowers cjson's
 * decode_max_depth below JSON_TABLE_DEPTH does not lower it for these texts.) */
#include "script/json_table.h"

#include "parse/json_simd.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define JSON_TABLE_DEPTH 64

struct json_table {
	struct json_simd *js;
	struct json_tree tree;
	char *buf;		/* the text, copied with the padding simdjson reads ahead into */
	size_t cap;
};

struct json_table *json_table_new(void)
{
	struct json_table *jt = calloc(1, sizeof(*jt));

	if (jt && !(jt->js = json_simd_new())) {
		free(jt);
		return NULL;
	}
	return jt;
}

void json_table_free(struct json_table *jt)
{
	if (!jt)
		return;
	json_simd_free(jt->js);
	free(jt->tree.nodes);
	free(jt->buf);
	free(jt);
}

void json_node_push(lua_State *L, const struct hd_node *n, bool cjson_numbers)
{
	const struct hd_node *c = n + 1;

	luaL_checkstack(L, 3, "JSON nested too deep");
	switch (n->kind) {
	case HD_OBJECT:
		lua_createtable(L, 0, (int)n->count);
		for (uint32_t i = 0; i < n->count; i++, c += c->size) {
			lua_pushlstring(L, c->key.ptr ? c->key.ptr : "", c->key.len);
			json_node_push(L, c, cjson_numbers);
			lua_rawset(L, -3);	/* a repeated name: the last one stays, as in cjson */
		}
		break;
	case HD_ARRAY:
		lua_createtable(L, (int)n->count, 0);
		for (uint32_t i = 0; i < n->count; i++, c += c->size) {
			json_node_push(L, c, cjson_numbers);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		break;
	case HD_STRING:
		lua_pushlstring(L, n->str.ptr, n->str.len);
		break;
	case HD_NUMBER:
		if (cjson_numbers)
			lua_pushnumber(L, strtod(n->raw.ptr, NULL));
		else if (n->is_int)
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

int json_table_push(struct json_table *jt, lua_State *L, const char *text, size_t len)
{
	static const struct json_schema root = { 0 };
	struct json_walk w = { .root = &root, .tree = &jt->tree, .max_depth = JSON_TABLE_DEPTH,
			       .capture_root = true };
	struct hd_parse_error err = { 0 };

	if (len + HD_PARSE_PADDING > jt->cap) {
		char *buf = realloc(jt->buf, len + HD_PARSE_PADDING);

		if (!buf)
			return -ENOMEM;
		jt->buf = buf;
		jt->cap = len + HD_PARSE_PADDING;
	}
	memcpy(jt->buf, text, len);
	memset(jt->buf + len, 0, HD_PARSE_PADDING);
	jt->tree.count = 0;
	if (json_simd_walk(jt->js, jt->buf, len, len + HD_PARSE_PADDING, &w, &err) < 0 || jt->tree.count == 0)
		return -EINVAL;
	json_node_push(L, jt->tree.nodes, true);
	return 0;
}
