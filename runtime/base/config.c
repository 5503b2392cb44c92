/* config.c - loads the Lua config file, applies defaults and checks every key.
 * The file runs in a throw-away Lua state with the standard libraries (os.getenv reads
 * secrets from the environment). Validation is table-driven: the key tables below are
 * both the checker and the list of what exists, so a typo fails loudly with its line.
 * Script-owned settings (the hub table beyond `module`) are not interpreted here. */
#include "base/config.h"

#include "base/log.h"
#include "base/secrets.h"

#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_FILE_MAX (1 << 20)
#define CONFIG_DL_MIN_MESSAGE (64.0 * 1024)

enum key_type { KEY_STRING, KEY_NUMBER, KEY_BOOL, KEY_TABLE, KEY_MODULE_TABLE };

/* A key, where its value lands and its default: this table is the one place a default
 * is written (README's tables repeat it; nothing else falls back on its own). */
struct config_key {
	const char *name;
	enum key_type type;
	bool required;
	size_t offset;			/* where the value lands in struct config */
	const struct config_key *children;	/* KEY_TABLE: its keys */
	const char *string;		/* KEY_STRING: the default (NULL: none) */
	double number;			/* KEY_NUMBER: the default */
	bool boolean;			/* KEY_BOOL: the default */
};

#define FIELD(f) offsetof(struct config, f)

static const struct config_key directline_keys[] = {
	{ "base", KEY_STRING, .offset = FIELD(directline.base),
	  .string = "https://directline.botframework.com/v3/directline" },
	{ "secret", KEY_STRING, .offset = FIELD(directline.secret) },
	{ "token_url", KEY_STRING, .offset = FIELD(directline.token_url) },
	{ "token", KEY_STRING, .offset = FIELD(directline.token) },
	{ "transport", KEY_STRING, .offset = FIELD(directline.transport), .string = "websocket" },
	{ "ca_file", KEY_STRING, .offset = FIELD(directline.ca_file) },
	{ "user_id", KEY_STRING, .offset = FIELD(directline.user_id), .string = "dl_handoffd-" },
	{ "bot_name", KEY_STRING, .offset = FIELD(directline.bot_name), .string = "bot" },
	{ "locale", KEY_STRING, .offset = FIELD(directline.locale) },
	/* service-to-service advice: 5-10 s */
	{ "poll_interval", KEY_NUMBER, .offset = FIELD(directline.poll_interval), .number = 5 },
	{ "liveness", KEY_NUMBER, .offset = FIELD(directline.liveness), .number = 60 },
	/* directline.md 7.11: reconcile idle streams every few minutes */
	{ "idle_sync", KEY_NUMBER, .offset = FIELD(directline.idle_sync), .number = 300 },
	/* idle sockets cost memory and carry nothing */
	{ "park_after", KEY_NUMBER, .offset = FIELD(directline.park_after), .number = 60 },
	/* what the bot says on its own still arrives */
	{ "parked_sync", KEY_NUMBER, .offset = FIELD(directline.parked_sync), .number = 300 },
	{ "reconnect_max_concurrent", KEY_NUMBER, .offset = FIELD(directline.reconnect_max_concurrent),
	  .number = 64 },
	{ "reconnect_base", KEY_NUMBER, .offset = FIELD(directline.reconnect_base), .number = 1 },
	{ "reconnect_cap", KEY_NUMBER, .offset = FIELD(directline.reconnect_cap), .number = 60 },
	{ "token_refresh", KEY_NUMBER, .offset = FIELD(directline.token_refresh), .number = 0.5 },
	/* above the bot's 15 s, like DirectLineJS */
	{ "post_timeout", KEY_NUMBER, .offset = FIELD(directline.post_timeout), .number = 20 },
	{ "echo_grace", KEY_NUMBER, .offset = FIELD(directline.echo_grace), .number = 5 },
	{ "max_message", KEY_NUMBER, .offset = FIELD(directline.max_message),
	  .number = 4.0 * 1024 * 1024 },
	{ "regional_discovery", KEY_BOOL, .offset = FIELD(directline.regional_discovery) },
	{ "greeting", KEY_BOOL, .offset = FIELD(directline.greeting) },
	/* bots that ignore the event lose nothing */
	{ "status_events", KEY_BOOL, .offset = FIELD(directline.status_events), .boolean = true },
	{ .name = NULL },
};

