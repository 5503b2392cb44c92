/* dl_dispatch.c - one payload received on a Direct Line conversation, from the stream or
 * a GET: the one dispatch point of the C core.
 * Owns what happens between bytes and the on_activity callback: keep-alives and unknown
 * message kinds ignored, parsing (activity.c, whole payload or nothing), dropping what
 * was already seen (dedupe.c) and our own echoes (by channelData.clientActivityID,
 * reported to dl_send.c, replays included), dispatching the rest in arrival order, and
 * only then storing the set's watermark (verbatim) and handing it to the store. endOfConversation ends the
 * conversation once its set is done. Where the bytes came from is dl_stream.c's business. */
#include "directline/dl_internal.h"

#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"
#include "base/metrics.h"

#include <handoffd/activity.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static bool blank(const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (data[i] != ' ' && data[i] != '\t' && data[i] != '\r' && data[i] != '\n')
			return false;
	return true;
}

/* True when A was seen before; otherwise it is remembered now. */
static bool seen_before(struct dl_conv *c, const struct hd_activity *a)
{
	uint64_t h;

	if (!a->id.ptr || a->id.len == 0)
		return false;	/* nothing to dedupe by: deliver */
	h = dedupe_hash(a->id.ptr, a->id.len);
	if (dedupe_contains(&c->seen, h))
		return true;
	dedupe_add(&c->seen, h);	/* out of memory: a later replay may repeat it */
	return false;
}

/* Handles one activity. Returns true when it was an endOfConversation. */
static bool one(struct dl_conv *c, const struct hd_activity *a)
{
	struct directline *dl = c->dl;
	struct hd_str cid = a->client_activity_id;
	bool ours = cid.ptr && dl_send_is_ours(cid.ptr, cid.len);

	/* An echo counts before deduplication: after a restart the stored position may be
	 * before an echo whose id was seen already, and that echo settles a send. */
	if (ours)
		dl_send_echo(c, a);
	if (c->closed)
		return false;
	if (seen_before(c, a)) {
		dl->n_duplicates++;
		metrics_inc(dl->c.duplicates);
		return false;
	}
	c->active_ms = clock_mono_ms();	/* something new: not idle (park_after) */
	if (ours) {
		dl->n_echoes++;
		metrics_inc(dl->c.echoes);
		if (c->wake_boundary && strlen(c->wake_boundary) == a->client_activity_id.len &&
		    memcmp(c->wake_boundary, a->client_activity_id.ptr, a->client_activity_id.len) == 0)
			c->held = false;	/* what follows was said after the wake */
		return false;
	}
	dl->n_dispatched++;
	metrics_inc(dl->c.dispatched);
	if (dl->cb.on_activity)
		dl->cb.on_activity(c, c->key, a, dl->arg);
	return hd_str_eq(a->type, "endOfConversation");
}

static bool all_digits(const char *s, size_t len)
{
	if (len == 0 || len > 18)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* Stores the set's watermark verbatim. The service has reset watermarks before: say so,
 * dedupe keeps the delivery right. */
static void store_watermark(struct dl_conv *c, struct hd_str wm)
{
	if (!wm.ptr || wm.len == 0 || wm.len > DL_WATERMARK_MAX || memchr(wm.ptr, '\0', wm.len))
		return;
	if (c->watermark && strlen(c->watermark) == wm.len && memcmp(c->watermark, wm.ptr, wm.len) == 0)
		return;
	if (c->watermark && all_digits(c->watermark, strlen(c->watermark)) && all_digits(wm.ptr, wm.len) &&
	    strtoull(c->watermark, NULL, 10) > strtoull(wm.ptr, NULL, 10))
		log_warn(c->dl->lg, "directline.watermark_back", "key=\"%s\" conv=%s from=%s to=%.*s", c->key,
			 c->id, c->watermark, (int)wm.len, wm.ptr);
	if (dl_strset(&c->watermark, wm.ptr, wm.len) == 0)
		dl_persist(c);
}

static void record_time(struct directline *dl, uint64_t us, size_t count)
{
	uint64_t per = us / (count ? count : 1);
	unsigned b = 0;

	while (per && b < sizeof(dl->dispatch_us_hist) / sizeof(dl->dispatch_us_hist[0]) - 1) {
		per >>= 1;
		b++;
	}
	dl->dispatch_us_hist[b] += count ? count : 1;
}

static int refuse(struct dl_conv *c, const struct hd_parse_error *err, size_t len)
{
	metrics_inc(c->dl->c.bad_payloads);
	log_warn(c->dl->lg, "directline.bad_payload", "key=\"%s\" conv=%s bytes=%zu offset=%zu reason=\"%s\"",
		 c->key, c->id ? c->id : "-", len, err->offset, err->reason);
	return -EPROTO;
}

int dl_dispatch(struct dl_conv *c, const char *data, size_t len)
{
	struct directline *dl = c->dl;
	struct hd_activity_set set;
	struct hd_parse_error err;
	uint64_t t0 = clock_mono_us();
	bool ended = false;
	size_t i;

	if (blank(data, len))
		return 0;	/* keep-alive */
	if (hd_activity_parse(dl->parser, data, len, len, &set, &err) < 0)
		return refuse(c, &err, len);
	if (!set.is_set) {	/* another kind of message: reserved for the future, ignore */
		log_debug(dl->lg, "directline.unknown_message", "key=\"%s\" bytes=%zu", c->key, len);
		return 0;
	}
	for (i = 0; i < set.count && !c->closed; i++)
		ended |= one(c, &set.activities[i]);
	if (!c->closed)
		store_watermark(c, set.watermark);
	record_time(dl, clock_mono_us() - t0, set.count);
	if (ended && !dl_done(c))
		dl_terminate(c, DL_STATE_ENDED, "endOfConversation");
	return (int)set.count;
}
