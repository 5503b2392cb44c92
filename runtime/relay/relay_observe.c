/* relay_observe.c - what the relay records for operators: the latency histograms
 * (each way, the handoff's answer and acceptance, hub calls) and each conversation's
 * recent events for the inspection API (conv_events.h). relay.c and relay_hub.c call in
 * with one line where they already log a transition. */
#include "relay/relay_internal.h"

#include "base/clock.h"
#include "base/config.h"
#include "relay/conv_events.h"
#include "base/metrics.h"
#include "base/hd_runtime.h"

#include <stdio.h>
#include <string.h>

void relay_observe_init(struct relay *r)
{
	struct metrics *m = r->rt->metrics;
	const double *b = metrics_chat_buckets;
	size_t nb = metrics_chat_nbuckets;
	const char *lat = "handoffd_relay_latency_seconds";
	const char *lat_help = "From a message's arrival at handoffd to its delivery";
	const char *ho = "handoffd_handoff_seconds";
	const char *ho_help = "From handoff.initiate to the desk's answer and to an agent's acceptance";

	r->h_to_bot = metrics_histogram(m, lat, "to=\"bot\"", lat_help, b, nb);
	r->h_to_hub = metrics_histogram(m, lat, "to=\"hub\"", lat_help, b, nb);
	r->h_handoff_answer = metrics_histogram(m, ho, "until=\"answer\"", ho_help, b, nb);
	r->h_handoff_accepted = metrics_histogram(m, ho, "until=\"accepted\"", ho_help, b, nb);
	/* Every series a dashboard queries exists from the start, at zero. */
	relay_observe_hub_call(r, false, "to_user", 0);
	relay_observe_hub_call(r, true, "to_agent", 0);
	relay_observe_hub_call(r, true, "escalate", 0);
	route_fallbacks_counter(m);
}

static double seconds_since(uint64_t wall_ms_then)
{
	uint64_t now = clock_wall_ms();

	return now > wall_ms_then ? (double)(now - wall_ms_then) / 1000.0 : 0.0;
}

void relay_observe_delivered(struct relay *r, struct conversation *c, enum conv_queue q, int64_t created_ms)
{
	bool to_bot = q == QUEUE_TO_BOT;

	if (created_ms > 0)
		metrics_observe(to_bot ? r->h_to_bot : r->h_to_hub, seconds_since((uint64_t)created_ms));
	if (!c->events)
		conv_events_add(&c->events, CONV_EV_OPENED, "first seen by this process");
	if (c->events)
		*(to_bot ? &c->events->last_to_bot_ms : &c->events->last_to_hub_ms) = clock_wall_ms();
}

void relay_observe_handoff(struct relay *r, struct conversation *c)
{
	(void)r;
	conv_events_add(&c->events, CONV_EV_HANDOFF, "handoff %s", c->handoff_id ? c->handoff_id : "-");
	if (c->events)
		c->events->handoff_ms = clock_wall_ms();
}

void relay_observe_answer(struct relay *r, struct conversation *c, const char *answer)
{
	conv_events_add(&c->events, CONV_EV_ESCALATED, "the desk answered: %s", answer);
	if (c->events && c->events->handoff_ms)
		metrics_observe(r->h_handoff_answer, seconds_since(c->events->handoff_ms));
}

void relay_observe_accepted(struct relay *r, struct conversation *c, const char *why)
{
	conv_events_add(&c->events, CONV_EV_ACCEPTED, "%s", why);
	if (c->events && c->events->handoff_ms)
		metrics_observe(r->h_handoff_accepted, seconds_since(c->events->handoff_ms));
}

static const char *short_name(const char *module)
{
	const char *dot = module ? strrchr(module, '.') : NULL;

	return dot ? dot + 1 : module ? module : "hub";
}

void relay_observe_hub_call(struct relay *r, bool desk, const char *fn, uint64_t started_ms)
{
	const struct config *cfg = r->rt->config;
	const char *module = desk ? (cfg->desk_module ? cfg->desk_module : cfg->hub_module)
				  : (cfg->front_module ? cfg->front_module : cfg->hub_module);
	char labels[160];
	struct metrics_histogram *h;

	snprintf(labels, sizeof(labels), "hub=\"%s\",call=\"%s\"", short_name(module), fn);
	h = metrics_histogram(r->rt->metrics, "handoffd_hub_call_seconds", labels, "Duration of hub script calls",
			      metrics_chat_buckets, metrics_chat_nbuckets);
	if (started_ms)
		metrics_observe(h, seconds_since(started_ms));
}
