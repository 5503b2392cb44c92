/* test_handoff_object.c - the handoff object as Lua sees it, on a bare lua_State with
 * lua-cjson: tables built in C for the parties, the context (friendly fields and every
 * var with its JSON type) and the transcript, raw JSON on demand that matches the
 * payload byte for byte, a life of its own after the parser moves on, and the
 * handoff.payload module. The checks are Lua chunks run against the pushed object. */
#include "payloads.h"

#include "script/bindings/handoff_object.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lualib.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

struct fixture {
	lua_State *L;
	struct hd_activity_parser *p;
	char *text;
	size_t len;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->L = luaL_newstate();
	luaL_openlibs(f->L);
	luaL_requiref(f->L, "cjson", luaopen_cjson, 0);
	luaL_requiref(f->L, "handoff.payload", luaopen_handoff_payload, 0);
	lua_pop(f->L, 2);
	f->p = hd_activity_parser_new(NULL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	lua_close(f->L);
	hd_activity_parser_free(f->p);
	free(f->text);
	free(f);
	return 0;
}

/* Parses the generator's payload for ARGS and sets the Lua globals `h` (the handoff
 * object) and `payload` (the text). */
static void push_generated(struct fixture *f, const char *args)
{
	struct hd_activity_set set;

	free(f->text);
	f->text = payload_generate(args, &f->len);
	parse_ok(f->p, f->text, f->len, &set);
	assert_non_null(hd_activity_set_handoff(&set));
	handoff_object_push(f->L, hd_activity_set_handoff(&set));
	lua_setglobal(f->L, "h");
	lua_pushlstring(f->L, f->text, f->len);
	lua_setglobal(f->L, "payload");
}

static void run(struct fixture *f, const char *chunk)
{
	if (luaL_dostring(f->L, chunk))
		fail_msg("%s", lua_tostring(f->L, -1));
}

static void test_tables(void **state)
{
	struct fixture *f = *state;

	push_generated(f, "3");
	run(f,
	    "assert(h.activity_id == 'Kx7Qb2ZrT9w1LmN4aP8sVd-us|0000003')\n"
	    "assert(h.conversation_id == 'Kx7Qb2ZrT9w1LmN4aP8sVd-us')\n"
	    "assert(h.reason == 'Customer asked for a human')\n"
	    "assert(h.user.id == 'dl_user_5c1e0b7a' and h.user.name == 'Dana Customer' and h.user.role == 'user')\n"
	    "assert(h.bot.id == 'bot-0a1b2c3d' and h.bot.role == 'bot')\n"
	    "local c = h.context\n"
	    "assert(c.scope == 'bot' and c.last_topic == 'Order status' and c.language == 'en-US')\n"
	    "assert(c.agent_message == h.reason and c.bot_name == 'Support Bot' and c.bot_id == 'bot-0a1b2c3d')\n"
	    "assert(c.conversation_id == h.conversation_id and c.last_phrase == 'talk to a person')\n"
	    "assert(#c.topics == 2 and c.topics[1] == 'Greeting' and #c.phrases == 2)\n"
	    "assert(c.vars.va_Topics == c.topics, 'one Lua value for both names')\n"
	    "assert(c.vars['Global.CustomerTier'] == 'gold')\n"
	    "assert(math.type(c.vars['Global.OrderNumber']) == 'integer' and c.vars['Global.OrderNumber'] == 10042)\n"
	    "local n = 0 for _ in pairs(c.vars) do n = n + 1 end assert(n == 12, n)\n"
	    "assert(h.context_error == nil and h.transcript_error == nil and h.transcript_url == nil)\n"
	    "assert(#h.transcript == 3)\n"
	    "local e = h.transcript[2]\n"
	    "assert(e.id == 'Kx7Qb2ZrT9w1LmN4aP8sVd-us|0000001' and e.type == 'message' and e.role == 'bot')\n"
	    "assert(e.name == 'Support Bot' and e.timestamp == '2026-11-20T09:15:04.100Z')\n"
	    "assert(e.text:find('confirm the postcode', 1, true))\n"
	    "assert(h.transcript[1].role == 'user' and h.transcript[3].text:find('\\u{1F600}', 1, true))\n"
	    "for i, t in ipairs(h.transcript) do assert(t.id:sub(-1) == tostring(i - 1)) end\n");
}

/* Raw pieces are the payload's own bytes, and valid JSON for the entries they belong to. */
static void test_raw_on_demand(void **state)
{
	struct fixture *f = *state;

	push_generated(f, "3");
	run(f,
	    "local json = require 'cjson'\n"
	    "assert(#h.raw == 3)\n"
	    "local act = h.raw:activity()\n"
	    "assert(payload:find(act, 1, true) and act:sub(1, 1) == '{' and act:sub(-1) == '}')\n"
	    "local tr = h.raw:transcript()\n"
	    "assert(payload:find(tr, 1, true))\n"
	    "assert(#json.decode(tr).activities == 3)\n"
	    "for i = 1, #h.transcript do\n"
	    "  local raw = h.raw:entry(i)\n"
	    "  assert(payload:find(raw, 1, true), i)\n"
	    "  local d = json.decode(raw)\n"
	    "  assert(d.id == h.transcript[i].id and d.text == h.transcript[i].text)\n"
	    "  assert(d.from.role == h.transcript[i].role)\n"
	    "end\n"
	    "assert(h.raw:entry(0) == nil and h.raw:entry(4) == nil)\n"
	    "assert(json.decode(h.raw:context()).va_BotId == 'bot-0a1b2c3d')\n");
}

/* Sent as JSON strings, the raw pieces are the decoded texts, ready to forward. */
static void test_raw_of_string_encoded_parts(void **state)
{
	struct fixture *f = *state;

	push_generated(f, "2 --value-as-string --content-as-string");
	run(f,
	    "local json = require 'cjson'\n"
	    "local tr = h.raw:transcript()\n"
	    "assert(tr:sub(1, 16) == '{\"activities\": [')\n"
	    "assert(json.decode(json.decode(h.raw:activity()).attachments[1].content).activities[2].id == h.transcript[2].id)\n"
	    "assert(json.decode(h.raw:entry(2)).id == h.transcript[2].id)\n"
	    "assert(tr:find(h.raw:entry(1), 1, true))\n"
	    "assert(json.decode(h.raw:context()).va_Language == 'en-US')\n"
	    "assert(h.context.language == 'en-US' and #h.transcript == 2)\n");
}

/* JSON nulls: nil under friendly names and in entries, cjson.null inside vars. */
static void test_nulls(void **state)
{
	struct fixture *f = *state;

	push_generated(f, "3 --nulls");
	run(f,
	    "local json = require 'cjson'\n"
	    "assert(h.context.last_topic == nil)\n"
	    "assert(h.context.vars.va_LastTopic == json.null)\n"
	    "assert(h.context.vars['Global.Nothing'] == json.null)\n"
	    "assert(h.transcript[2].text == nil and h.transcript[2].id ~= nil)\n"
	    "assert(h.transcript[3].name == nil and h.transcript[3].role == 'user')\n");
}

static void test_missing_parts(void **state)
{
	struct fixture *f = *state;

	push_generated(f, "2 --content-url");
	run(f,
	    "assert(#h.transcript == 0 and h.transcript_error == 'content url only')\n"
	    "assert(h.transcript_url == 'https://files.example.invalid/transcript.json')\n"
	    "assert(h.raw:transcript() == nil and #h.raw == 0)\n");
	push_generated(f, "2 --no-transcript");
	run(f, "assert(h.transcript_error == 'missing' and next(h.transcript) == nil)\n");
}

/* The object copies what it needs: the parser's next parse does not change it. */
static void test_outlives_the_parser(void **state)
{
	struct fixture *f = *state;
	struct hd_activity_set set;

	push_generated(f, "2");
	run(f, "keep = h; keep_raw = h.raw:entry(1)\n");
	parse_ok(f->p, "{\"activities\":[{\"type\":\"typing\"}]}", 34, &set);
	memset(f->text, 'x', f->len);
	run(f,
	    "collectgarbage()\n"
	    "assert(keep.transcript[1].text:find('arrived', 1, true))\n"
	    "assert(keep.raw:entry(1) == keep_raw and keep_raw:sub(1, 1) == '{')\n"
	    "assert(keep.context.vars['Global.CustomerTier'] == 'gold')\n");
}

static void test_payload_module(void **state)
{
	struct fixture *f = *state;

	free(f->text);
	f->text = payload_generate("4 --mixed --ascii", &f->len);
	lua_pushlstring(f->L, f->text, f->len);
	lua_setglobal(f->L, "payload");
	run(f,
	    "local payload_mod = require 'handoff.payload'\n"
	    "local h = assert(payload_mod.handoff(payload))\n"
	    "assert(#h.transcript == 4 and h.transcript[1].text:find('\\u{1F600}', 1, true))\n"
	    "local v, err = payload_mod.handoff('{\"activities\":[{\"type\":\"message\"}]}')\n"
	    "assert(v == nil and err == 'no handoff.initiate event', err)\n"
	    "v, err = payload_mod.handoff('{\"activities\":[}')\n"
	    "assert(v == nil and err:match('^malformed JSON: .* at byte 15$'), err)\n"
	    "assert(not pcall(payload_mod.handoff), 'a payload is required')\n");
}

/* {==== The lazy fields (context, transcript, user, bot): what routing code sees */

/* Lua helpers for the checks below: a deep copy of a value without metatables or raw
 * userdata (through pairs, as routing code would), and a deep comparison. */
static const char *const helpers =
	"function plain(v)\n"
	"  if type(v) ~= 'table' then return v end\n"
	"  local out = {}\n"
	"  for k, x in pairs(v) do if k ~= 'raw' then out[k] = plain(x) end end\n"
	"  return out\n"
	"end\n"
	"function same(a, b, path)\n"
	"  path = path or 'h'\n"
	"  if type(a) ~= 'table' or type(b) ~= 'table' then return assert(a == b, path) end\n"
	"  for k, v in pairs(a) do same(v, b[k], path .. '.' .. tostring(k)) end\n"
	"  for k in pairs(b) do assert(a[k] ~= nil, path .. '.' .. tostring(k)) end\n"
	"end\n";

static void test_lazy_fields_are_plain_tables(void **state)
{
	struct fixture *f = *state;

	push_generated(f, "3");
	run(f,
	    "for _, k in ipairs({ 'context', 'transcript', 'user', 'bot' }) do\n"
	    "  assert(rawget(h, k) == nil, k .. ' is built on its first read')\n"
	    "end\n"
	    "local t = h.transcript\n"
	    "assert(rawget(h, 'transcript') == t and h.transcript == t, 'built once, then kept')\n"
	    "assert(getmetatable(t) == nil and rawlen(t) == 3 and #t == 3 and next(t) == 1)\n"
	    "local n = 0\n"
	    "for i, e in ipairs(t) do\n"
	    "  n = i\n"
	    "  assert(getmetatable(e) == nil and tostring(e):match('^table: ') and rawget(e, 'text') == e.text)\n"
	    "end\n"
	    "assert(n == 3)\n"
	    "for k in pairs(t[1]) do assert(({ id = 1, type = 1, role = 1, name = 1, text = 1, timestamp = 1 })[k], k) end\n"
	    "local c = h.context\n"
	    "assert(getmetatable(c) == nil and getmetatable(c.vars) == nil and rawget(c, 'vars') == c.vars)\n"
	    "n = 0 for _ in pairs(c.vars) do n = n + 1 end assert(n == 12)\n"
	    "n = 0 for _ in next, c.vars do n = n + 1 end assert(n == 12)\n"
	    "assert(getmetatable(h.user) == nil and h.user == rawget(h, 'user') and h.bot.role == 'bot')\n"
	    "assert(h.nothing == nil and h[1] == nil and #h == 0)\n");
}

/* lua-cjson reads tables raw (lua_next, lua_rawgeti): it must find every field. */
static void test_lazy_fields_encode_as_json(void **state)
{
	struct fixture *f = *state;

	push_generated(f, "3");
	run(f,
	    "local json = require 'cjson'\n"
	    "local back = json.decode(json.encode({ transcript = h.transcript, context = h.context,\n"
	    "                                      user = h.user, bot = h.bot }))\n"
	    "assert(#back.transcript == #h.raw)\n"
	    "for i, e in ipairs(back.transcript) do\n"
	    "  local sent = json.decode(h.raw:entry(i))\n"
	    "  assert(e.id == sent.id and e.type == sent.type and e.text == sent.text and e.timestamp == sent.timestamp)\n"
	    "  assert(e.role == sent.from.role and e.name == sent.from.name)\n"
	    "  local n = 0 for _ in pairs(e) do n = n + 1 end assert(n == 6, n)\n"
	    "end\n"
	    "local sent = json.decode(h.raw:context())\n"
	    "for k, v in pairs(sent) do assert(json.encode(back.context.vars[k]) == json.encode(v), k) end\n"
	    "assert(back.context.language == 'en-US' and #back.context.topics == 2)\n"
	    "assert(back.user.id == 'dl_user_5c1e0b7a' and back.bot.name == 'Support Bot')\n"
	    "assert(json.decode(json.encode(h.transcript[2])).id == h.transcript[2].id)\n");
}

/* pairs(h) lists every field; assignments replace lazy fields as they would plain ones;
 * the metatable is neither visible nor replaceable. */
static void test_object_reads_and_writes_like_a_table(void **state)
{
	struct fixture *f = *state;

	push_generated(f, "3");
	run(f,
	    "local keys = {}\n"
	    "for k, v in pairs(h) do keys[#keys + 1] = k; assert(rawget(h, k) == v) end\n"
	    "table.sort(keys)\n"
	    "assert(table.concat(keys, ' ') == 'activity_id bot context conversation_id raw reason transcript user',\n"
	    "       table.concat(keys, ' '))\n"
	    "assert(getmetatable(h) == false)\n"
	    "assert(not pcall(setmetatable, h, {}))\n");
	push_generated(f, "3");
	run(f,
	    "h.transcript = nil\n"
	    "assert(h.transcript == nil, 'unset before its first read')\n"
	    "h.context = { mine = true }\n"
	    "assert(h.context.mine and rawget(h, 'context').mine)\n"
	    "assert(h.user.id == 'dl_user_5c1e0b7a')\n"
	    "h.user = nil\n"
	    "assert(h.user == nil, 'unset after its first read')\n"
	    "h.extra = 1\n"
	    "local n = 0\n"
	    "for k, v in pairs(h) do\n"
	    "  n = n + 1\n"
	    "  assert(k ~= 'transcript' and k ~= 'user' and (k ~= 'context' or v.mine))\n"
	    "end\n"
	    "assert(n == 7, n)\n"
	    "local ok, err = pcall(debug.getmetatable(h).__index, {}, 'context')\n"
	    "assert(not ok and err:find('not a handoff object'), err)\n");
}

/* Built after the parser moved on and the input was overwritten, the lazy fields hold
 * what an object built at once held: strings in the input, in the parser's unescape
 * buffer and in its arena (parts sent as JSON strings) were all copied. */
static void check_built_after_the_parse(struct fixture *f, const char *args)
{
	struct hd_activity_set set;
	struct hd_parse_error err;

	free(f->text);
	f->text = payload_generate(args, &f->len);
	assert_int_equal(hd_activity_parse(f->p, f->text, f->len, f->len + HD_PARSE_PADDING, &set, &err), 0);
	handoff_object_push(f->L, hd_activity_set_handoff(&set));
	lua_setglobal(f->L, "h");
	handoff_object_push(f->L, hd_activity_set_handoff(&set));
	lua_setglobal(f->L, "at_once");
	run(f,
	    "ref = plain(at_once)\n"
	    "ref_raw = { h.raw:activity(), h.raw:context(), h.raw:transcript() }\n"
	    "for i = 1, #h.raw do ref_raw[#ref_raw + 1] = h.raw:entry(i) end\n"
	    "at_once = nil\n");
	memset(f->text, 'x', f->len);
	parse_something_else(f->p);
	run(f,
	    "collectgarbage() collectgarbage()\n"
	    "assert(#ref.transcript == 4 and #h.raw == 4 and ref.context.vars.va_Scope == 'bot')\n"
	    "same(plain(h), ref)\n"
	    "local raw = { h.raw:activity(), h.raw:context(), h.raw:transcript() }\n"
	    "for i = 1, #h.raw do raw[#raw + 1] = h.raw:entry(i) end\n"
	    "same(raw, ref_raw, 'raw')\n");
}

static void test_built_after_the_parse(void **state)
{
	struct fixture *f = *state;

	run(f, helpers);
	check_built_after_the_parse(f, "4");
	check_built_after_the_parse(f, "4 --escape-all --vars 3");
	check_built_after_the_parse(f, "4 --ascii --value-as-string --content-as-string --nulls");
	check_built_after_the_parse(f, "4 --escape-all --value-as-string --content-as-string");
}

/* }==== */

/* {==== A lazy field that runs out of memory: an error in the script that read it, and
 * the field is built by the next read once memory is there. */

struct capped {
	size_t used, cap;
};

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct capped *c = ud;
	size_t old = ptr ? osize : 0;
	void *p;

