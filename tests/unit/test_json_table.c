/* test_json_table.c - json_table builds the table lua-cjson decodes the same text to:
 * the same keys, values and number types, for the JSON it takes; and it refuses, for
 * cjson to decode, every text where it could differ (the hub calls fall back to cjson). */
#include "script/json_table.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua-cjson.h>
#include <lualib.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

/* same(a, b): deep equality that also tells floats from integers and -0.0 from 0.0. */
static const char SAME[] =
	"local function same(a, b)\n"
	"  if type(a) ~= type(b) then return false end\n"
	"  if type(a) == 'number' then\n"
	"    if math.type(a) ~= math.type(b) then return false end\n"
	"    if a ~= a then return b ~= b end\n"
	"    return a == b and 1 / a == 1 / b\n"
	"  end\n"
	"  if type(a) ~= 'table' then return a == b end\n"
	"  if getmetatable(a) ~= getmetatable(b) then return false end\n"
	"  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
	"  for k in pairs(b) do if a[k] == nil then return false end end\n"
	"  return true\n"
	"end\n"
	"return same\n";

struct fixture {
	lua_State *L;
	struct json_table *jt;
};

static int setup(void **state)
{
	static struct fixture f;

	f.L = luaL_newstate();
	f.jt = json_table_new();
	if (!f.L || !f.jt)
		return -1;
	luaL_openlibs(f.L);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	json_table_free(f->jt);
	lua_close(f->L);
	return 0;
}

/* TEXT decodes here to what cjson.decode makes of it. */
static void check_same(struct fixture *f, const char *text)
{
	lua_State *L = f->L;
	int top = lua_gettop(L);

	assert_int_equal(luaL_dostring(L, SAME), LUA_OK);
	assert_int_equal(json_table_push(f->jt, L, text, strlen(text)), 0);
	luaL_requiref(L, "cjson", luaopen_cjson, 0);
	lua_getfield(L, -1, "decode");
	lua_remove(L, -2);
	lua_pushstring(L, text);
	assert_int_equal(lua_pcall(L, 1, 1, 0), LUA_OK);
	assert_int_equal(lua_pcall(L, 2, 1, 0), LUA_OK);
	if (!lua_toboolean(L, -1))
		fail_msg("not what cjson decodes: %s", text);
	lua_settop(L, top);
}

static void test_decodes_as_cjson(void **state)
{
	static const char *const texts[] = {
		"{}",
		"{\"a\":[]}",
		"{\"type\":\"message\",\"id\":\"c|0000001\",\"from\":{\"id\":\"bot\",\"name\":\"Bot\",\"role\":\"bot\"},"
		"\"text\":\"You said: m0\",\"textFormat\":\"markdown\",\"locale\":\"en-US\","
		"\"recipient\":{\"id\":\"u\",\"role\":\"user\"},\"conversation\":{\"id\":\"c\"},"
		"\"attachments\":[{\"contentType\":\"image/png\",\"contentUrl\":\"https://x/y.png\"}]}",
		"{\"n\":[0,-0,1,-1,1.5,1e3,-2.5E-3,9007199254740993,18446744073709551616,123456789012345678901234567890]}",
		"{\"t\":true,\"f\":false,\"z\":null,\"list\":[null,true,{\"x\":null}]}",
		"{\"esc\":\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\u20ac\\ud83d\\ude00\",\"nul\":\"a\\u0000b\"}",
		"{\"dup\":1,\"dup\":2,\"\":\"empty key\",\"1\":\"string key\"}",
		"{\"deep\":[[[[[[[[[[{\"a\":[[[1]]]}]]]]]]]]]]}",
		"  {\"spaces\" : [ 1 , 2 ] }  \n",
		"{\"utf8\":\"h\xc3\xa9llo \xe2\x82\xac\"}",
	};

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		check_same(*state, texts[i]);
}

/* Texts cjson decodes differently, or refuses with its own message: left to cjson. */
static void test_refuses_what_cjson_must_decode(void **state)
{
	struct fixture *f = *state;
	char deep[200];
	static const char *const texts[] = {
		"", "[1,2]", "\"text\"", "42", "null", "{\"a\":1", "{\"a\":1}x", "{\"a\":nan}",
		"{\"a\":Infinity}", "{\"a\":0x10}", "{\"a\":1e400}", "{\"a\":\"\xff\"}", "{\"a\":\"\\ud800\"}",
		"{'a':1}", "{\"a\":01}",
	};

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		int top = lua_gettop(f->L);

		if (json_table_push(f->jt, f->L, texts[i], strlen(texts[i])) != -EINVAL)
			fail_msg("took %s", texts[i]);
		assert_int_equal(lua_gettop(f->L), top);
	}
	/* nested deeper than 64: cjson's own depth limit applies */
	memset(deep, 0, sizeof(deep));
	deep[0] = '{';
	strcat(deep, "\"a\":");
	for (int i = 0; i < 70; i++)
		strcat(deep, "[");
	for (int i = 0; i < 70; i++)
		strcat(deep, "]");
	strcat(deep, "}");
	assert_int_equal(json_table_push(f->jt, f->L, deep, strlen(deep)), -EINVAL);
}

/* The text need not end in a NUL: only LEN bytes are read. */
static void test_reads_len_bytes_only(void **state)
{
	struct fixture *f = *state;
	static const char text[] = "{\"a\":12}{\"b\":3}";

	assert_int_equal(json_table_push(f->jt, f->L, text, 8), 0);
	lua_getfield(f->L, -1, "a");
	assert_true(lua_tonumber(f->L, -1) == 12.0);
	lua_pop(f->L, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decodes_as_cjson),
		cmocka_unit_test(test_refuses_what_cjson_must_decode),
		cmocka_unit_test(test_reads_len_bytes_only),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
