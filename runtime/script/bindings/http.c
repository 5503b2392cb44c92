/* bindings/http.c - the `handoff.http` module; the work happens in http_client.c.
 *   local res, err = http.request(url, { method = "POST", headers = {...}, body = "...",
 *                                       timeout_ms = 5000, max_body = 65536, ca_file = nil })
 * Inside a hook the call yields the task until the answer arrives; the loop keeps going.
 * Any HTTP status is a `res` ({status, headers, body}); only "no answer" is nil, err with
 * http_client's short stable reason ("timeout", "connection refused", ...). */
#include "script/bindings/bindings.h"

#include "net/http_client.h"
#include "base/hd_runtime.h"
#include "script/script_host.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define HTTP_BIND_MAX_HEADERS 64
#define HTTP_BIND_MAX_TIMEOUT_MS (10u * 60 * 1000)

static const char *const option_names[] = {
	"method", "headers", "body", "timeout_ms", "max_body", "ca_file", NULL,
};

/* One request a task waits on; freed on completion or cancel. */
struct waiting {
	struct script_task *task;
	struct http_transfer *transfer;
};

static void push_response(lua_State *co, const struct http_response *res)
{
	lua_createtable(co, 0, 3);
	lua_pushinteger(co, res->status);
	lua_setfield(co, -2, "status");
	lua_createtable(co, 0, (int)res->nheaders);
	for (size_t i = 0; i < res->nheaders; i++)
		bind_header_add(co, res->headers[i].name, res->headers[i].value);
	lua_setfield(co, -2, "headers");
	lua_pushlstring(co, res->body, res->body_len);
	lua_setfield(co, -2, "body");
}

static void on_done(const struct http_response *res, int err, void *arg)
{
	struct waiting *w = arg;
	struct script_task *task = w->task;
	lua_State *co = script_task_thread(task);

	free(w);
	if (err) {
		luaL_pushfail(co);
		lua_pushstring(co, http_client_strerror(err));
		script_task_resume(task, 2);
		return;
	}
	push_response(co, res);
	script_task_resume(task, 1);
}

static void cancel_request(void *arg)
{
	struct waiting *w = arg;

	http_client_cancel(w->transfer);
	free(w);
}

/* Reads the headers table at IDX into HDRS; the strings stay on the Lua stack. */
static size_t read_headers(lua_State *L, int idx, struct http_header *hdrs)
{
	size_t n = 0;

	lua_pushnil(L);
	while (lua_next(L, idx)) {
		if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
			luaL_error(L, "http.request: header names and values must be strings");
		if (n == HTTP_BIND_MAX_HEADERS)
			luaL_error(L, "http.request: more than %d headers", HTTP_BIND_MAX_HEADERS);
		hdrs[n].name = lua_tostring(L, -2);
		hdrs[n].value = lua_tostring(L, -1);
		n++;
		lua_pop(L, 1);	/* the values stay referenced by the table */
	}
	return n;
}

static uint32_t opt_uint(lua_State *L, int idx, const char *name, lua_Integer max)
{
	lua_Integer v;

	lua_getfield(L, idx, name);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	v = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
	if (v <= 0 || v > max)
		luaL_error(L, "http.request: option '%s' must be a positive integer up to %d", name, (int)max);
	lua_pop(L, 1);
	return (uint32_t)v;
}

static const char *opt_string(lua_State *L, int idx, const char *name, size_t *len)
{
	const char *s = NULL;

	lua_getfield(L, idx, name);
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "http.request: option '%s' must be a string", name);
		s = lua_tolstring(L, -1, len);
	}
	lua_pop(L, 1);	/* still referenced by the options table */
	return s;
}

static int l_http_request(lua_State *L)
{
	struct http_request req = { .url = luaL_checkstring(L, 1) };
	struct http_header hdrs[HTTP_BIND_MAX_HEADERS];
	struct script_task *task = script_task_of(L);
	struct waiting *w;
	int rc;

	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		bind_reject_unknown_keys(L, 2, option_names);
		req.method = opt_string(L, 2, "method", NULL);
		req.body = opt_string(L, 2, "body", &req.body_len);
		req.ca_file = opt_string(L, 2, "ca_file", NULL);
		req.timeout_ms = opt_uint(L, 2, "timeout_ms", HTTP_BIND_MAX_TIMEOUT_MS);
		req.max_body = opt_uint(L, 2, "max_body", 64 << 20);
		lua_getfield(L, 2, "headers");
		if (!lua_isnil(L, -1)) {
			luaL_argcheck(L, lua_istable(L, -1), 2, "option 'headers' must be a table");
			req.nheaders = read_headers(L, lua_gettop(L), hdrs);
			req.headers = hdrs;
		}
	}
	if (!task)
		return luaL_error(L, "http.request: only allowed inside a hook");
	w = calloc(1, sizeof(*w));
	if (!w) {
		luaL_pushfail(L);
		lua_pushliteral(L, "out of memory");
		return 2;
	}
	rc = http_client_request(bind_runtime(L)->http_client, &req, on_done, w, &w->transfer);
	if (rc < 0) {
		free(w);
		luaL_pushfail(L);
		lua_pushstring(L, http_client_strerror(rc));
		return 2;
	}
	w->task = task;
	script_task_wait(task, cancel_request, w);
	return lua_yield(L, 0);	/* on_done resumes us with res, or nil and err */
}

static const luaL_Reg http_funcs[] = {
	{ "request", l_http_request },
	{ NULL, NULL },
};

int luaopen_handoff_http(lua_State *L)
{
	luaL_newlib(L, http_funcs);
	return 1;
}
