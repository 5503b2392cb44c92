/* webhooks.c - hub webhook routes: HTTP request in, Lua handler task, HTTP answer out.
 * Owns the translation between evhttp requests and the `req` table / `status, body,
 * headers` results, and the care for a peer that hangs up while its handler still
 * runs. Which generation's handler serves a route is decided by script_host (attach on
 * swap, detach on retire). */
#include "script/webhooks.h"

#include "net/http_server.h"
#include "base/log.h"
#include "base/hd_runtime.h"
#include "script/bindings/bindings.h"
#include "script/script_gen.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct webhook {
	char method[8];
	char *path;
	char *what;		/* "webhook METHOD /path": names its tasks in the logs */
	int fn_ref;
	struct script_gen *g;
};

/* One request being served: lives until the handler's task ends. */
struct call {
	struct evhttp_request *req;	/* NULL once the peer hung up */
	struct webhook *wh;
};

/* ---- collecting routes from the hub modules --------------------------------------- */

static int parse_route(const char *key, char *method, size_t mlen, const char **path)
{
	const char *sp = strchr(key, ' ');
	size_t n = sp ? (size_t)(sp - key) : 0;

	if (!sp || n == 0 || n >= mlen || sp[1] != '/')
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!isupper((unsigned char)key[i]))
			return -EINVAL;
	memcpy(method, key, n);
	method[n] = '\0';
	*path = sp + 1;
	return 0;
}

static int add_webhook(struct script_gen *g, const char *module, char *err, size_t errlen)
{
	lua_State *L = g->L;
	struct webhook *wh, *grown;
	const char *key = lua_tostring(L, -2), *path;
	char method[8];

	if (lua_type(L, -2) != LUA_TSTRING || parse_route(key, method, sizeof(method), &path) < 0 ||
	    !lua_isfunction(L, -1)) {
		snprintf(err, errlen, "%s: webhooks keys must be \"METHOD /path\" with a function, got %s = %s",
			 module, lua_type(L, -2) == LUA_TSTRING ? key : luaL_typename(L, -2), luaL_typename(L, -1));
		return -EINVAL;
	}
	grown = realloc(g->webhooks, (g->nwebhooks + 1) * sizeof(*g->webhooks));
	if (!grown)
		return -ENOMEM;
	g->webhooks = grown;
	wh = &g->webhooks[g->nwebhooks];
	memset(wh, 0, sizeof(*wh));
	wh->path = strdup(path);
	wh->what = malloc(sizeof("webhook  ") + strlen(method) + strlen(path));
	if (!wh->path || !wh->what) {
		free(wh->what);
		free(wh->path);
		return -ENOMEM;
	}
	sprintf(wh->what, "webhook %s %s", method, path);
	strcpy(wh->method, method);
	wh->g = g;
	lua_pushvalue(L, -1);
	wh->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	g->nwebhooks++;
	return 0;
}