static const struct config_key admin_keys[] = {
	{ "token", KEY_STRING, .offset = FIELD(admin.token) },
	{ "allow_remote", KEY_BOOL, .offset = FIELD(admin.allow_remote) },
	{ "show_content", KEY_BOOL, .offset = FIELD(admin.show_content) },
	{ .name = NULL },
};

static const struct config_key scripts_keys[] = {
	/* about 0.1-0.5 s of pure Lua */
	{ "max_instructions", KEY_NUMBER, .offset = FIELD(scripts.max_instructions),
	  .number = 50e6 },
	{ "max_memory_mb", KEY_NUMBER, .offset = FIELD(scripts.max_memory_mb), .number = 256 },
	{ "retire_after", KEY_NUMBER, .offset = FIELD(scripts.retire_after), .number = 60 },
	{ "watch", KEY_BOOL, .offset = FIELD(scripts.watch) },
	{ .name = NULL },
};

static const struct config_key fallback_keys[] = {
	{ "queue", KEY_STRING, .offset = FIELD(fallback.queue), .string = "default" },
	{ "skill", KEY_STRING, .offset = FIELD(fallback.skill) },
	{ "agent", KEY_STRING, .offset = FIELD(fallback.agent) },
	{ "reason", KEY_STRING, .offset = FIELD(fallback.reason) },
	{ "priority", KEY_NUMBER, .offset = FIELD(fallback.priority) },
	{ .name = NULL },
};

static const struct config_key limits_keys[] = {
	{ "conversations", KEY_NUMBER, .offset = FIELD(limits.conversations), .number = 50000 },
	{ "queued", KEY_NUMBER, .offset = FIELD(limits.queued), .number = 1000 },
	{ "connections", KEY_NUMBER, .offset = FIELD(limits.connections) },
	{ "connections_per_ip", KEY_NUMBER, .offset = FIELD(limits.connections_per_ip) },
	{ "request_timeout", KEY_NUMBER, .offset = FIELD(limits.request_timeout), .number = 30 },
	{ "keepalive_timeout", KEY_NUMBER, .offset = FIELD(limits.keepalive_timeout),
	  .number = 10 },
	{ "buffered_mb", KEY_NUMBER, .offset = FIELD(limits.buffered_mb), .number = 64 },
	/* a chat nobody touched for a day is over */
	{ "idle_timeout", KEY_NUMBER, .offset = FIELD(limits.idle_timeout), .number = 86400 },
	{ .name = NULL },
};

static const struct config_key retry_keys[] = {
	{ "base", KEY_NUMBER, .offset = FIELD(retry.base), .number = 1 },
	{ "max_delay", KEY_NUMBER, .offset = FIELD(retry.max_delay), .number = 60 },
	/* hubs.md: retried up to 10 minutes */
	{ "give_up_after", KEY_NUMBER, .offset = FIELD(retry.give_up_after), .number = 600 },
	{ .name = NULL },
};

static const struct config_key cluster_keys[] = {
	{ "node", KEY_STRING, .offset = FIELD(cluster.node) },
	{ "heartbeat", KEY_NUMBER, .offset = FIELD(cluster.heartbeat), .number = 2 },
	{ "lease", KEY_NUMBER, .offset = FIELD(cluster.lease), .number = 10 },
	{ .name = NULL },
};

