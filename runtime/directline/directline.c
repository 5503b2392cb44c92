/* directline.c - Direct Line 3.0 client: one bot conversation per relay conversation.
 * Owns the public API (directline.h): the client and its settings, each conversation's
 * lifetime (open, close, deferred free), its state changes and endings, what is handed to
 * the store (on_persist), and the global cap on concurrent opens and reconnects. The
 * protocol work is split by job (dl_internal.h lists the files); parsing activities is
 * activity.c's, hubs and routing are the relay's. */
#include "directline/dl_internal.h"

#include "base/clock.h"
#include "base/config.h"
#include "net/http_client.h"
#include "parse/json_simd.h"
#include "base/log.h"
#include "net/loop.h"
#include "base/metrics.h"
#include "directline/websocket.h"

#include <handoffd/activity.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const state_names[] = {
	[DL_STATE_CONNECTING] = "connecting", [DL_STATE_ONLINE] = "online",
	[DL_STATE_RECONNECTING] = "reconnecting", [DL_STATE_ENDED] = "ended",
	[DL_STATE_FAILED] = "failed",
};

const char *directline_state_name(enum dl_state s)
{
	return (size_t)s < sizeof(state_names) / sizeof(state_names[0]) ? state_names[s] : "unknown";
}

/* {===== Settings */

static int copy_str(char **dst, const char *src)
{
	if (!src)
		return 0;
	*dst = strdup(src);
	return *dst ? 0 : -ENOMEM;
}

static uint32_t ms(double seconds)
{
	return (uint32_t)(seconds * 1000.0 + 0.5);
}

/* The base without trailing slashes, so paths join with one. */
static int copy_base(char **dst, const char *base)
{
	size_t n;

	if (!base)
		return 0;	/* settings_ok() refuses it */
	n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		n--;
	*dst = strndup(base, n);
	return *dst ? 0 : -ENOMEM;
}

static int copy_settings(struct dl_settings *s, const struct config_directline *cfg)
{
	int rc = copy_base(&s->base, cfg->base);

	if (rc == 0)
		rc = copy_str(&s->secret, cfg->secret);
	if (rc == 0)
		rc = copy_str(&s->token_url, cfg->token_url);
	if (rc == 0)
		rc = copy_str(&s->token, cfg->token);
	if (rc == 0)
		rc = copy_str(&s->ca_file, cfg->ca_file);
	if (rc == 0)
		rc = copy_str(&s->user_id, cfg->user_id);
	if (rc == 0)
		rc = copy_str(&s->bot_name, cfg->bot_name);
	if (rc == 0)
		rc = copy_str(&s->locale, cfg->locale);
	s->polling = cfg->transport && strcmp(cfg->transport, "polling") == 0;
	s->regional_discovery = cfg->regional_discovery;
	s->greeting = cfg->greeting;
	s->status_events = cfg->status_events;
	s->poll_ms = ms(cfg->poll_interval);
	s->liveness_ms = ms(cfg->liveness);
	s->idle_sync_ms = ms(cfg->idle_sync);
	s->park_after_ms = ms(cfg->park_after);
	s->parked_sync_ms = ms(cfg->parked_sync);
	s->reconnect_base_ms = ms(cfg->reconnect_base);
	s->reconnect_cap_ms = ms(cfg->reconnect_cap);
	s->post_timeout_ms = ms(cfg->post_timeout);
	s->echo_grace_ms = ms(cfg->echo_grace);
	s->max_concurrent = (unsigned)cfg->reconnect_max_concurrent;
	s->token_refresh = cfg->token_refresh;
	s->max_message = (size_t)cfg->max_message;
	return rc;
}

/* A config built by hand (tests) may leave keys unset: nothing may be zero or NULL below
 * (config.c gives every one of them a default). */
static bool settings_ok(const struct dl_settings *s)
{
	return (s->secret || s->token_url || s->token) && s->base && s->user_id && s->bot_name &&
	       s->poll_ms && s->liveness_ms &&
	       s->reconnect_base_ms && s->reconnect_cap_ms >= s->reconnect_base_ms &&
	       s->post_timeout_ms && s->max_concurrent && s->token_refresh > 0 &&
	       s->token_refresh < 1 && s->max_message >= 65536;
}

static void free_settings(struct dl_settings *s)
{
	free(s->base);
	free(s->secret);
	free(s->token_url);
	free(s->token);
	free(s->ca_file);
	free(s->user_id);
	free(s->bot_name);
	free(s->locale);
}

/* }===== */

