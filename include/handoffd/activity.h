/* handoffd/activity.h - parsing what Direct Line sends: an ActivitySet (WebSocket frame
 * or GET body) or one activity, into the watermark and, per activity, the fields
 * dispatch needs. Every byte is validated before anything is handed out: a payload
 * parses whole or not at all. handoff.initiate events also get their handoff object
 * (handoffd/handoff.h) from the same pass. */
#ifndef HANDOFFD_ACTIVITY_H
#define HANDOFFD_ACTIVITY_H

#include <handoffd/parse.h>

struct hd_handoff;

/* One activity. Strings are valid until the parser's next parse or free. */
struct hd_activity {
	struct hd_str id;
	struct hd_str type;
	struct hd_str name;
	struct hd_str from_id;
	struct hd_str from_role;
	struct hd_str reply_to_id;
	struct hd_str client_activity_id;	/* channelData.clientActivityID */
	struct hd_str raw;			/* the activity's JSON text as sent */
	size_t offset;				/* where RAW starts in the input */
	const struct hd_handoff *handoff;	/* set for a handoff.initiate event */
};

struct hd_activity_set {
	struct hd_str watermark;	/* ptr NULL when absent or null: keep the previous one */
	bool is_set;			/* false when the payload was a single activity */
	size_t count;
	const struct hd_activity *activities;	/* in the order sent */
	size_t handoffs;		/* how many of them are handoff.initiate events */
};

struct hd_activity_parser;

/* A reusable parser (one per thread; it does no I/O and touches no global state, so it
 * may be called from any callback). OPTS NULL means the defaults; max_depth is capped
 * at 1024. NULL on allocation failure. */
struct hd_activity_parser *hd_activity_parser_new(const struct hd_parse_opts *opts);
void hd_activity_parser_free(struct hd_activity_parser *p);

/* Parses the LEN bytes at BUF. When CAP >= LEN + HD_PARSE_PADDING bytes are readable
 * at BUF, BUF is read in place and must stay unchanged while SET is used; otherwise
 * (pass CAP = LEN) it is copied first. Fills SET, valid until the next parse or free.
 * Returns 0; -EPROTO with ERR filled when the payload is refused (SET is then empty:
 * nothing of it may be dispatched); -ENOMEM. */
int hd_activity_parse(struct hd_activity_parser *p, const char *buf, size_t len, size_t cap,
		      struct hd_activity_set *set, struct hd_parse_error *err);

#endif