static const struct config_key top_keys[] = {
	/* parsed into listen_host and listen_port */
	{ "listen", KEY_STRING, .string = "127.0.0.1:8088" },
	{ "state", KEY_STRING, .offset = FIELD(state), .string = "sqlite:handoffd-state.db" },
	{ "log_level", KEY_STRING, .offset = FIELD(log_level), .string = "info" },
	{ "shutdown_timeout", KEY_NUMBER, .offset = FIELD(shutdown_timeout), .number = 10 },
	/* ended conversations stay a week for inspection */
	{ "state_retention", KEY_NUMBER, .offset = FIELD(state_retention), .number = 7 * 86400 },
	{ "routes", KEY_STRING, .offset = FIELD(routes) },
	{ "script_path", KEY_STRING, .offset = FIELD(script_path) },
	{ "directline", KEY_TABLE, .required = true, .children = directline_keys },
	{ "hub", KEY_MODULE_TABLE, .offset = FIELD(hub_module) },
	{ "front", KEY_MODULE_TABLE, .offset = FIELD(front_module) },
	{ "desk", KEY_MODULE_TABLE, .offset = FIELD(desk_module) },
	{ "admin", KEY_TABLE, .children = admin_keys },
	{ "scripts", KEY_TABLE, .children = scripts_keys },
	{ "fallback", KEY_TABLE, .children = fallback_keys },
	{ "limits", KEY_TABLE, .children = limits_keys },
	{ "retry", KEY_TABLE, .children = retry_keys },
	{ "cluster", KEY_TABLE, .children = cluster_keys },
	{ .name = NULL },
};

/* What validation needs besides the Lua state: the file's text, for line numbers. */
struct loader {
	struct config *cfg;
	const char *text;
	char *err;
	size_t errlen;
};