/* {===== The client */

static void add_counters(struct directline *dl)
{
	struct metrics *m = dl->m;
	struct dl_counters *c = &dl->c;
	const char *p = "handoffd_directline_";
	char name[96], label[48];

#define COUNTER(field, suffix, labels, help) \
	(snprintf(name, sizeof(name), "%s%s", p, suffix), c->field = metrics_counter(m, name, labels, help))
	COUNTER(dispatched, "activities_total", NULL, "Activities dispatched");
	COUNTER(duplicates, "duplicates_total", NULL, "Activities dropped as already seen");
	COUNTER(echoes, "echoes_total", NULL, "Echoes of our own activities dropped");
	COUNTER(reconnects, "reconnects_total", NULL, "Receive paths re-established");
	COUNTER(collisions, "collisions_total", NULL, "Streams closed with reason collision");
	COUNTER(throttled, "throttled_total", NULL, "Answers 429");
	COUNTER(refresh_ok, "token_refreshes_total", "result=\"ok\"", "Token refreshes");
	COUNTER(refresh_failed, "token_refreshes_total", "result=\"failed\"", "Token refreshes");
	COUNTER(reacquired, "token_reacquired_total", NULL, "Tokens re-acquired after expiry");
	COUNTER(echo_timeouts, "echo_timeouts_total", NULL, "Unconfirmed POSTs whose echo did not come");
	COUNTER(resends, "resends_total", NULL, "Activities posted again after reconciliation");
	COUNTER(sends_ok, "sends_total", "result=\"ok\"", "Activities sent");
	COUNTER(sends_failed, "sends_total", "result=\"failed\"", "Activities sent");
	COUNTER(bad_payloads, "bad_payloads_total", NULL, "Malformed stream or GET payloads");
	COUNTER(polling_fallbacks, "polling_fallbacks_total", NULL, "Streams replaced by polling");
	COUNTER(parks, "parks_total", NULL, "Streams parked (closed while the conversation stays open)");
	COUNTER(wakes, "wakes_total", NULL, "Parked conversations woken (stream reopened)");
	c->send_seconds = metrics_histogram(m, "handoffd_directline_send_seconds", NULL,
					    "From an activity's queueing to Direct Line's acceptance of its POST",
					    metrics_chat_buckets, metrics_chat_nbuckets);
	for (int s = 0; s <= DL_STATE_FAILED; s++) {
		snprintf(label, sizeof(label), "state=\"%s\"", state_names[s]);
		COUNTER(state[s], "state_changes_total", label, "Conversation state changes");
	}
#undef COUNTER
}

static void seed(struct directline *dl)
{
	rng_seed(&dl->rng);
	snprintf(dl->instance, sizeof(dl->instance), "%016llx", (unsigned long long)rng_next(&dl->rng));
}

static struct websocket_client *new_ws_client(struct directline *dl)
{
	struct websocket_opts o = WEBSOCKET_OPTS_DEFAULT;

	o.ca_file = dl->s.ca_file;
	o.max_message = dl->s.max_message;
	o.dead_after_ms = dl->s.liveness_ms;
	o.ping_interval_ms = dl->s.liveness_ms / 3 ? dl->s.liveness_ms / 3 : 1;
	return websocket_client_new(dl->lp, dl->lg, &o);
}

struct directline *directline_new(struct loop *lp, struct log *lg, struct http_client *hc,
				  struct metrics *m, const struct config_directline *cfg,
				  const struct directline_callbacks *cb, void *arg)
{
	struct directline *dl = calloc(1, sizeof(*dl));
	struct hd_parse_opts po = HD_PARSE_OPTS_DEFAULT;

	if (!dl)
		return NULL;
	*dl = (struct directline){ .lp = lp, .lg = lg, .hc = hc, .m = m, .cb = *cb, .arg = arg };
	if (copy_settings(&dl->s, cfg) < 0 || !settings_ok(&dl->s) || copy_str(&dl->base, dl->s.base) < 0) {
		log_error(lg, "directline.config", "reason=\"bad or missing settings\"");
		goto fail;
	}
	if (dl->s.secret)
		log_add_secret(lg, dl->s.secret);
	if (dl->s.token)
		log_add_secret(lg, dl->s.token);
	po.max_bytes = dl->s.max_message;
	dl->connect_limit = dl->s.max_concurrent;
	seed(dl);
	dl->wc = new_ws_client(dl);
	dl->parser = hd_activity_parser_new(&po);
	dl->js = json_simd_new();
	if (!dl->wc || !dl->parser || !dl->js)
		goto fail;
	add_counters(dl);
	if (dl->s.regional_discovery)
		dl_token_discover(dl);
	return dl;
fail:
	directline_free(dl);
	return NULL;
}