	if (nsize == 0) {
		free(ptr);
		c->used -= old;
		return NULL;
	}
	if (nsize > old && c->used - old + nsize > c->cap)
		return NULL;
	p = realloc(ptr, nsize);
	if (p)
		c->used = c->used - old + nsize;
	return p;
}

static void test_lazy_field_out_of_memory(void **state)
{
	struct fixture *f = *state;
	struct capped mem = { 0, SIZE_MAX };
	lua_State *L = lua_newstate(capped_alloc, &mem);
	struct hd_activity_set set;

	assert_non_null(L);
	luaL_openlibs(L);
	free(f->text);
	f->text = payload_generate("200", &f->len);
	parse_ok(f->p, f->text, f->len, &set);
	handoff_object_push(L, hd_activity_set_handoff(&set));
	lua_setglobal(L, "h");
	lua_gc(L, LUA_GCCOLLECT);
	mem.cap = mem.used + 16 * 1024;	/* far less than 200 entries need */
	if (luaL_dostring(L,
			  "local ok, err = pcall(function() return h.transcript end)\n"
			  "assert(not ok and err == 'not enough memory', err)\n"
			  "assert(rawget(h, 'transcript') == nil)\n"))
		fail_msg("%s", lua_tostring(L, -1));
	mem.cap = SIZE_MAX;
	if (luaL_dostring(L, "assert(#h.transcript == 200 and h.transcript[200].id:sub(-3) == '199')\n"))
		fail_msg("%s", lua_tostring(L, -1));
	lua_close(L);
}

/* }==== */

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tables, setup, teardown),
		cmocka_unit_test_setup_teardown(test_raw_on_demand, setup, teardown),
		cmocka_unit_test_setup_teardown(test_raw_of_string_encoded_parts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nulls, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_parts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outlives_the_parser, setup, teardown),
		cmocka_unit_test_setup_teardown(test_payload_module, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lazy_fields_are_plain_tables, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lazy_fields_encode_as_json, setup, teardown),
		cmocka_unit_test_setup_teardown(test_object_reads_and_writes_like_a_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_built_after_the_parse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lazy_field_out_of_memory, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