static bool is_ident(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* The line where KEY is first written as a table key (`key =` or `["key"]`), or 0.
 * Lua keeps no positions for table fields, so the source is searched instead. */
static int key_line(const char *text, const char *key)
{
	size_t klen = strlen(key);
	int line = 1;

	for (const char *p = text; *p; p++) {
		if (*p == '\n') {
			line++;
			continue;
		}
		if (strncmp(p, key, klen) != 0 || (p > text && is_ident(p[-1])) || is_ident(p[klen]))
			continue;
		const char *q = p + klen;

		if (q[0] == '"' || q[0] == '\'')
			q++;
		while (*q == ' ' || *q == '\t' || *q == ']')
			q++;
		if (*q == '=' && q[1] != '=')
			return line;
	}
	return 0;
}

static int fail(struct loader *ld, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Writes "reason in FILE:LINE" (or "in FILE" when the line is unknown) to the error buffer. */
static int fail(struct loader *ld, const char *key, const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	int line = key ? key_line(ld->text, key) : 0;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(ld->err, ld->errlen, "%s in %s:%d", reason, ld->cfg->path, line);
	else
		snprintf(ld->err, ld->errlen, "%s in %s", reason, ld->cfg->path);
	return -EINVAL;
}

static const char *type_name(enum key_type t)
{
	switch (t) {
	case KEY_STRING: return "a string";
	case KEY_NUMBER: return "a number";
	case KEY_BOOL: return "a boolean";
	default: return "a table";
	}
}

static bool type_matches(lua_State *L, int idx, enum key_type t)
{
	switch (t) {
	case KEY_STRING: return lua_type(L, idx) == LUA_TSTRING;
	case KEY_NUMBER: return lua_type(L, idx) == LUA_TNUMBER;
	case KEY_BOOL: return lua_type(L, idx) == LUA_TBOOLEAN;
	default: return lua_type(L, idx) == LUA_TTABLE;
	}
}

static const struct config_key *find_key(const struct config_key *keys, const char *name)
{
	for (; keys->name; keys++)
		if (strcmp(keys->name, name) == 0)
			return keys;
	return NULL;
}

static int store_value(struct loader *ld, lua_State *L, const struct config_key *k, const char *qual)
{
	char *base = (char *)ld->cfg;

	if (k->type == KEY_STRING && k->offset) {
		char **slot = (char **)(base + k->offset);

		free(*slot);	/* the default */
		*slot = strdup(lua_tostring(L, -1));
		return *slot ? 0 : -ENOMEM;
	}
	if (k->type == KEY_NUMBER)
		*(double *)(base + k->offset) = lua_tonumber(L, -1);
	if (k->type == KEY_BOOL)
		*(bool *)(base + k->offset) = lua_toboolean(L, -1);
	if (k->type == KEY_MODULE_TABLE) {
		char **slot = (char **)(base + k->offset);

		lua_getfield(L, -1, "module");
		if (lua_type(L, -1) != LUA_TSTRING) {
			lua_pop(L, 1);
			return fail(ld, k->name, "key '%s.module' must be a string naming a Lua module", qual);
		}
		*slot = strdup(lua_tostring(L, -1));
		lua_pop(L, 1);
		return *slot ? 0 : -ENOMEM;
	}
	return 0;
}

static int check_table(struct loader *ld, lua_State *L, const struct config_key *keys, const char *prefix);

/* Checks the value on top of the stack against K. */
static int check_value(struct loader *ld, lua_State *L, const struct config_key *k, const char *prefix)
{
	char qual[128];

	snprintf(qual, sizeof(qual), "%s%s", prefix, k->name);
	if (!type_matches(L, -1, k->type))
		return fail(ld, k->name, "key '%s' must be %s, not %s", qual, type_name(k->type),
			    luaL_typename(L, -1));
	if (k->type == KEY_TABLE) {
		char sub[136];

		snprintf(sub, sizeof(sub), "%s.", qual);
		return check_table(ld, L, k->children, sub);
	}
	return store_value(ld, L, k, qual);
}

/* Every key of the table on top of the stack must be in KEYS; required ones must be there. */
static int check_table(struct loader *ld, lua_State *L, const struct config_key *keys, const char *prefix)
{
	int rc;

	lua_pushnil(L);
	while (lua_next(L, -2)) {
		const struct config_key *k;

		if (lua_type(L, -2) != LUA_TSTRING) {
			lua_pop(L, 2);
			return fail(ld, NULL, "a key of '%s' is not a name", prefix[0] ? prefix : "the config");
		}
		k = find_key(keys, lua_tostring(L, -2));
		if (!k) {
			char key[256];

			snprintf(key, sizeof(key), "%s%s", prefix, lua_tostring(L, -2));
			lua_pop(L, 2);
			return fail(ld, strrchr(key, '.') ? strrchr(key, '.') + 1 : key, "unknown key '%s'", key);
		}
		rc = check_value(ld, L, k, prefix);
		lua_pop(L, 1);
		if (rc < 0) {
			lua_pop(L, 1);
			return rc;
		}
	}
	for (; keys->name; keys++) {
		if (!keys->required)
			continue;
		lua_getfield(L, -1, keys->name);
		rc = lua_isnil(L, -1);
		lua_pop(L, 1);
		if (rc)
			return fail(ld, NULL, "missing required key '%s%s'", prefix, keys->name);
	}
	return 0;
}

static int parse_listen(struct loader *ld, const char *listen)
{
	const char *colon = strrchr(listen, ':');
	char *end;
	long port;
	size_t hostlen;

	if (!colon)
		return fail(ld, "listen", "key 'listen' must be \"host:port\", not \"%s\"", listen);
	port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535)
		return fail(ld, "listen", "key 'listen' has a bad port in \"%s\"", listen);
	hostlen = (size_t)(colon - listen);
	if (listen[0] == '[' && hostlen >= 2 && listen[hostlen - 1] == ']') {
		listen++;	/* [::1]:8088 */
		hostlen -= 2;
	}
	free(ld->cfg->listen_host);
	ld->cfg->listen_host = strndup(listen, hostlen);
	ld->cfg->listen_port = (int)port;
	return ld->cfg->listen_host ? 0 : -ENOMEM;
}

/* Writes the default of every key in KEYS (and in their tables) into CFG before the file
 * is read: a key the file sets replaces it, a key it leaves out keeps it. */
static int preset(struct config *cfg, const struct config_key *keys)
{
	char *base = (char *)cfg;
	int rc = 0;

	for (; keys->name && rc == 0; keys++) {
		if (keys->type == KEY_TABLE)
			rc = preset(cfg, keys->children);
		else if (keys->type == KEY_NUMBER)
			*(double *)(base + keys->offset) = keys->number;
		else if (keys->type == KEY_BOOL)
			*(bool *)(base + keys->offset) = keys->boolean;
		else if (keys->type == KEY_STRING && keys->offset && keys->string)
			rc = (*(char **)(base + keys->offset) = strdup(keys->string)) ? 0 : -ENOMEM;
	}
	return rc;
}

/* Every default, `listen`'s parsed into host and port like a configured one. */
static int preset_defaults(struct loader *ld)
{
	int rc = preset(ld->cfg, top_keys);

	return rc == 0 ? parse_listen(ld, find_key(top_keys, "listen")->string) : rc;
}

/* The Direct Line timings and bounds: each must make sense on its own and together. */
static int check_directline_numbers(struct loader *ld, const struct config_directline *dl)
{
	if (dl->poll_interval < 0.1)
		return fail(ld, "poll_interval", "key 'directline.poll_interval' must be at least 0.1 seconds");
	if (dl->idle_sync < 0)
		return fail(ld, "idle_sync", "key 'directline.idle_sync' must not be negative");
	if (dl->park_after < 0 || dl->parked_sync < 0)
		return fail(ld, "park_after", "keys 'directline.park_after' and 'parked_sync' must not be negative");
	if (dl->liveness < 0.5)
		return fail(ld, "liveness", "key 'directline.liveness' must be at least 0.5 seconds");
	if (dl->reconnect_max_concurrent < 1 || dl->reconnect_max_concurrent > 100000 ||
	    dl->reconnect_max_concurrent != (double)(long)dl->reconnect_max_concurrent)
		return fail(ld, "reconnect_max_concurrent",
			    "key 'directline.reconnect_max_concurrent' must be a whole number from 1 to 100000");
	if (dl->reconnect_base <= 0 || dl->reconnect_cap < dl->reconnect_base || dl->reconnect_cap > 3600)
		return fail(ld, "reconnect_base",
			    "keys 'directline.reconnect_base' and 'reconnect_cap' need 0 < base <= cap <= 3600 seconds");
	if (dl->token_refresh < 0.1 || dl->token_refresh > 0.9)
		return fail(ld, "token_refresh", "key 'directline.token_refresh' must be from 0.1 to 0.9");
	if (dl->post_timeout < 1 || dl->post_timeout > 600)
		return fail(ld, "post_timeout", "key 'directline.post_timeout' must be from 1 to 600 seconds");
	if (dl->echo_grace < 0 || dl->echo_grace > 600)
		return fail(ld, "echo_grace", "key 'directline.echo_grace' must be from 0 to 600 seconds");
	if (dl->max_message < CONFIG_DL_MIN_MESSAGE || dl->max_message > 256.0 * 1024 * 1024)
		return fail(ld, "max_message", "key 'directline.max_message' must be from 65536 to 268435456 bytes");
	if (dl->regional_discovery && !dl->token_url)
		return fail(ld, "regional_discovery", "key 'directline.regional_discovery' needs 'directline.token_url'");
	return 0;
}

static bool whole(double v, double max)
{
	return v >= 0 && v <= max && v == (double)(long)v;
}

/* The inbound connection limits (http_listener.c). */
static int check_listener_limits(struct loader *ld, const struct config_limits *l)
{
	if (!whole(l->connections, 10e6) || !whole(l->connections_per_ip, 10e6))
		return fail(ld, "connections",
			    "keys 'limits.connections' and 'limits.connections_per_ip' must be whole numbers "
			    "from 0 (automatic, no limit) to 10000000");
	if (l->request_timeout < 0.1 || l->request_timeout > 3600)
		return fail(ld, "request_timeout", "key 'limits.request_timeout' must be from 0.1 to 3600 seconds");
	if (l->keepalive_timeout < 0.1 || l->keepalive_timeout > 3600)
		return fail(ld, "keepalive_timeout", "key 'limits.keepalive_timeout' must be from 0.1 to 3600 seconds");
	if (l->buffered_mb < 0.001 || l->buffered_mb > 1024 * 1024)
		return fail(ld, "buffered_mb", "key 'limits.buffered_mb' must be from 0.001 to 1048576");
	return 0;
}

/* A lease shorter than two heartbeats is lost to one late heartbeat. */
static int check_cluster(struct loader *ld, const struct config_cluster *c)
{
	if (c->heartbeat < 0.1 || c->lease < 2 * c->heartbeat || c->lease > 3600)
		return fail(ld, "cluster", "keys 'cluster.heartbeat' and 'cluster.lease' need "
			    "0.1 <= heartbeat, 2 * heartbeat <= lease <= 3600 seconds");
	if (c->node && (!*c->node || strlen(c->node) >= CONFIG_CLUSTER_NODE_MAX))
		return fail(ld, "cluster", "key 'cluster.node' must be 1 to %d bytes", CONFIG_CLUSTER_NODE_MAX - 1);
	return 0;
}

/* Cross-key rules, after every key was checked on its own. */
static int finish(struct loader *ld)
{
	struct config *cfg = ld->cfg;
	struct config_directline *dl = &cfg->directline;
	int rc = 0;

	if (!dl->secret && !dl->token_url && !dl->token)
		return fail(ld, "directline",
			    "missing required key 'directline.secret' (or 'directline.token_url', 'directline.token')");
	if (dl->transport && strcmp(dl->transport, "websocket") != 0 && strcmp(dl->transport, "polling") != 0)
		return fail(ld, "transport", "key 'directline.transport' must be \"websocket\" or \"polling\"");
	rc = check_directline_numbers(ld, dl);
	if (rc < 0)
		return rc;
	if (cfg->log_level && strcmp(cfg->log_level, "debug") && strcmp(cfg->log_level, "info") &&
	    strcmp(cfg->log_level, "warn") && strcmp(cfg->log_level, "error"))
		return fail(ld, "log_level", "key 'log_level' must be debug, info, warn or error");
	if (cfg->shutdown_timeout < 0)
		return fail(ld, "shutdown_timeout", "key 'shutdown_timeout' must not be negative");
	if (cfg->scripts.max_instructions < 0 || cfg->scripts.max_memory_mb < 0 ||
	    cfg->scripts.retire_after < 0)
		return fail(ld, "scripts", "the numbers in 'scripts' must not be negative");
	if (cfg->limits.conversations < 1 || cfg->limits.queued < 1)
		return fail(ld, "limits", "the numbers in 'limits' must be at least 1");
	rc = check_listener_limits(ld, &cfg->limits);
	if (rc < 0)
		return rc;
	if (cfg->limits.idle_timeout < 0)
		return fail(ld, "limits", "key 'limits.idle_timeout' must not be negative");
	if (cfg->state_retention < 0)
		return fail(ld, "state_retention", "key 'state_retention' must not be negative");
	if (cfg->retry.base <= 0 || cfg->retry.max_delay < cfg->retry.base || cfg->retry.give_up_after < 0)
		return fail(ld, "retry", "'retry' needs base > 0, max_delay >= base, give_up_after >= 0");
	rc = check_cluster(ld, &cfg->cluster);
	if (rc < 0)
		return rc;
	if (cfg->hub_module && (cfg->front_module || cfg->desk_module))
		return fail(ld, "hub", "key 'hub' excludes 'front' and 'desk'");
	if (cfg->admin.token && strlen(cfg->admin.token) < CONFIG_ADMIN_TOKEN_MIN)
		return fail(ld, "admin", "key 'admin.token' must be at least %d characters",
			    CONFIG_ADMIN_TOKEN_MIN);
	return 0;
}

static int resolve_routes(struct loader *ld)
{
	char *abs;
	struct stat st;

	if (!ld->cfg->routes)
		return 0;
	abs = config_resolve_path(ld->cfg, ld->cfg->routes);
	if (!abs)
		return -ENOMEM;
	if (stat(abs, &st) < 0) {
		int rc = fail(ld, "routes", "key 'routes' names \"%s\", which cannot be read (%s)", abs,
			      strerror(errno));
		free(abs);
		return rc;
	}
	free(ld->cfg->routes);
	ld->cfg->routes = abs;
	return 0;
}

static void keep_secret(void *arg, const char *s)
{
	struct config *cfg = arg;

	for (size_t i = 0; i < cfg->nsecrets; i++)
		if (strcmp(cfg->secrets[i], s) == 0)
			return;
	if (cfg->nsecrets < CONFIG_SECRETS_MAX && (cfg->secrets[cfg->nsecrets] = strdup(s)))
		cfg->nsecrets++;
}

static void redact_error(void *arg, const char *s)
{
	struct loader *ld = arg;

	log_redact_secret(ld->err, ld->errlen, s);
}

static int evaluate(struct loader *ld, lua_State *L)
{
	int rc;

	if (luaL_loadfilex(L, ld->cfg->path, "t") != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
		/* Lua quotes the source next to a syntax error: it may be an inline secret. */
		snprintf(ld->err, ld->errlen, "%s", lua_tostring(L, -1));
		secrets_from_source(ld->text, redact_error, ld);
		return -EINVAL;
	}
	if (!lua_istable(L, -1))
		return fail(ld, NULL, "the config must return a table, not %s", luaL_typename(L, -1));
	secrets_from_config(L, -1, keep_secret, ld->cfg);
	lua_getfield(L, -1, "listen");
	rc = lua_type(L, -1) == LUA_TSTRING ? parse_listen(ld, lua_tostring(L, -1)) : 0;
	lua_pop(L, 1);
	if (rc == 0)
		rc = check_table(ld, L, top_keys, "");
	if (rc == 0)
		rc = finish(ld);
	if (rc == 0)
		rc = resolve_routes(ld);
	return rc;
}

static char *read_text(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *text;
	size_t n;

	if (!f) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return NULL;
	}
	text = malloc(CONFIG_FILE_MAX + 1);
	n = text ? fread(text, 1, CONFIG_FILE_MAX, f) : 0;
	fclose(f);
	if (!text) {
		snprintf(err, errlen, "out of memory reading %s", path);
		return NULL;
	}
	text[n] = '\0';
	return text;
}