static void free_conv(struct dl_conv *c);
static void unqueue(struct dl_conv *c);

void directline_free(struct directline *dl)
{
	if (!dl)
		return;
	while (dl->all) {
		struct dl_conv *c = dl->all;

		c->closed = true;
		c->busy = 0;
		dl_send_fail_all(c, -ECANCELED, "closed");
		free_conv(c);
	}
	http_client_cancel(dl->discover_req);
	loop_timer_free(dl->discover_timer);
	loop_timer_free(dl->pause_timer);
	websocket_client_free(dl->wc);
	hd_activity_parser_free(dl->parser);
	json_simd_free(dl->js);
	free(dl->scratch);
	free(dl->base);
	free_settings(&dl->s);
	free(dl);
}

void directline_get_stats(const struct directline *dl, struct directline_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (const struct dl_conv *c = dl->all; c; c = c->next) {
		if (c->detached)
			continue;
		out->conversations++;
		out->online += c->state == DL_STATE_ONLINE;
		out->reconnecting += c->state == DL_STATE_RECONNECTING;
		out->parked += c->parked && !dl_done(c);
	}
	out->connects_in_flight = dl->connecting;
	out->connects_peak = dl->connects_peak;
	out->connects_queued = dl->nqueued;
	out->dispatched = dl->n_dispatched;
	out->duplicates = dl->n_duplicates;
	out->echoes = dl->n_echoes;
	out->reconnects = dl->n_reconnects;
	out->refreshes = dl->n_refreshes;
	memcpy(out->dispatch_us_hist, dl->dispatch_us_hist, sizeof(out->dispatch_us_hist));
}

/* }===== */

/* {===== Conversations: open, close, free */

int dl_strset(char **slot, const char *s, size_t len)
{
	char *copy = strndup(s, len);

	if (!copy)
		return -ENOMEM;
	free(*slot);
	*slot = copy;
	return 0;
}

struct loop_timer *dl_timer(struct dl_conv *c, struct loop_timer **slot, void (*fn)(void *))
{
	if (!*slot)
		*slot = loop_timer_new(c->dl->lp, fn, c);
	return *slot;
}

void dl_user_id(const struct dl_conv *c, char *out, size_t cap)
{
	snprintf(out, cap, "%s%016llx", c->dl->s.user_id,
		 (unsigned long long)dedupe_hash(c->key, strlen(c->key)));
}

static int64_t wall_now(void)
{
	return (int64_t)time(NULL);
}

static int apply_resume(struct dl_conv *c, const struct dl_persist *r)
{
	int64_t left = r->token_expires - wall_now();

	if (dl_strset(&c->id, r->conversation_id, strlen(r->conversation_id)) < 0 ||
	    (r->watermark && dl_strset(&c->watermark, r->watermark, strlen(r->watermark)) < 0))
		return -ENOMEM;
	if (r->token && left > 0 && dl_token_resume(c, r->token, (uint64_t)left * 1000u) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < r->nseen; i++)
		if (!dedupe_contains(&c->seen, r->seen[i]) && dedupe_add(&c->seen, r->seen[i]) < 0)
			return -ENOMEM;
	/* A send that may have left before stays findable: the stored position is kept. */
	c->resumed = true;
	c->remembering = true;
	c->resume_unsettled = r->unsettled;
	c->holding = r->unsettled;
	if (r->unsettled && r->watermark && !(c->held_wm = strdup(r->watermark)))
		return -ENOMEM;
	c->started = true;
	c->ever_online = true;	/* coming back is a reconnect */
	return 0;
}

struct dl_conv *directline_open(struct directline *dl, const char *key, const struct dl_persist *resume)
{
	struct dl_conv *c;

	if (resume && !resume->conversation_id)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->dl = dl;
	c->state = DL_STATE_CONNECTING;
	c->active_ms = clock_mono_ms();
	c->opened_ms = c->active_ms;
	c->next = dl->all;
	if (dl->all)
		dl->all->prev = c;
	dl->all = c;
	dl->nconvs++;
	c->key = strdup(key);
	/* The first step runs from the loop (dl_stream_timer in DL_PH_IDLE), so open never
	 * calls back into its caller. */
	if (!c->key || (resume && apply_resume(c, resume) < 0) ||
	    !dl_timer(c, &c->rx_timer, dl_stream_timer) || loop_timer_start(c->rx_timer, 0, 0) < 0) {
		free_conv(c);
		return NULL;
	}
	log_info(dl->lg, "directline.open", "key=\"%s\" conv=%s resume=%s bot=\"%s\"", c->key,
		 c->id ? c->id : "-", resume ? "yes" : "no", dl->s.bot_name);
	return c;
}

