/* fuzz_parse.c - libFuzzer target over the Direct Line payload parser: every input goes
 * through hd_activity_parse (copied and in place, default and tight limits) and every
 * handoff it yields is built into a Lua object whose raw pieces are all read back and
 * whose lazy fields are all built.
 * Built with clang by tests/fuzz/CMakeLists.txt; test_fuzz_regressions.c includes this
 * file to replay tests/fuzz/regressions/ in the ordinary test run. */
#include "script/bindings/handoff_object.h"

#include <handoffd/handoff.h>

#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libFuzzer calls the target with nothing but the input, so the parsers and the Lua
 * state it reuses across inputs can only live here. */
static struct {
	struct hd_activity_parser *loose, *tight;
	lua_State *L;
	char *buf;
	size_t cap;
} fz;

static void fuzz_init(void)
{
	struct hd_parse_opts tight = { 4096, 6 };

	fz.loose = hd_activity_parser_new(NULL);
	fz.tight = hd_activity_parser_new(&tight);
	fz.L = luaL_newstate();
	if (!fz.loose || !fz.tight || !fz.L)
		abort();
	luaL_requiref(fz.L, LUA_GNAME, luaopen_base, 1);	/* pairs, for the lazy fields */
	lua_pop(fz.L, 1);
}

/* Reads every raw piece of the handoff object on top of the stack. */
static void read_raw(lua_State *L)
{
	static const char *const chunk =
		"local h = ...\n"
		"local n = 0\n"
		"for i = 0, #h.raw + 1 do n = n + #(h.raw:entry(i) or '') end\n"
		"n = n + #(h.raw:activity() or '') + #(h.raw:transcript() or '') + #(h.raw:context() or '')\n"
		"for i = 1, #h.transcript do local e = h.transcript[i]; n = n + #(e.text or '') + #(e.id or '') end\n"
		"for _, v in pairs(h.context.vars) do n = n + (type(v) == 'string' and #v or 1) end\n"
		"for _ in pairs(h) do n = n + 1 end\n"
		"return n\n";

	if (luaL_loadstring(L, chunk))
		abort();
	lua_insert(L, -2);
	if (lua_pcall(L, 1, 1, 0)) {
		fprintf(stderr, "fuzz_parse: %s\n", lua_tostring(L, -1));
		abort();
	}
	lua_pop(L, 1);
}

/* Builds the object of every handoff in SET, then makes the parser forget the parse
 * and, when the input is OURS (fz.buf), overwrites it before any object is read: the
 * objects must hold all they need. */
static void check_set(struct hd_activity_parser *p, const struct hd_activity_set *set,
		      const char *buf, size_t len, bool ours)
{
	static const char forget[] = "{\"activities\":[]}";
	struct hd_activity_set other;
	struct hd_parse_error err;
	int objects = 0;

	for (size_t i = 0; i < set->count; i++) {
		const struct hd_activity *a = &set->activities[i];
		if (a->offset + a->raw.len > len || a->raw.ptr != buf + a->offset)
			abort();
		if (!a->handoff)
			continue;
		if (!lua_checkstack(fz.L, 2))
			abort();
		handoff_object_push(fz.L, a->handoff);
		objects++;
	}
	if (objects && hd_activity_parse(p, forget, sizeof(forget) - 1, sizeof(forget) - 1, &other, &err))
		abort();
	if (ours)
		memset(fz.buf, 0xff, len);
	for (int i = 1; i <= objects; i++) {
		lua_pushvalue(fz.L, i);
		read_raw(fz.L);
	}
	lua_settop(fz.L, 0);
}

static void parse_with(struct hd_activity_parser *p, const uint8_t *data, size_t size)
{
	struct hd_activity_set set;
	struct hd_parse_error err;

	if (size + HD_PARSE_PADDING > fz.cap) {
		free(fz.buf);
		fz.cap = size + HD_PARSE_PADDING;
		if (!(fz.buf = malloc(fz.cap)))
			abort();
	}
	memcpy(fz.buf, data, size);
	memset(fz.buf + size, 0xff, HD_PARSE_PADDING);	/* padding content must not matter */
	if (hd_activity_parse(p, fz.buf, size, size + HD_PARSE_PADDING, &set, &err) == 0)
		check_set(p, &set, fz.buf, size, true);
	else if (set.count || err.offset > size || !err.reason[0])
		abort();
	if (hd_activity_parse(p, (const char *)data, size, size, &set, &err) == 0 && set.count)
		check_set(p, &set, set.activities[0].raw.ptr - set.activities[0].offset, size, false);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void fuzz_done(void);

/* For the replay in the unit tests: leaves nothing for the leak checker. */
void fuzz_done(void)
{
	hd_activity_parser_free(fz.loose);
	hd_activity_parser_free(fz.tight);
	if (fz.L)
		lua_close(fz.L);
	free(fz.buf);
	memset(&fz, 0, sizeof(fz));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!fz.L)
		fuzz_init();
	parse_with(fz.loose, data, size);
	parse_with(fz.tight, data, size);
	return 0;
}