static char *dir_of(const char *abs_path)
{
	char *abs = abs_path ? strdup(abs_path) : NULL;
	char *slash;

	if (!abs)
		return NULL;
	slash = strrchr(abs, '/');
	if (slash == abs)
		slash[1] = '\0';
	else
		*slash = '\0';
	return abs;
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	struct loader ld = { .cfg = cfg, .text = "", .err = err, .errlen = errlen };
	lua_State *L = NULL;
	char *text = NULL;
	int rc = -ENOMEM;

	if (!cfg || !(cfg->path = strdup(path)) || preset_defaults(&ld) < 0)
		goto out;
	text = read_text(path, err, errlen);
	if (!text)
		goto out;
	ld.text = text;
	cfg->file = realpath(path, NULL);
	cfg->dir = dir_of(cfg->file);
	L = luaL_newstate();
	if (!cfg->dir || !L)
		goto out;
	luaL_openlibs(L);
	rc = evaluate(&ld, L);
out:
	if (rc == -ENOMEM && text)
		snprintf(err, errlen, "out of memory loading %s", path);
	if (L)
		lua_close(L);
	free(text);
	if (rc < 0) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

struct config *config_new_defaults(void)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	char err[128];
	struct loader ld = { .cfg = cfg, .text = "", .err = err, .errlen = sizeof(err) };

	if (!cfg)
		return NULL;
	cfg->dir = getcwd(NULL, 0);
	if (!cfg->dir || preset_defaults(&ld) < 0) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	free(cfg->path);
	free(cfg->file);
	free(cfg->dir);
	free(cfg->listen_host);
	free(cfg->state);
	free(cfg->log_level);
	free(cfg->routes);
	free(cfg->script_path);
	free(cfg->hub_module);
	free(cfg->front_module);
	free(cfg->desk_module);
	free(cfg->directline.base);
	free(cfg->directline.secret);
	free(cfg->directline.token_url);
	free(cfg->directline.token);
	free(cfg->directline.transport);
	free(cfg->directline.ca_file);
	free(cfg->directline.user_id);
	free(cfg->directline.bot_name);
	free(cfg->directline.locale);
	free(cfg->admin.token);
	free(cfg->fallback.queue);
	free(cfg->fallback.skill);
	free(cfg->fallback.agent);
	free(cfg->fallback.reason);
	free(cfg->cluster.node);
	for (size_t i = 0; i < cfg->nsecrets; i++)
		free(cfg->secrets[i]);
	free(cfg);
}

char *config_resolve_path(const struct config *cfg, const char *p)
{
	size_t n;
	char *out;

	if (p[0] == '/')
		return strdup(p);
	n = strlen(cfg->dir) + strlen(p) + 2;
	out = malloc(n);
	if (out)
		snprintf(out, n, "%s/%s", cfg->dir, p);
	return out;
}

size_t config_secrets(const struct config *cfg, const char **out, size_t max)
{
	size_t n = 0;

	for (; n < cfg->nsecrets && n < max; n++)
		out[n] = cfg->secrets[n];
	return n;
}