static void free_conv(struct dl_conv *c)
{
	struct directline *dl = c->dl;

	unqueue(c);
	dl_slot_release(c);
	dl_stream_stop(c);
	dl_token_stop(c);
	dl_http_cancel(&c->tx);
	loop_timer_free(c->rx_timer);
	loop_timer_free(c->tok_timer);
	loop_timer_free(c->tx_timer);
	if (c->prev)
		c->prev->next = c->next;
	else
		dl->all = c->next;
	if (c->next)
		c->next->prev = c->prev;
	dl->nconvs--;
	dedupe_clear(&c->seen);
	free(c->key);
	free(c->id);
	free(c->token);
	free(c->watermark);
	free(c->stream_url);
	free(c->wake_boundary);
	dl_send_forget(c);
	free(c);
}

void dl_hold(struct dl_conv *c)
{
	c->busy++;
}

void dl_release(struct dl_conv *c)
{
	if (--c->busy == 0 && c->closed && !c->detached)
		free_conv(c);
}

bool dl_done(const struct dl_conv *c)
{
	return c->closed || c->state == DL_STATE_ENDED || c->state == DL_STATE_FAILED;
}

void directline_close(struct dl_conv *c, bool end_conversation)
{
	bool goodbye;

	if (!c || c->closed)
		return;
	goodbye = end_conversation && c->id && !dl_done(c) && dl_token_valid(c);
	c->closed = true;
	dl_send_fail_all(c, -ECANCELED, "closed");
	unqueue(c);
	dl_slot_release(c);
	dl_stream_stop(c);
	dl_token_stop(c);
	log_info(c->dl->lg, "directline.close", "key=\"%s\" conv=%s end=%s", c->key,
		 c->id ? c->id : "-", goodbye ? "yes" : "no");
	if (goodbye) {
		c->detached = true;
		dl_send_goodbye(c);
	}
	if (c->busy == 0 && !c->detached)
		free_conv(c);
}

const char *directline_key(const struct dl_conv *c)
{
	return c->key;
}

const char *directline_conversation_id(const struct dl_conv *c)
{
	return c->id;
}

enum dl_state directline_state(const struct dl_conv *c)
{
	return (enum dl_state)c->state;
}

void directline_park(struct dl_conv *c)
{
	if (c && !dl_done(c))
		dl_stream_park(c, true, "held");
}

void directline_wake(struct dl_conv *c)
{
	if (!c || dl_done(c))
		return;
	c->active_ms = clock_mono_ms();
	if (!c->parked)
		c->held = false;	/* not parked yet: it will not be */
	else
		dl_stream_wake(c, "woken");
}

bool directline_held(const struct dl_conv *c)
{
	return c->held;
}

bool directline_parked(const struct dl_conv *c)
{
	return c && c->parked;
}

/* }===== */

/* {===== States, endings, persistence */

void dl_set_state(struct dl_conv *c, enum dl_state state, const char *reason)
{
	struct directline *dl = c->dl;
	bool terminal = state == DL_STATE_ENDED || state == DL_STATE_FAILED;

	if (c->closed || (c->state == state && !terminal))
		return;
	c->state = (uint8_t)state;
	metrics_inc(dl->c.state[state]);
	if (state == DL_STATE_FAILED)
		log_warn(dl->lg, "directline.state", "key=\"%s\" conv=%s state=%s reason=\"%s\"", c->key,
			 c->id ? c->id : "-", directline_state_name(state), reason);
	else
		log_info(dl->lg, "directline.state", "key=\"%s\" conv=%s state=%s reason=\"%s\"", c->key,
			 c->id ? c->id : "-", directline_state_name(state), reason);
	if (dl->cb.on_state)
		dl->cb.on_state(c, c->key, state, reason, dl->arg);
}

void dl_terminate(struct dl_conv *c, enum dl_state state, const char *reason)
{
	if (c->closed || c->state == DL_STATE_ENDED || c->state == DL_STATE_FAILED)
		return;
	unqueue(c);
	dl_slot_release(c);
	dl_stream_stop(c);
	dl_token_stop(c);
	dl_send_fail_all(c, -ESHUTDOWN, "ended");
	if (!c->closed)
		dl_set_state(c, state, reason);
}

