/* handoffd/handoff.h - the handoff object of a handoff.initiate event: who, where, the
 * context the bot sent (`value`) and the transcript (the attachment named "Transcript").
 * Handoff objects come out of hd_activity_parse() (handoffd/activity.h), which accepts
 * the known variations: `value` and the attachment content as objects or as JSON
 * strings, the attachment name in any case and anywhere in the list, the transcript
 * missing, empty or by contentUrl only. A broken transcript or context does not lose
 * the handoff: it is reported in transcript.error / context.error. */
#ifndef HANDOFFD_HANDOFF_H
#define HANDOFFD_HANDOFF_H

#include <handoffd/activity.h>
#include <handoffd/parse.h>

struct hd_party {
	struct hd_str id;
	struct hd_str name;
	struct hd_str role;
};

/* One activity of the transcript. ROLE and NAME are the sender's (from.role, from.name). */
struct hd_transcript_entry {
	struct hd_str id;
	struct hd_str type;
	struct hd_str role;
	struct hd_str name;
	struct hd_str text;
	struct hd_str timestamp;
	struct hd_str raw;		/* the entry's JSON text as sent */
};

struct hd_transcript {
	size_t count;
	const struct hd_transcript_entry *entries;	/* in the order sent */
	struct hd_str raw;		/* the attachment content ({"activities":[...]}) */
	struct hd_str content_url;	/* when the transcript was given by reference only */
	const char *error;		/* NULL, or why there is no (complete) transcript */
};

/* The well-known context variables, by their friendly names (hd_context_field_name). */
enum hd_context_field {
	HD_CTX_SCOPE,		/* va_Scope */
	HD_CTX_LAST_TOPIC,	/* va_LastTopic */
	HD_CTX_TOPICS,		/* va_Topics */
	HD_CTX_LAST_PHRASE,	/* va_LastPhrase (va_LastPhrases, as once documented) */
	HD_CTX_PHRASES,		/* va_Phrases */
	HD_CTX_AGENT_MESSAGE,	/* va_AgentMessage */
	HD_CTX_BOT_ID,		/* va_BotId */
	HD_CTX_BOT_NAME,	/* va_BotName */
	HD_CTX_LANGUAGE,	/* va_Language */
	HD_CTX_CONVERSATION_ID,	/* va_ConversationId */
	HD_CTX_NFIELDS
};

/* "scope", "last_topic", ... */
const char *hd_context_field_name(enum hd_context_field f);

/* The event's `value`. VARS is the object as sent, every key included (va_* and
 * custom ones): VARS + 1 is its first member and each member M is followed by its
 * sibling at M + M->size. FIELD points at the well-known variables; NULL when not sent. */
struct hd_context {
	const struct hd_node *vars;	/* NULL when there is no usable value */
	const struct hd_node *field[HD_CTX_NFIELDS];
	struct hd_str raw;		/* the value's JSON text (decoded when sent as a string) */
	const char *error;		/* NULL, or why VARS is missing */
};

struct hd_handoff {
	struct hd_str activity_id;
	struct hd_str conversation_id;
	struct hd_party user;		/* relatesTo.user, else the event's recipient */
	struct hd_party bot;		/* relatesTo.bot, else the event's sender */
	struct hd_str agent_message;	/* va_AgentMessage when it is a string */
	struct hd_str raw;		/* the event's JSON text */
	struct hd_context context;
	struct hd_transcript transcript;
};

/* A copy of H that points only into one block of hd_handoff_copy_size(H) bytes at MEM
 * (aligned for any type, such as malloc's), so that it stays valid after the parser's
 * next parse and without the input buffer; it is freed with MEM. Its strings hold the
 * same bytes: those inside the event's JSON text (RAW) are inside the copy's RAW at the
 * same offsets, and likewise for the decoded CONTEXT.RAW and TRANSCRIPT.RAW. The size
 * is 0 when it would not fit in a size_t. Returns MEM. */
size_t hd_handoff_copy_size(const struct hd_handoff *h);
struct hd_handoff *hd_handoff_copy_to(void *mem, const struct hd_handoff *h);

/* The first handoff of a parsed set, or NULL. */
const struct hd_handoff *hd_activity_set_handoff(const struct hd_activity_set *set);

#endif