static int collect_module(struct script_gen *g, const char *regkey, char *err, size_t errlen)
{
	lua_State *L = g->L;
	int rc = 0;

	lua_getfield(L, LUA_REGISTRYINDEX, regkey);
	if (!lua_istable(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	lua_getfield(L, -1, "webhooks");
	if (!lua_isnil(L, -1) && !lua_istable(L, -1)) {
		snprintf(err, errlen, "%s: webhooks must be a table", regkey + strlen("handoffd."));
		rc = -EINVAL;
	} else if (lua_istable(L, -1)) {
		lua_pushnil(L);
		while (rc == 0 && lua_next(L, -2)) {
			rc = add_webhook(g, regkey + strlen("handoffd."), err, errlen);
			lua_pop(L, 1);
		}
		if (rc < 0 && lua_gettop(L) > 0)
			lua_pop(L, 1);	/* the key left by the interrupted lua_next */
	}
	lua_pop(L, 2);
	return rc;
}

int webhooks_collect(struct script_gen *g, char *err, size_t errlen)
{
	static const char *const regkeys[] = { SCRIPT_REG_HUB, SCRIPT_REG_FRONT, SCRIPT_REG_DESK };
	int top = lua_gettop(g->L);

	for (size_t i = 0; i < sizeof(regkeys) / sizeof(regkeys[0]); i++) {
		int rc = collect_module(g, regkeys[i], err, errlen);

		if (rc < 0) {
			lua_settop(g->L, top);
			if (rc == -ENOMEM)
				snprintf(err, errlen, "out of memory collecting webhooks");
			return rc;
		}
	}
	return 0;
}

void webhooks_free(struct script_gen *g)
{
	for (size_t i = 0; i < g->nwebhooks; i++) {
		free(g->webhooks[i].path);
		free(g->webhooks[i].what);
	}
	free(g->webhooks);
	g->webhooks = NULL;
	g->nwebhooks = 0;
}

/* ---- serving -------------------------------------------------------------------- */

static void on_peer_gone(struct evhttp_connection *conn, void *arg)
{
	struct call *c = arg;

	(void)conn;
	c->req = NULL;
}

/* The headers by lowercase name, the table sized once. */
static void push_headers(lua_State *co, struct evkeyvalq *hdrs)
{
	int count = 0;

	for (struct evkeyval *kv = hdrs->tqh_first; kv; kv = kv->next.tqe_next)
		count++;
	lua_createtable(co, 0, count);
	for (struct evkeyval *kv = hdrs->tqh_first; kv; kv = kv->next.tqe_next)
		bind_header_add(co, kv->key, kv->value);
}

static void push_query(lua_State *co, const char *query)
{
	struct evkeyvalq kv;

	lua_newtable(co);
	if (!query || evhttp_parse_query_str(query, &kv) < 0)
		return;
	for (struct evkeyval *p = kv.tqh_first; p; p = p->next.tqe_next) {
		lua_pushstring(co, p->value);
		lua_setfield(co, -2, p->key);
	}
	evhttp_clear_headers(&kv);
}

/* The handler and its one argument, req = {method, path, query, headers, body, peer}. */
static int push_call(lua_State *co, void *arg)
{
	struct call *c = arg;
	struct evhttp_request *req = c->req;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	struct evbuffer *body = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(body);
	char *peer = NULL;
	ev_uint16_t port = 0;

	lua_rawgeti(co, LUA_REGISTRYINDEX, c->wh->fn_ref);
	lua_createtable(co, 0, 6);
	lua_pushstring(co, http_server_method(req));
	lua_setfield(co, -2, "method");
	lua_pushstring(co, c->wh->path);
	lua_setfield(co, -2, "path");
	push_query(co, uri ? evhttp_uri_get_query(uri) : NULL);
	lua_setfield(co, -2, "query");
	push_headers(co, evhttp_request_get_input_headers(req));
	lua_setfield(co, -2, "headers");
	lua_pushlstring(co, (const char *)evbuffer_pullup(body, (ev_ssize_t)len), len);
	lua_setfield(co, -2, "body");
	evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer, &port);
	lua_pushstring(co, peer ? peer : "");
	lua_setfield(co, -2, "peer");
	return 1;
}

/* Encodes a table body with the runtime's JSON module; leaves a string or nil. */
static void encode_table_body(lua_State *co, int idx)
{
	lua_getglobal(co, "require");
	lua_pushliteral(co, "handoff.json");
	if (lua_pcall(co, 1, 1, 0) != LUA_OK) {
		lua_pop(co, 1);
		lua_pushnil(co);
		return;
	}
	lua_getfield(co, -1, "encode");
	lua_pushvalue(co, idx);
	if (lua_pcall(co, 1, 1, 0) != LUA_OK)
		lua_pushnil(co);
	lua_remove(co, -2);
}

/* Turns the handler's `status, body, headers` into the answer; 500 when malformed. */
static void reply_results(struct call *c, lua_State *co, int nres, struct log *lg)
{
	int base = lua_gettop(co) - nres + 1;
	int isnum = 0;
	lua_Integer status = nres >= 1 ? lua_tointegerx(co, base, &isnum) : 200;
	struct evkeyvalq *out = evhttp_request_get_output_headers(c->req);
	struct evbuffer *buf = evbuffer_new();

	if (nres >= 1 && lua_isnil(co, base))
		status = 200, isnum = 1;
	if ((nres >= 1 && !isnum) || status < 100 || status > 599) {
		log_error(lg, "webhook.bad_result", "route=\"%s %s\" note=\"status must be an integer 100-599\"",
			  c->wh->method, c->wh->path);
		http_server_reply_json(c->req, 500, "{\"error\":\"internal error\"}");
		evbuffer_free(buf);
		return;
	}
	if (nres >= 2) {
		int bi = base + 1;

		if (lua_istable(co, bi)) {
			encode_table_body(co, bi);
			evhttp_add_header(out, "Content-Type", "application/json");
			bi = lua_gettop(co);
		}
		if (lua_type(co, bi) == LUA_TSTRING && buf) {
			size_t len;
			const char *s = lua_tolstring(co, bi, &len);

			evbuffer_add(buf, s, len);
		}
	}
	if (nres >= 3 && lua_istable(co, base + 2)) {
		lua_pushnil(co);
		while (lua_next(co, base + 2)) {
			if (lua_type(co, -2) == LUA_TSTRING && lua_isstring(co, -1))
				evhttp_add_header(out, lua_tostring(co, -2), lua_tostring(co, -1));
			lua_pop(co, 1);
		}
	}
	evhttp_send_reply(c->req, (int)status, NULL, buf);
	if (buf)
		evbuffer_free(buf);
}

static void call_done(lua_State *co, bool ok, int nres, void *arg)
{
	struct call *c = arg;
	struct hd_runtime *rt = c->wh->g->sh->rt;

	if (c->req) {
		http_server_watch_peer(rt->http, c->req, NULL, NULL);
		if (ok)
			reply_results(c, co, nres, rt->log);
		else	/* the error and its traceback are logged by the task; the peer learns nothing */
			http_server_reply_json(c->req, 500, "{\"error\":\"internal error\"}");
	} else {
		http_server_forget(rt->http);
		log_info(rt->log, "webhook.peer_gone", "route=\"%s %s\"", c->wh->method, c->wh->path);
	}
	free(c);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct webhook *wh = arg;
	struct http_server *srv = wh->g->sh->rt->http;
	struct call *c = calloc(1, sizeof(*c));

	if (!c) {
		http_server_reply_json(req, 503, "{\"error\":\"out of memory\"}");
		return;
	}
	c->req = req;
	c->wh = wh;
	http_server_watch_peer(srv, req, on_peer_gone, c);
	if (script_task_spawn_on(wh->g->sh, wh->g, NULL, wh->what, push_call, call_done, c) < 0) {
		http_server_watch_peer(srv, req, NULL, NULL);
		http_server_reply_json(req, 503, "{\"error\":\"unavailable\"}");
		free(c);
	}
}

int webhooks_attach(struct http_server *srv, struct script_gen *g, char *err, size_t errlen)
{
	for (size_t i = 0; i < g->nwebhooks; i++) {
		struct webhook *wh = &g->webhooks[i];
		int rc = http_server_route(srv, wh->method, wh->path, on_request, wh);

		if (rc < 0) {
			snprintf(err, errlen, "webhooks: cannot serve %s %s: %s", wh->method, wh->path,
				 rc == -EEXIST ? "the route is taken" : strerror(-rc));
			webhooks_detach(srv, g);
			return rc;
		}
	}
	return 0;
}

void webhooks_detach(struct http_server *srv, struct script_gen *g)
{
	for (size_t i = 0; i < g->nwebhooks; i++)
		http_server_unroute(srv, &g->webhooks[i]);
}