void dl_persist(struct dl_conv *c)
{
	struct directline *dl = c->dl;
	struct dl_persist p = {
		.conversation_id = c->id, .token = c->token, .token_expires = c->token_expires_wall,
		.watermark = dl_send_watermark(c), .unsettled = c->holding,
	};

	if (c->closed || !dl->cb.on_persist || !c->id)
		return;
	p.nseen = dedupe_items(&c->seen, &p.seen);
	dl->cb.on_persist(c, c->key, &p, dl->arg);
}

/* }===== */

/* {===== Connect slots: a global cap on opens and reconnects in flight */

static void unqueue(struct dl_conv *c)
{
	struct directline *dl = c->dl;
	struct dl_conv **pp = &dl->queue_head, *prev = NULL;

	if (!c->queued)
		return;
	while (*pp && *pp != c) {
		prev = *pp;
		pp = &(*pp)->queue_next;
	}
	if (*pp)
		*pp = c->queue_next;
	if (dl->queue_tail == c)
		dl->queue_tail = prev;
	c->queue_next = NULL;
	c->queued = false;
	dl->nqueued--;
}

static bool paused(const struct directline *dl)
{
	return dl->paused_until_ms && clock_mono_ms() < dl->paused_until_ms;
}

void dl_slot_request(struct dl_conv *c)
{
	struct directline *dl = c->dl;

	if (c->has_slot) {
		dl_stream_slot_granted(c);
		return;
	}
	if (dl->connecting < dl->connect_limit && !dl->queue_head && !paused(dl)) {
		c->has_slot = true;
		if (++dl->connecting > dl->connects_peak)
			dl->connects_peak = dl->connecting;
		dl_stream_slot_granted(c);
		return;
	}
	if (c->queued)
		return;
	c->phase = DL_PH_QUEUED;
	c->queued = true;
	if (dl->queue_tail)
		dl->queue_tail->queue_next = c;
	else
		dl->queue_head = c;
	dl->queue_tail = c;
	dl->nqueued++;
}

/* Grants slots to the conversations waiting longest, as far as the cap and a pause allow.
 * Each goes on from its own timer (dl_stream_timer sees QUEUED with a slot), never from
 * inside this call. */
static void grant(struct directline *dl)
{
	while (dl->queue_head && dl->connecting < dl->connect_limit && !paused(dl)) {
		struct dl_conv *next = dl->queue_head;

		unqueue(next);
		next->has_slot = true;
		if (++dl->connecting > dl->connects_peak)
			dl->connects_peak = dl->connecting;
		if (!dl_timer(next, &next->rx_timer, dl_stream_timer) ||
		    loop_timer_start(next->rx_timer, 0, 0) < 0) {
			dl_slot_release(next);	/* out of memory: let the next one try */
			break;
		}
	}
}

void dl_slot_release(struct dl_conv *c)
{
	if (!c->has_slot)
		return;
	c->has_slot = false;
	c->dl->connecting--;
	grant(c->dl);
}

void dl_slot_drop(struct dl_conv *c)
{
	unqueue(c);
	dl_slot_release(c);
}

void dl_slot_done(struct dl_conv *c)
{
	struct directline *dl = c->dl;

	if (c->has_slot && dl->connect_limit < dl->s.max_concurrent)
		dl->connect_limit++;
	dl_slot_release(c);
}

static void on_pause_over(void *arg)
{
	struct directline *dl = arg;

	dl->paused_until_ms = 0;
	grant(dl);
}

void dl_slot_throttle(struct directline *dl, uint64_t ms)
{
	uint64_t until = clock_mono_ms() + ms;

	if (until <= dl->paused_until_ms)
		return;
	dl->connect_limit = dl->connect_limit > 1 ? dl->connect_limit / 2 : 1;
	if (!dl->pause_timer)
		dl->pause_timer = loop_timer_new(dl->lp, on_pause_over, dl);
	if (!dl->pause_timer || loop_timer_start(dl->pause_timer, ms, 0) < 0)
		return;		/* without a timer a pause could never end */
	if (!dl->paused_until_ms)
		log_warn(dl->lg, "directline.throttled", "bot=\"%s\" pause_ms=%llu queued=%zu limit=%u",
			 dl->s.bot_name, (unsigned long long)ms, dl->nqueued, dl->connect_limit);
	dl->paused_until_ms = until;
}

/* }===== */
