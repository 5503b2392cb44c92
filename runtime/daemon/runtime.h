/* runtime.h - the daemon's life: start-up and shutdown order of struct hd_runtime
 * (base/hd_runtime.h): config, loop, listener, scripts, signals, and the graceful stop
 * (stop accepting, drain, exit). */
#ifndef HANDOFFD_RUNTIME_H
#define HANDOFFD_RUNTIME_H

#include "base/hd_runtime.h"

#include <stddef.h>

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
