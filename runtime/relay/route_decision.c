/* route_decision.c - the value a handoff's routing comes to (relay_desk.h): its JSON
 * form (`handoffd route`, the admin API), a copy that outlives the task that decided
 * it, the configured fallback and the count of its use. Deciding is the scripting part's (script/routing.c). */
#include "relay/relay_desk.h"

#include "base/config.h"
#include "base/json_text.h"
#include "base/metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Appends ,"key":"value", or nothing for NULL. */
static size_t json_member(char *buf, size_t cap, size_t n, const char *key, const char *v)
{
	if (!v || n >= cap)
		return n;
	n += (size_t)snprintf(buf + n, cap - n, ",\"%s\":", key);
	return n < cap ? json_text_string(buf, cap, n, v) : n;
}

int route_decision_json(const struct route_decision *d, char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "{\"fallback\":%s", d->fallback ? "true" : "false");

	n = json_member(buf, cap, n, "queue", d->queue);
	n = json_member(buf, cap, n, "skill", d->skill);
	if (d->has_priority && n < cap)
		n += (size_t)snprintf(buf + n, cap - n, ",\"priority\":%.15g", d->priority);
	n = json_member(buf, cap, n, "agent", d->agent);
	n = json_member(buf, cap, n, "reason", d->reason);
	if (n < cap)
		n += (size_t)snprintf(buf + n, cap - n, ",\"rule\":%d", d->rule);
	if (d->fallback)
		n = json_member(buf, cap, n, "why", d->why);
	if (n + 2 > cap)
		return -ENOSPC;
	buf[n++] = '}';
	buf[n] = '\0';
	return (int)n;
}

static size_t size_of(const char *s)
{
	return s ? strlen(s) + 1 : 0;
}

/* Copies S to *AT and returns the copy (NULL for NULL). */
static const char *place(char **at, const char *s)
{
	size_t n = size_of(s);
	char *copy = *at;

	if (!s)
		return NULL;
	memcpy(copy, s, n);
	*at += n;
	return copy;
}

struct route_decision *route_decision_dup(const struct route_decision *d)
{
	size_t extra = size_of(d->queue) + size_of(d->skill) + size_of(d->agent) + size_of(d->reason);
	struct route_decision *copy = malloc(sizeof(*copy) + extra);
	char *at;

	if (!copy)
		return NULL;
	*copy = *d;
	at = (char *)(copy + 1);
	copy->queue = place(&at, d->queue);
	copy->skill = place(&at, d->skill);
	copy->agent = place(&at, d->agent);
	copy->reason = place(&at, d->reason);
	return copy;
}

void route_decision_fallback(struct route_decision *d, const struct config_route *fb, const char *why)
{
	*d = (struct route_decision){ .queue = fb->queue, .skill = fb->skill, .agent = fb->agent,
				      .reason = fb->reason, .priority = fb->priority,
				      .has_priority = fb->priority != 0, .fallback = true };
	snprintf(d->why, sizeof(d->why), "%s", why ? why : "?");
}

uint64_t *route_fallbacks_counter(struct metrics *m)
{
	return metrics_counter(m, "handoffd_route_fallbacks_total", NULL, "Handoffs routed to the fallback destination");
}
