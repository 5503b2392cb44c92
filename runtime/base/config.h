/* config.h - the daemon's settings, read from a Lua file that returns a table.
 * config.c owns loading, defaults and validation: an unknown or mistyped key is an
 * error that names the key, the file and the line. The free-form parts that belong to
 * scripts (hub settings) stay in Lua and are read again by script_host. */
#ifndef HANDOFFD_CONFIG_H
#define HANDOFFD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#define CONFIG_SECRETS_MAX 32	/* secrets one config may hold, all sections together */
#define CONFIG_ADMIN_TOKEN_MIN 16	/* bytes: a shorter bearer token is guessable */
#define CONFIG_CLUSTER_NODE_MAX 128	/* bytes of cluster.node with its NUL (CLUSTER_NODE_MAX) */

struct config_directline {
	char *base;		/* REST base URL, ends in /v3/directline */
	char *secret;		/* exchanged for per-conversation tokens; never logged */
	char *token_url;	/* Copilot Studio / PVA token endpoint */
	char *token;		/* a fixed token */
	char *transport;	/* "websocket" or "polling" */
	char *ca_file;		/* extra trust anchor (tests, private CAs) */
	char *user_id;		/* prefix of our user ids (Direct Line wants "dl_") */
	char *bot_name;		/* the bot's label in logs */
	char *locale;		/* sent with the greeting event; NULL: none */
	double poll_interval;	/* seconds between polls when idle */
	double liveness;	/* seconds of silence that declare a stream dead */
	double idle_sync;	/* seconds without activities before a catch-up GET; 0: never */
	double park_after;	/* seconds without activity before the stream is parked; 0: never */
	double parked_sync;	/* seconds between GETs of a parked conversation; 0: never */
	double reconnect_max_concurrent;	/* opens + reconnects in flight, all conversations */
	double reconnect_base;	/* seconds: first backoff window, doubled per failure */
	double reconnect_cap;	/* seconds: largest backoff window */
	double token_refresh;	/* fraction of a token's lifetime after which it is refreshed */
	double post_timeout;	/* seconds a POST may take (the bot has 15) */
	double echo_grace;	/* seconds to wait for the echo of an unconfirmed POST */
	double max_message;	/* bytes of one stream message or GET body */
	bool regional_discovery;	/* token_url: ask regionalchannelsettings for the base */
	bool greeting;		/* post the startConversation event on new conversations */
	bool status_events;	/* report handoff.status events to the bot */
};

struct config_admin {
	char *token;		/* bearer token for /admin/ routes; NULL disables them */
	bool allow_remote;	/* admin routes answer only loopback peers unless set */
	bool show_content;	/* inspection shows the customer and the hub data's values */
};

struct config_scripts {
	double max_instructions;	/* per callback, VM instructions; 0: unlimited */
	double max_memory_mb;		/* per Lua state; 0: unlimited */
	double retire_after;		/* seconds an old generation may finish its work */
	bool watch;			/* reload when a script file changes */
};

struct config_limits {
	double conversations;		/* open conversations; more answer 503 */
	double queued;			/* undelivered messages per conversation */
	double connections;		/* inbound HTTP connections; 0: sized from the fd limit */
	double connections_per_ip;	/* inbound connections per peer address; 0: no limit */
	double request_timeout;		/* seconds for a whole request to arrive */
	double keepalive_timeout;	/* seconds a keep-alive connection may idle */
	double buffered_mb;		/* request bytes held by all connections together */
	double idle_timeout;		/* seconds without activity that end a conversation; 0: never */
};

/* Delivery to hubs (and the bot, across restarts): exponential backoff, full jitter. */
struct config_retry {
	double base;			/* seconds before the first retry */
	double max_delay;		/* cap of one wait */
	double give_up_after;		/* seconds since the first attempt */
};

/* Several instances on one PostgreSQL (relay/cluster.h). */
struct config_cluster {
	char *node;			/* this instance's name; NULL: hostname:pid */
	double heartbeat;		/* seconds between heartbeats */
	double lease;			/* seconds without heartbeat after which a node is dead */
};

/* A routing destination (the fallback when rules fail or match nothing). */
struct config_route {
	char *queue, *skill, *agent, *reason;
	double priority;
};

struct config {
	char *path;		/* the file as named on the command line (NULL: defaults only) */
	char *file;		/* the same, absolute, so a daemon that left its cwd re-reads it */
	char *dir;		/* absolute directory of the file: relative paths start here */
	char *listen_host;
	int listen_port;
	char *state;		/* "sqlite:PATH" or "postgresql://..." */
	char *log_level;	/* debug, info, warn or error; --log-level wins */
	double shutdown_timeout;	/* seconds to finish in-flight work on SIGTERM */
	double state_retention;	/* seconds ended conversations (and hub event ids) stay on disk */
	char *routes;		/* absolute path of the routing rules, or NULL */
	char *script_path;	/* extra Lua search path, prepended */
	char *hub_module;	/* module name of hub = { module = ... } */
	char *front_module;	/* front = { module = ... } (desk-only hubs) */
	char *desk_module;	/* desk = { module = ... } */
	struct config_directline directline;
	struct config_admin admin;
	struct config_scripts scripts;
	struct config_route fallback;
	struct config_limits limits;
	struct config_retry retry;
	struct config_cluster cluster;
	char *secrets[CONFIG_SECRETS_MAX];	/* values of secret-named keys (secrets.h), owned */
	size_t nsecrets;
};

/* Loads and validates PATH. On success returns the config (caller frees with
 * config_free); on failure returns NULL and writes "file:line: reason" to ERR. */
struct config *config_load(const char *path, char *err, size_t errlen);
void config_free(struct config *cfg);
/* The embedded defaults alone, with no Direct Line credentials (for `handoffd test`). */
struct config *config_new_defaults(void);

/* Resolves P against the config's directory; returns a malloc'd absolute path or NULL. */
char *config_resolve_path(const struct config *cfg, const char *p);

/* The secrets the config holds (for log redaction): every string under a secret-named
 * key of hub, front, desk, directline and admin, and the password of `state`. Writes at
 * most MAX borrowed pointers to OUT and returns how many. */
size_t config_secrets(const struct config *cfg, const char **out, size_t max);

#endif
