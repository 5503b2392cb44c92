/* json_simd.h - the one door to simdjson; json_simd.cpp is the only C++ in handoffd.
 * A walk validates a whole JSON document in one pass with simdjson's On-Demand API and,
 * on the way, takes what a schema asks for: unescaped strings, the raw JSON text of
 * values, captured subtrees, and one callback per element of the arrays it walks.
 * What the values mean is left to the callers (activity.c, handoff.c). */
#ifndef HANDOFFD_JSON_SIMD_H
#define HANDOFFD_JSON_SIMD_H

#include <handoffd/parse.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The most slots one element schema may use. */
#define JSON_SLOTS_MAX 32

/* What a walk recorded about one wanted value. */
struct json_slot {
	enum hd_kind kind;	/* HD_ABSENT when the member was not there */
	struct hd_str str;	/* strings: the unescaped text */
	struct hd_str raw;	/* the value's JSON text */
	uint32_t node;		/* captured values: index of the value's node in the tree */
};

struct json_schema;

/* One member of an object that a schema wants. A member may do several things:
 * fill SLOT, walk an object value with OBJECT (into the same slots), walk each element
 * of an array value as an element of EACH, or CAPTURE the whole value into the tree. */
struct json_member {
	const char *key;		/* compared with the unescaped member name */
	unsigned char keylen;
	signed char slot;		/* index into the element's slots, or -1 */
	bool capture;
	const struct json_schema *object;
	const struct json_schema *each;
};

#define JSON_KEY(k) .key = (k), .keylen = sizeof(k) - 1
#define JSON_MEMBERS(a) .members = (a), .nmembers = sizeof(a) / sizeof((a)[0])

/* An element is the root, or one item of an array walked through json_member.each.
 * BEGIN runs before the element is walked, DONE after, with the element's own value in
 * SELF (any kind: an array may hold non-objects; their slots stay absent) and the slots
 * its members filled. A negative return ends the walk and becomes its result; the
 * callback fills the walk's error first. Object schemas only need MEMBERS; ALSO names
 * a schema whose members are wanted too (the root of a payload is either an
 * ActivitySet or one activity). */
struct json_schema {
	const struct json_member *members;
	unsigned nmembers;
	const struct json_schema *also;
	unsigned nslots;
	int (*begin)(void *ctx);
	int (*done)(void *ctx, const struct json_slot *self, const struct json_slot *slots);
};

/* Captured subtrees, each stored as in hd_node. NODES grows as needed and belongs to
 * whoever owns the tree. */
struct json_tree {
	struct hd_node *nodes;
	size_t count;
	size_t cap;
};

struct json_walk {
	const struct json_schema *root;	/* the root must be an object */
	void *ctx;			/* passed to every callback */
	struct json_tree *tree;		/* for captures; may be NULL when none are asked for */
	unsigned max_depth;
	bool capture_root;		/* capture the root object too: its node is self->node */
};

struct json_simd;

/* A reusable parser; its buffers grow to the largest document seen. NULL on failure. */
struct json_simd *json_simd_new(void);
void json_simd_free(struct json_simd *js);

/* Walks the LEN bytes at BUF, of which CAP (>= LEN + HD_PARSE_PADDING) are readable.
 * Strings point into BUF or into the parser, valid until its next walk. Returns 0;
 * -EPROTO with ERR filled for bad input; -ENOMEM; or a callback's negative value. */
int json_simd_walk(struct json_simd *js, const char *buf, size_t len, size_t cap,
		   const struct json_walk *w, struct hd_parse_error *err);

/* Sets ERR (unless already set) with a printf-style reason. Returns -EPROTO. */
int json_simd_fail(struct hd_parse_error *err, enum hd_parse_status status, size_t offset,
		   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#ifdef __cplusplus
}
#endif

#endif
