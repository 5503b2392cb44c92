/* hd_runtime.h - struct hd_runtime, the one mutable root of the daemon: every part reaches
 * the parts it is built with through it; there are no process globals.
 * daemon/runtime.c builds and owns it (start-up and shutdown order). It is declared here, at
 * the bottom, because the relay and the scripts hold it while the daemon includes them:
 * declared in daemon/, it made a circle between parts. The other parts are opaque pointers
 * here; to call one, a file includes that part's header, and tests/tools/check_layers.py
 * rules which it may include. */
#ifndef HANDOFFD_HD_RUNTIME_H
#define HANDOFFD_HD_RUNTIME_H

#include <stdbool.h>
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
	/* The daemon's own state below: only daemon/ reads it. */
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

#endif
