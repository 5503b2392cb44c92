/* event_log.c - libevent's internal log, rate limited, as `libevent` events in ours. */
#include "net/event_log.h"

#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"

#include <event2/event.h>
#include <stdint.h>

#define EVENT_LOG_WINDOW_MS 10000
#define EVENT_LOG_PER_WINDOW 5

/* libevent's callback has no argument: the target and the rate window live here. */
static struct {
	struct log *log;
	uint64_t window_start_ms;
	unsigned in_window;
	unsigned long suppressed;
} route;

static void on_event_log(int severity, const char *msg)
{
	uint64_t now = clock_mono_ms();
	enum log_level level = severity >= EVENT_LOG_ERR ? LEVEL_ERROR :
			       severity == EVENT_LOG_WARN ? LEVEL_WARN :
			       severity == EVENT_LOG_MSG ? LEVEL_INFO : LEVEL_DEBUG;

	if (!route.log)
		return;
	if (now - route.window_start_ms >= EVENT_LOG_WINDOW_MS) {
		route.window_start_ms = now;
		route.in_window = 0;
	}
	if (route.in_window >= EVENT_LOG_PER_WINDOW) {
		route.suppressed++;
		return;
	}
	route.in_window++;
	log_write(route.log, level, "libevent", "message=\"%s\" suppressed=%lu", msg, route.suppressed);
	route.suppressed = 0;
}

void event_log_route(struct log *lg)
{
	route.log = lg;
	route.window_start_ms = clock_mono_ms();
	route.in_window = 0;
	event_set_log_callback(on_event_log);
}

void event_log_unroute(struct log *lg)
{
	if (route.log != lg)
		return;
	route.log = NULL;
	event_set_log_callback(NULL);
}
