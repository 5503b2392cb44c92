/* handoffd/parse.h - what the Direct Line payload parser's public headers share:
 * limits, errors, and the (pointer, length) strings and JSON values it hands out.
 * The parser itself is in handoffd/activity.h (ActivitySets, dispatch fields) and
 * handoffd/handoff.h (the handoff object of a handoff.initiate event). */
#ifndef HANDOFFD_PARSE_H
#define HANDOFFD_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes that must be readable past the end of a buffer for the parser to read it in
 * place (simdjson's SIMDJSON_PADDING); shorter buffers are copied first. Their content
 * does not matter. */
#define HD_PARSE_PADDING 64

/* Default bounds. Direct Line keeps an activity under 256 K characters, but a set may
 * hold several and a string-encoded transcript is escaped once more. */
#define HD_PARSE_MAX_BYTES_DEFAULT ((size_t)4 << 20)
#define HD_PARSE_MAX_DEPTH_DEFAULT 64u

struct hd_parse_opts {
	size_t max_bytes;	/* larger payloads are refused before any parsing */
	unsigned max_depth;	/* objects and arrays nested deeper are refused */
};

#define HD_PARSE_OPTS_DEFAULT { HD_PARSE_MAX_BYTES_DEFAULT, HD_PARSE_MAX_DEPTH_DEFAULT }

enum hd_parse_status {
	HD_PARSE_OK = 0,
	HD_PARSE_SYNTAX,	/* malformed JSON */
	HD_PARSE_UTF8,		/* invalid UTF-8 */
	HD_PARSE_SHAPE,		/* valid JSON, but not an ActivitySet or activity */
	HD_PARSE_DEPTH,		/* nested deeper than max_depth */
	HD_PARSE_SIZE,		/* longer than max_bytes */
	HD_PARSE_NOMEM,
};

/* Why a payload was refused. REASON never holds payload content beyond a few bytes of
 * key names, so it is safe to log. */
struct hd_parse_error {
	enum hd_parse_status status;
	size_t offset;		/* byte offset into the input where the problem is */
	char reason[112];	/* "malformed JSON: expected ',' or '}'" */
};

/* A string handed out by the parser: unescaped UTF-8, not NUL-terminated, may hold NUL
 * bytes. PTR is NULL when the value was absent, null, or not a string. Valid as long as
 * the result it came from (see each header). */
struct hd_str {
	const char *ptr;
	size_t len;
};

enum hd_kind {
	HD_ABSENT = 0, HD_NULL, HD_FALSE, HD_TRUE, HD_NUMBER, HD_STRING, HD_ARRAY, HD_OBJECT,
};

/* One JSON value of a decoded subtree (the handoff context). A subtree is stored in
 * document order, a container followed by its children: the first child of N is N + 1,
 * and the sibling after N is N + N->size. */
struct hd_node {
	enum hd_kind kind;
	uint32_t size;		/* nodes in this value: itself and all its descendants */
	uint32_t count;		/* arrays and objects: number of direct children */
	bool is_int;		/* numbers: I holds the value exactly; otherwise use D */
	int64_t i;
	double d;
	struct hd_str key;	/* the member name when the parent is an object */
	struct hd_str str;	/* strings: the unescaped text */
	struct hd_str raw;	/* the value's JSON text exactly as sent */
};

/* True when S holds exactly the NUL-terminated LIT. */
static inline bool hd_str_eq(struct hd_str s, const char *lit)
{
	size_t i = 0;

	if (!s.ptr)
		return false;
	for (; i < s.len && lit[i]; i++)
		if (s.ptr[i] != lit[i])
			return false;
	return i == s.len && !lit[i];
}

#endif
