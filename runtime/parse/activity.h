/* activity.h - internal: the slots an activity walk fills, shared by activity.c (the
 * dispatch fields) and handoff.c (what a handoff.initiate event needs). The public
 * interface is include/handoffd/activity.h. */
#ifndef HANDOFFD_ACTIVITY_INTERNAL_H
#define HANDOFFD_ACTIVITY_INTERNAL_H

#include <handoffd/activity.h>

#include <stdbool.h>
#include <stdlib.h>

enum activity_slot {
	ACT_ID,
	ACT_TYPE,
	ACT_NAME,
	ACT_FROM_ID,
	ACT_FROM_NAME,
	ACT_FROM_ROLE,
	ACT_REPLY_TO_ID,
	ACT_CLIENT_ACTIVITY_ID,
	ACT_CONVERSATION_ID,
	ACT_RECIPIENT_ID,
	ACT_RECIPIENT_NAME,
	ACT_RECIPIENT_ROLE,
	ACT_VALUE,		/* captured into the tree */
	ACT_ATTACHMENTS,
	ACT_REL_USER_ID,	/* relatesTo.user */
	ACT_REL_USER_NAME,
	ACT_REL_USER_ROLE,
	ACT_REL_BOT_ID,		/* relatesTo.bot */
	ACT_REL_BOT_NAME,
	ACT_REL_BOT_ROLE,
	ACT_REL_CONVERSATION_ID,
	ACT_ACTIVITIES,		/* the root of an ActivitySet */
	ACT_WATERMARK,
	ACT_NSLOTS
};

/* Makes room for WANT items of SIZE bytes in *ITEMS (capacity *CAP), doubling. */
static inline bool activity_reserve(void **items, size_t *cap, size_t want, size_t size)
{
	size_t n = *cap ? *cap : 16;
	void *p;

	if (want <= *cap)
		return true;
	while (n < want)
		n *= 2;
	p = realloc(*items, n * size);
	if (!p)
		return false;
	*items = p;
	*cap = n;
	return true;
}

#endif
