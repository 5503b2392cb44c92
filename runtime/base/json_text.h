/* json_text.h - writing JSON string values into bounded buffers.
 * For the few answers the core composes itself (/healthz, admin, routing decisions,
 * JSON log lines, handoff.status messages, Direct Line request bodies); payloads from the network are parsed by
 * activity.c and scripts use lua-cjson. */
#ifndef HANDOFFD_JSON_TEXT_H
#define HANDOFFD_JSON_TEXT_H

#include <stddef.h>

/* Appends the first SLEN bytes of S, escaped for the inside of a JSON string (no
 * quotes), at OUT + LEN. Stops early rather than overflow CAP; OUT stays
 * NUL-terminated. Returns the new length. */
size_t json_text_escape(char *out, size_t cap, size_t len, const char *s, size_t slen);

/* Writes all of S, escaped (no quotes), to OUT. Returns its length, or -ENOSPC when it
 * does not fit whole in CAP: for values that must never be cut (ids sent to the bot). */
int json_text_escape_whole(char *out, size_t cap, const char *s);

/* Appends S as a quoted JSON string at OUT + LEN (truncated to fit CAP, still quoted).
 * Returns the new length. */
size_t json_text_string(char *out, size_t cap, size_t len, const char *s);

#endif
