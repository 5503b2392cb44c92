/* runtime.h - struct hd_runtime, the one mutable root of the daemon.
 * runtime.c owns start-up and shutdown order: config, loop, listener, scripts, signals,
 * and the graceful stop (stop accepting, drain, exit). Every part reaches shared state
 * through this struct; there are no process globals. */
#ifndef HANDOFFD_RUNTIME_H
#define HANDOFFD_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct config;
struct http_client;
struct http_server;
struct log;
struct loop;
struct loop_signal;
struct loop_timer;
struct metrics;
struct relay;
struct script_host;
struct sdnotify;
struct watch;

struct hd_runtime {
	struct config *config;		/* owned */
	struct log *log;		/* borrowed from main */
	struct loop *loop;		/* owned */
	struct http_server *http;	/* owned; NULL until runtime_start */
	struct http_client *http_client;	/* owned: scripts' and Direct Line's requests */
	struct script_host *scripts;	/* owned */
	struct metrics *metrics;	/* owned */
	struct relay *relay;		/* owned; NULL without a hub or outside the daemon */
	struct loop_signal *signals[3];	/* SIGTERM, SIGINT, SIGHUP */
	struct loop_timer *drain;	/* polls in-flight work during a graceful stop */
	struct watch *watch;		/* owned; NULL unless scripts.watch */
	struct sdnotify *notify;	/* owned; NULL unless run by systemd (NOTIFY_SOCKET) */
	uint64_t started_ms;		/* monotonic */
	uint64_t stop_deadline_ms;	/* set when a stop began */
	bool stopping;
	bool curl_ready;		/* http_client_global_init succeeded */
	/* The last reload, for /healthz: its category only ("syntax", "init", ...), since the
	 * message can quote the source next to a secret. The log has the message. */
	bool last_reload_ok;
	time_t last_reload_time;
	const char *last_reload_failure;	/* static string, NULL after a success */
	uint64_t *reloads_ok, *reloads_failed;	/* counters in metrics */
};

/* Builds the runtime around CFG (ownership taken, also on failure) and LG (borrowed).
 * Nothing is bound or loaded yet. NULL on failure. */
struct hd_runtime *runtime_new(struct config *cfg, struct log *lg);
void runtime_free(struct hd_runtime *rt);

/* Loads the scripts (hub, routes) without binding anything: the `-t` check. */
int runtime_check(struct hd_runtime *rt, char *err, size_t errlen);
/* Loads the scripts, binds the listener and installs the signal handlers. */
int runtime_start(struct hd_runtime *rt, char *err, size_t errlen);
/* Runs the loop until a graceful stop finishes. Returns the process exit code. */
int runtime_run(struct hd_runtime *rt);
/* Begins a graceful stop: no new connections, in-flight work gets shutdown_timeout. */
void runtime_stop(struct hd_runtime *rt);
/* Reloads the scripts; on failure the old ones keep serving and ERR says why. */
int runtime_reload(struct hd_runtime *rt, char *err, size_t errlen);

/* Seconds since start. */
double runtime_uptime(const struct hd_runtime *rt);
/* Open conversations (0 until the conversation store exists). */
unsigned long runtime_conversations(const struct hd_runtime *rt);

#endif
