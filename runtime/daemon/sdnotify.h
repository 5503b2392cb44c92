/* sdnotify.h - the systemd service notification protocol (sd_notify(3)).
 * Without NOTIFY_SOCKET in the environment nothing is created and every call is a no-op,
 * so the daemon behaves the same outside systemd. */
#ifndef HANDOFFD_SDNOTIFY_H
#define HANDOFFD_SDNOTIFY_H

struct hd_runtime;
struct sdnotify;

/* NULL when not run by systemd (no NOTIFY_SOCKET) or out of memory. Starts the watchdog
 * pings from RT's loop when systemd asked for them (WatchdogSec=, sd_watchdog_enabled). */
struct sdnotify *sdnotify_new(struct hd_runtime *rt);
void sdnotify_free(struct sdnotify *n);

/* READY=1 with a STATUS= line: the listener is bound and the scripts are loaded. */
void sdnotify_ready(struct sdnotify *n);
/* RELOADING=1: a reload begins; sdnotify_ready() ends it. */
void sdnotify_reloading(struct sdnotify *n);
/* STOPPING=1: a graceful stop began. */
void sdnotify_stopping(struct sdnotify *n);

#endif
