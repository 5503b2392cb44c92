/* handoff.h - internal: how activity.c hands each activity's handoff parts to handoff.c.
 * An activity's type and name often come after its value and attachments, so every
 * activity's context and transcript are collected while it is walked, then kept
 * (handoff_collector_take) or forgotten (handoff_collector_drop) once it is known
 * whether it was a handoff.initiate event. The public interface is
 * include/handoffd/handoff.h. */
#ifndef HANDOFFD_HANDOFF_INTERNAL_H
#define HANDOFFD_HANDOFF_INTERNAL_H

#include "parse/json_simd.h"

#include <handoffd/handoff.h>

struct handoff_build;
struct arena_chunk;

/* What the attachment named "transcript" of the activity being walked left behind. */
struct transcript_candidate {
	bool found;
	size_t first, end;		/* its entries */
	size_t bad_entry;		/* 1 + index of the first entry that is not an object */
	struct json_slot content, url, activities;
};

/* Embedded first in the activity parser: the walk's callback context is the parser,
 * and handoff.c's callbacks read it as this collector. */
struct handoff_collector {
	struct json_tree tree;		/* captured contexts */
	struct hd_transcript_entry *entries;
	size_t nentries, entries_cap;
	struct handoff_build *builds;
	size_t nbuilds, builds_cap;
	struct json_simd *sub;		/* for contexts and transcripts sent as JSON strings */
	struct arena_chunk *arena;	/* copies that outlive the sub parser */
	unsigned max_depth;
	size_t tree_mark, entries_mark, attachment_mark;
	size_t entry_index, bad_entry;	/* in the attachment being walked, from 1 */
	struct transcript_candidate transcript;
	bool nomem;
};

/* Every activity's attachments are walked with this: the name telling which is the
 * transcript may come after its content. */
extern const struct json_schema handoff_attachment_schema;

int handoff_collector_init(struct handoff_collector *hc, unsigned max_depth);
void handoff_collector_release(struct handoff_collector *hc);
/* Forgets the previous parse; the handoffs it gave out become invalid. */
void handoff_collector_reset(struct handoff_collector *hc);

/* An activity starts: what it captures belongs to it until _take or _drop. */
void handoff_collector_begin(struct handoff_collector *hc);
/* The activity just walked (SELF, with activity SLOTS) was a handoff.initiate event:
 * builds its handoff. Returns the handoff's index, or -ENOMEM. */
int handoff_collector_take(struct handoff_collector *hc, const struct json_slot *self,
			   const struct json_slot *slots);
/* The activity was not a handoff: forgets what it captured. */
void handoff_collector_drop(struct handoff_collector *hc);

/* After a successful walk: the handoff with INDEX, its pointers set. */
const struct hd_handoff *handoff_collector_get(struct handoff_collector *hc, size_t index);

#endif
