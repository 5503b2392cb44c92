/* sdnotify.c - tells systemd (Type=notify) where the daemon stands, through libsystemd's
 * sd_notify. The watchdog pings come from a timer on the event loop, not from a thread:
 * a loop stuck in a callback (a script spinning with max_instructions = 0, a blocking
 * call) stops them, and systemd restarts the service after WatchdogSec. The same timer
 * refreshes STATUS= with the open conversations. */
#include "daemon/sdnotify.h"

#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"
#include "daemon/runtime.h"
#include "script/script_host.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#define STATUS_PERIOD_MS 5000
#define STATUS_MAX 256

struct sdnotify {
	struct hd_runtime *rt;		/* borrowed */
	struct loop_timer *tick;	/* owned: watchdog pings and STATUS= refresh */
	bool watchdog;			/* systemd set WATCHDOG_USEC for us */
	char status[STATUS_MAX];	/* the last STATUS= sent */
};

static void send_state(struct sdnotify *n, const char *state)
{
	int rc = sd_notify(0, state);

	if (rc < 0)
		log_warn(n->rt->log, "sdnotify.failed", "error=%d", rc);
}

static void format_status(const struct sdnotify *n, char *out, size_t outlen)
{
	struct hd_runtime *rt = n->rt;

	snprintf(out, outlen, "%s: %lu open conversations, scripts generation %lu%s",
		 rt->stopping ? "stopping" : "serving", runtime_conversations(rt),
		 script_host_generation(rt->scripts), rt->last_reload_ok ? "" : ", last reload failed");
}

/* Sends PREFIX (may be "") followed by STATUS=; STATUS= alone only when it changed. */
static void send_with_status(struct sdnotify *n, const char *prefix)
{
	char status[STATUS_MAX], msg[STATUS_MAX + 64];

	format_status(n, status, sizeof(status));
	if (!prefix[0] && strcmp(status, n->status) == 0)
		return;
	snprintf(n->status, sizeof(n->status), "%s", status);
	snprintf(msg, sizeof(msg), "%sSTATUS=%s", prefix, status);
	send_state(n, msg);
}

static void on_tick(void *arg)
{
	struct sdnotify *n = arg;

	send_with_status(n, n->watchdog ? "WATCHDOG=1\n" : "");
}

struct sdnotify *sdnotify_new(struct hd_runtime *rt)
{
	const char *sock = getenv("NOTIFY_SOCKET");
	struct sdnotify *n;
	uint64_t usec = 0, period_ms = STATUS_PERIOD_MS;

	if (!sock || !sock[0])
		return NULL;
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->rt = rt;
	n->watchdog = sd_watchdog_enabled(0, &usec) > 0 && usec > 0;
	/* Half the watchdog interval, as sd_watchdog_enabled(3) recommends. */
	if (n->watchdog && usec / 2000 < period_ms)
		period_ms = usec / 2000 > 0 ? usec / 2000 : 1;
	n->tick = loop_timer_new(rt->loop, on_tick, n);
	if (!n->tick || loop_timer_start(n->tick, period_ms, 1) < 0) {
		sdnotify_free(n);
		return NULL;
	}
	log_info(rt->log, "sdnotify.on", "watchdog_ms=%llu", n->watchdog ? (unsigned long long)usec / 1000 : 0ULL);
	return n;
}

void sdnotify_free(struct sdnotify *n)
{
	if (!n)
		return;
	loop_timer_free(n->tick);
	free(n);
}

void sdnotify_ready(struct sdnotify *n)
{
	if (n)
		send_with_status(n, n->watchdog ? "READY=1\nWATCHDOG=1\n" : "READY=1\n");
}

void sdnotify_reloading(struct sdnotify *n)
{
	char msg[96];

	if (!n)
		return;
	/* MONOTONIC_USEC lets systemd >= 253 match this reload to its own request. */
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)clock_mono_us());
	send_state(n, msg);
}

void sdnotify_stopping(struct sdnotify *n)
{
	if (n)
		send_with_status(n, "STOPPING=1\n");
}
