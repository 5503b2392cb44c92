/* json_simd.cpp - validating schema walks over simdjson's On-Demand API (json_simd.h).
 * The only C++ file of handoffd: it keeps simdjson's types and exceptions-free error
 * codes behind the C interface. Every value of the document is visited and checked
 * (On-Demand alone would skip what nobody reads without checking it), so a document
 * either walks whole or fails with a reason and a byte offset. Meaning belongs to the
 * callers; this file only knows JSON. */
#include "parse/json_simd.h"

#include <simdjson.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <iconv.h>
#include <memory>
#include <new>

static_assert(HD_PARSE_PADDING == simdjson::SIMDJSON_PADDING, "HD_PARSE_PADDING must match simdjson");

namespace od = simdjson::ondemand;
using simdjson::error_code;

struct json_simd {
	od::parser parser;
};

namespace {

struct walker {
	od::document *doc;
	const char *buf;
	const char *end;	/* buf + len */
	const char *bs;		/* the first backslash at or after the last place looked, or end */
	const json_walk *w;
	hd_parse_error *err;
};

size_t offset(const walker &k, const char *p)
{
	return size_t(p - k.buf);
}

simdjson_inline bool is_space(char c)
{
	return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

simdjson_inline const char *trim_end(const char *start, const char *stop)
{
	while (stop > start && is_space(stop[-1]))
		stop--;
	return stop;
}

/* Where the iterator stands: the token after the value just walked, or the end. */
simdjson_inline const char *here(walker &k)
{
	const char *p;

	if (k.doc->current_location().get(p))
		return k.end;
	return p;
}

simdjson_inline const char *next_backslash(const char *from, const char *end)
{
	const void *p = memchr(from, '\\', size_t(end - from));

	return p ? static_cast<const char *>(p) : end;
}

/* True when a backslash lies in [FROM, TO). One memchr serves many strings, so checking
 * escapes costs one pass over the document instead of one call per string. */
simdjson_inline bool escaped(walker &k, const char *from, const char *to)
{
	if (k.bs < from)
		k.bs = next_backslash(from, k.end);
	return k.bs < to;
}

simdjson_inline hd_kind kind_of(char c)
{
	switch (c) {
	case '{': return HD_OBJECT;
	case '[': return HD_ARRAY;
	case '"': return HD_STRING;
	case 't': return HD_TRUE;
	case 'f': return HD_FALSE;
	case 'n': return HD_NULL;
	case '-': case '0': case '1': case '2': case '3': case '4':
	case '5': case '6': case '7': case '8': case '9': return HD_NUMBER;
	default: return HD_ABSENT;
	}
}

__attribute__((cold)) int syntax(walker &k, error_code e, const char *at, const char *what)
{
	switch (e) {
	case simdjson::MEMALLOC:
		return -ENOMEM;
	case simdjson::NUMBER_ERROR:
		what = "invalid number";
		break;
	case simdjson::STRING_ERROR:
		what = "invalid string escape";
		break;
	case simdjson::INCOMPLETE_ARRAY_OR_OBJECT:
		what = "unexpected end of input";
		at = k.end;
		break;
	default:
		break;
	}
	if (at >= k.end)
		what = "unexpected end of input";
	return json_simd_fail(k.err, HD_PARSE_SYNTAX, offset(k, at), "malformed JSON: %s", what);
}

__attribute__((cold)) int too_deep(walker &k, const char *at)
{
	return json_simd_fail(k.err, HD_PARSE_DEPTH, offset(k, at), "nesting deeper than %u",
			      k.w->max_depth);
}

/* The JSON text of a value that started at START: scalars end with their token,
 * containers where the iterator now stands. */
simdjson_inline hd_str span(walker &k, const char *start, hd_kind kind, std::string_view tok)
{
	const char *stop = kind == HD_OBJECT || kind == HD_ARRAY ? here(k) : tok.data() + tok.size();

	stop = trim_end(start, stop);
	return { start, size_t(stop - start) };
}

/* Strings without a backslash are handed out in place; only escaped ones are copied
 * (and checked) by simdjson's unescaper. */
simdjson_inline int string(walker &k, od::value v, std::string_view tok, hd_str *out)
{
	const char *end = tok.data() + tok.size();
	std::string_view s;
	od::raw_json_string raw;

	if (!escaped(k, tok.data(), end)) {
		if (auto e = v.get_raw_json_string().get(raw))
			return syntax(k, e, tok.data(), "invalid string");
		if (out)	/* stage 1 saw the closing quote: the token ends with it */
			*out = { tok.data() + 1, size_t(trim_end(tok.data(), end) - tok.data() - 2) };
		return 0;
	}
	if (auto e = v.get_string().get(s))
		return syntax(k, e, tok.data(), "invalid string");
	if (out)
		*out = { s.data(), s.size() };
	return 0;
}

simdjson_inline int scalar(walker &k, od::value v, std::string_view tok, hd_kind kind)
{
	bool b;
	double d;
	error_code e;

	switch (kind) {
	case HD_STRING:
		return string(k, v, tok, nullptr);
	case HD_TRUE:
	case HD_FALSE:
		e = v.get_bool().get(b);
		return e ? syntax(k, e, tok.data(), "invalid literal") : 0;
	case HD_NULL:
		e = v.is_null().get(b);
		return e || !b ? syntax(k, simdjson::INCORRECT_TYPE, tok.data(), "invalid literal") : 0;
	case HD_NUMBER:
		e = v.get_double().get(d);
		return e ? syntax(k, e, tok.data(), "invalid number") : 0;
	default:
		return syntax(k, simdjson::TAPE_ERROR, tok.data(), "expected a value");
	}
}

/* A member name: in place when it has no backslash, else unescaped (and checked).
 * TEXT is only filled when asked, since finding the closing quote costs a scan. */
struct key {
	const char *raw;	/* just after the opening quote */
	bool escaped;
	std::string_view text;
};

simdjson_inline int read_key(walker &k, od::field &f, const char *value_at, bool want_text, key *out)
{
	out->raw = reinterpret_cast<const char *>(f.key().raw());
	out->escaped = escaped(k, out->raw, value_at);
	if (out->escaped) {
		if (auto e = f.unescaped_key().get(out->text))
			return syntax(k, e, out->raw - 1, "invalid string escape");
	} else if (want_text) {
		const char *q = static_cast<const char *>(memchr(out->raw, '"', size_t(value_at - out->raw)));
		out->text = std::string_view(out->raw, q ? size_t(q - out->raw) : 0);
	}
	return 0;
}

/* {==== Iteration: every member and element is visited, so every one is checked */

/* Starts the object V at AT, whose nesting level is DEPTH. */
simdjson_inline int open_object(walker &k, od::value &v, const char *at, unsigned depth,
				od::object *o)
{
	if (depth > k.w->max_depth)
		return too_deep(k, at);
	if (auto e = v.get_object().get(*o))
		return syntax(k, e, at, "invalid object");
	return 0;
}

/* Calls F(field, name, value token) for each member of O, its name read (and checked)
 * first; TEXT asks for the name's text even when it needs no unescaping. */
template <class F>
simdjson_inline int each_member(walker &k, od::object &o, bool text, F &&f)
{
	key name;

	for (auto member : o) {
		if (auto e = member.error())
			return syntax(k, e, here(k), "expected a member, ',' or '}'");
		od::field &fld = member.value_unsafe();
		std::string_view tok = fld.value().raw_json_token();
		if (int rc = read_key(k, fld, tok.data(), text, &name))
			return rc;
		if (int rc = f(fld, name, tok))
			return rc;
	}
	return 0;
}

/* Calls F(element) for each element of the array V at AT, whose nesting level is DEPTH. */
template <class F>
simdjson_inline int each_element(walker &k, od::value &v, const char *at, unsigned depth, F &&f)
{
	od::array a;

	if (depth > k.w->max_depth)
		return too_deep(k, at);
	if (auto e = v.get_array().get(a))
		return syntax(k, e, at, "invalid array");
	for (auto item : a) {
		od::value iv;
		if (auto e = std::move(item).get(iv))
			return syntax(k, e, here(k), "expected a value, ',' or ']'");
		if (int rc = f(iv))
			return rc;
	}
	return 0;
}

/* }==== */

int walk_value(walker &k, od::value v, std::string_view tok, unsigned depth);

simdjson_inline int walk_object(walker &k, od::value v, const char *at, unsigned depth)
{
	od::object o;

	if (int rc = open_object(k, v, at, depth, &o))
		return rc;
	return each_member(k, o, false, [&](od::field &f, const key &, std::string_view tok) {
		return walk_value(k, f.value(), tok, depth + 1);
	});
}

simdjson_inline int walk_array(walker &k, od::value v, const char *at, unsigned depth)
{
	return each_element(k, v, at, depth, [&](od::value &item) {
		return walk_value(k, item, item.raw_json_token(), depth + 1);
	});
}

/* Checks a value nobody asked for. DEPTH is the value's own nesting level. */
int walk_value(walker &k, od::value v, std::string_view tok, unsigned depth)
{
	hd_kind kind = kind_of(tok.empty() ? '\0' : tok[0]);

	if (kind == HD_OBJECT)
		return walk_object(k, v, tok.data(), depth);
	if (kind == HD_ARRAY)
		return walk_array(k, v, tok.data(), depth);
	return scalar(k, v, tok, kind);
}

/* {==== Captures: a value copied into the tree as hd_nodes */

int push_node(walker &k, hd_kind kind, std::string_view name, uint32_t *index)
{
	json_tree *t = k.w->tree;

	if (!t)
		return json_simd_fail(k.err, HD_PARSE_NOMEM, 0, "capture without a tree");
	if (t->count == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		void *p = realloc(t->nodes, cap * sizeof(*t->nodes));
		if (!p || cap > UINT32_MAX)
			return -ENOMEM;
		t->nodes = static_cast<hd_node *>(p);
		t->cap = cap;
	}
	*index = uint32_t(t->count);
	hd_node *n = &t->nodes[t->count++];
	*n = hd_node();
	n->kind = kind;
	n->key = { name.data(), name.size() };
	return 0;
}

int capture_number(walker &k, od::value v, std::string_view tok, hd_node *n)
{
	od::number num;

	/* simdjson refuses integers beyond 64 bits; JSON does not, so they become doubles. */
	if (v.get_number().get(num)) {
		if (auto e = v.get_double().get(n->d))
			return syntax(k, e, tok.data(), "invalid number");
		return 0;
	}
	n->d = num.as_double();
	if (num.is_int64() || (num.is_uint64() && num.get_uint64() <= uint64_t(INT64_MAX))) {
		n->is_int = true;
		n->i = num.is_int64() ? num.get_int64() : int64_t(num.get_uint64());
	}
	return 0;
}

int capture(walker &k, od::value v, std::string_view tok, std::string_view name, unsigned depth,
	    uint32_t *index);

int capture_fields(walker &k, od::object &o, unsigned depth, uint32_t *count)
{
	return each_member(k, o, true, [&](od::field &f, const key &name, std::string_view tok) {
		uint32_t child;
		int rc = capture(k, f.value(), tok, name.text, depth + 1, &child);
		*count += !rc;
		return rc;
	});
}

int capture_children(walker &k, od::value v, hd_kind kind, const char *at, unsigned depth,
		     uint32_t *count)
{
	od::object o;

	if (kind == HD_OBJECT) {
		int rc = open_object(k, v, at, depth, &o);
		return rc ? rc : capture_fields(k, o, depth, count);
	}
	return each_element(k, v, at, depth, [&](od::value &item) {
		uint32_t child;
		int rc = capture(k, item, item.raw_json_token(), {}, depth + 1, &child);
		*count += !rc;
		return rc;
	});
}

int capture(walker &k, od::value v, std::string_view tok, std::string_view name, unsigned depth,
	    uint32_t *index)
{
	hd_kind kind = kind_of(tok.empty() ? '\0' : tok[0]);
	uint32_t count = 0;
	hd_str str = {};
	int rc = push_node(k, kind, name, index);

	if (rc)
		return rc;
	if (kind == HD_OBJECT || kind == HD_ARRAY)
		rc = capture_children(k, v, kind, tok.data(), depth, &count);
	else if (kind == HD_STRING)
		rc = string(k, v, tok, &str);
	else if (kind == HD_NUMBER)
		rc = capture_number(k, v, tok, &k.w->tree->nodes[*index]);
	else
		rc = scalar(k, v, tok, kind);
	if (rc)
		return rc;
	hd_node *n = &k.w->tree->nodes[*index];	/* the children may have moved the array */
	n->str = str;
	n->count = count;
	n->size = uint32_t(k.w->tree->count - *index);
	n->raw = span(k, tok.data(), kind, tok);
	return 0;
}

/* }==== */

/* {==== Schema walks */

/* True when the unescaped name at RAW is KEY: the closing quote must follow. Reading
 * up to KEYLEN bytes past a shorter name stays inside the document or its padding. */
simdjson_inline bool raw_name_is(const char *raw, const char *key, unsigned keylen)
{
	for (unsigned i = 0; i < keylen; i++)
		if (raw[i] != key[i])
			return false;
	return raw[keylen] == '"';
}

simdjson_inline const json_member *find_member(const json_schema *s, const key &name)
{
	char first = name.raw[0];

	if (simdjson_unlikely(name.escaped))
		first = name.text.empty() ? '\0' : name.text[0];
	for (; s; s = s->also) {
		for (const json_member *m = s->members; m < s->members + s->nmembers; m++) {
			if (m->key[0] != first)
				continue;
			if (simdjson_likely(!name.escaped) ? raw_name_is(name.raw, m->key, m->keylen)
							   : name.text == std::string_view(m->key, m->keylen))
				return m;
		}
	}
	return nullptr;
}

int walk_fields(walker &k, od::object &o, const json_schema *s, json_slot *slots, unsigned depth);
int walk_element(walker &k, od::value v, const json_schema *s, unsigned depth);

int walk_each(walker &k, od::value v, const char *at, const json_schema *s, unsigned depth)
{
	return each_element(k, v, at, depth, [&](od::value &item) {
		return walk_element(k, item, s, depth + 1);
	});
}

simdjson_inline int walk_member(walker &k, od::value v, std::string_view tok, const json_member *m,
		json_slot *slots, unsigned depth)
{
	hd_kind kind = kind_of(tok.empty() ? '\0' : tok[0]);
	json_slot *slot = m->slot >= 0 ? &slots[m->slot] : nullptr;
	json_slot ignored;
	od::object o;
	int rc;

	if (!slot)
		slot = &ignored;
	if (m->capture) {
		if (!(rc = capture(k, v, tok, {}, depth, &slot->node)))
			slot->str = k.w->tree->nodes[slot->node].str;
	} else if (kind == HD_OBJECT && m->object) {
		if (!(rc = open_object(k, v, tok.data(), depth, &o)))
			rc = walk_fields(k, o, m->object, slots, depth);
	} else if (kind == HD_ARRAY && m->each) {
		rc = walk_each(k, v, tok.data(), m->each, depth);
	} else if (kind == HD_STRING) {
		rc = string(k, v, tok, &slot->str);
	} else {
		rc = walk_value(k, v, tok, depth);
	}
	if (rc)
		return rc;
	slot->kind = kind;
	slot->raw = span(k, tok.data(), kind, tok);
	return 0;
}

int walk_fields(walker &k, od::object &o, const json_schema *s, json_slot *slots, unsigned depth)
{
	return each_member(k, o, false, [&](od::field &f, const key &name, std::string_view tok) {
		const json_member *m = find_member(s, name);
		return m ? walk_member(k, f.value(), tok, m, slots, depth + 1)
			 : walk_value(k, f.value(), tok, depth + 1);
	});
}

int element_done(walker &k, const json_schema *s, json_slot *self, json_slot *slots,
		 std::string_view tok)
{
	self->raw = span(k, tok.data(), self->kind, tok);
	return s->done ? s->done(k.w->ctx, self, slots) : 0;
}

int walk_element(walker &k, od::value v, const json_schema *s, unsigned depth)
{
	json_slot slots[JSON_SLOTS_MAX];
	json_slot self = {};
	std::string_view tok = v.raw_json_token();
	od::object o;
	int rc;

	memset(slots, 0, sizeof(slots[0]) * s->nslots);
	self.kind = kind_of(tok.empty() ? '\0' : tok[0]);
	if (s->begin && (rc = s->begin(k.w->ctx)))
		return rc;
	if (self.kind == HD_OBJECT) {
		if (!(rc = open_object(k, v, tok.data(), depth, &o)))
			rc = walk_fields(k, o, s, slots, depth);
	} else if (self.kind == HD_STRING) {
		rc = string(k, v, tok, &self.str);
	} else {
		rc = walk_value(k, v, tok, depth);
	}
	return rc ? rc : element_done(k, s, &self, slots, tok);
}

/* }==== */

/* {==== Errors found before the walk: stage 1 checks the whole buffer at once and
 * says what is wrong, not where, so the place is looked up again on this cold path. */

/* The offset of the first byte that does not decode as UTF-8; glibc's decoder rejects
 * what simdjson rejects (overlong forms, surrogates, code points past U+10FFFF). */
size_t first_bad_utf8(const char *buf, size_t len)
{
	iconv_t cd = iconv_open("UTF-32LE", "UTF-8");
	char *in = const_cast<char *>(buf);
	size_t left = len;

	if (cd == (iconv_t)-1)
		return 0;
	while (left > 0) {
		char out[4096];
		char *o = out;
		size_t room = sizeof(out);
		if (iconv(cd, &in, &left, &o, &room) == (size_t)-1 && errno != E2BIG)
			break;
	}
	iconv_close(cd);
	return size_t(in - buf);
}

/* The first control character inside a string, or the opening quote of a string that
 * never closes. Only quotes and backslashes matter to find either. */
size_t string_trouble(const char *buf, size_t len, bool *control)
{
	bool in = false;
	size_t open = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = static_cast<unsigned char>(buf[i]);
		if (!in) {
			if (c == '"') {
				in = true;
				open = i;
			}
		} else if (c == '\\') {
			i++;
		} else if (c == '"') {
			in = false;
		} else if (c < 0x20) {
			*control = true;
			return i;
		}
	}
	return in ? open : len;
}

int stage1_error(const char *buf, size_t len, error_code e, hd_parse_error *err)
{
	bool control = false;
	size_t at;

	switch (e) {
	case simdjson::MEMALLOC:
		return -ENOMEM;
	case simdjson::UTF8_ERROR:
		return json_simd_fail(err, HD_PARSE_UTF8, first_bad_utf8(buf, len), "invalid UTF-8");
	case simdjson::EMPTY:
		return json_simd_fail(err, HD_PARSE_SYNTAX, 0, "empty payload");
	case simdjson::CAPACITY:
		return json_simd_fail(err, HD_PARSE_SIZE, 0, "payload too large for the parser");
	case simdjson::UNCLOSED_STRING:
	case simdjson::UNESCAPED_CHARS:
		at = string_trouble(buf, len, &control);
		return json_simd_fail(err, HD_PARSE_SYNTAX, at, "malformed JSON: %s",
				      control ? "control character in a string" : "unterminated string");
	default:
		return json_simd_fail(err, HD_PARSE_SYNTAX, 0, "malformed JSON: %s", simdjson::error_message(e));
	}
}

/* }==== */

int trailing(walker &k)
{
	const char *p;

	if (k.doc->current_location().get(p))
		return 0;
	return json_simd_fail(k.err, HD_PARSE_SYNTAX, offset(k, p), "malformed JSON: trailing content");
}

/* A document that is a single scalar: wrong in shape, but first it must be valid. */
int root_scalar(walker &k, od::document &doc, hd_kind kind, const char *at)
{
	std::string_view str;
	double d;
	bool b;
	error_code e;

	switch (kind) {
	case HD_OBJECT:
	case HD_ARRAY:
		return 0;
	case HD_STRING:
		e = doc.get_string().get(str);
		break;
	case HD_NUMBER:
		e = doc.get_double().get(d);
		break;
	case HD_TRUE:
	case HD_FALSE:
		e = doc.get_bool().get(b);
		break;
	case HD_NULL:
		e = doc.is_null().get(b);
		e = e ? e : b ? simdjson::SUCCESS : simdjson::N_ATOM_ERROR;
		break;
	default:
		e = simdjson::TAPE_ERROR;
		break;
	}
	return e ? syntax(k, e, at, kind == HD_NUMBER ? "invalid number"
				  : kind == HD_ABSENT ? "expected a value" : "invalid literal") : 0;
}

/* Finds out why a document that passed stage 1 was refused as a root object: walks it
 * as a plain value over a zero-padded copy, which reports the first problem and where. */
int diagnose(json_simd *js, const char *buf, size_t len, const json_walk *w, hd_parse_error *err)
{
	std::unique_ptr<char[]> copy(new (std::nothrow) char[len + simdjson::SIMDJSON_PADDING]);
	od::document doc;
	od::value v;

	if (!copy)
		return -ENOMEM;
	memcpy(copy.get(), buf, len);
	memset(copy.get() + len, 0, simdjson::SIMDJSON_PADDING);
	if (auto e = js->parser.iterate(copy.get(), len, len + simdjson::SIMDJSON_PADDING).get(doc))
		return stage1_error(buf, len, e, err);
	walker k = { &doc, copy.get(), copy.get() + len, next_backslash(copy.get(), copy.get() + len),
		     w, err };
	std::string_view tok;
	if (doc.raw_json_token().get(tok) || tok.empty())
		return syntax(k, simdjson::TAPE_ERROR, k.buf, "expected a value");
	if (tok[0] == '{' || tok[0] == '[') {
		if (auto e = doc.get_value().get(v))
			return syntax(k, e, tok.data(), "expected a value");
		if (int rc = walk_value(k, v, v.raw_json_token(), 1))
			return rc;
		if (int rc = trailing(k))
			return rc;
	}
	if (int rc = root_scalar(k, doc, kind_of(tok[0]), tok.data()))
		return rc;
	if (tok[0] != '{')
		return json_simd_fail(err, HD_PARSE_SHAPE, offset(k, tok.data()),
				      "wrong shape: the payload is not a JSON object");
	return json_simd_fail(err, HD_PARSE_SYNTAX, len, "malformed JSON: unbalanced brackets");
}

/* The root: an element whose value is the document, or a captured object. */
int walk_root(walker &k, od::object &o, const json_schema *s)
{
	json_slot slots[JSON_SLOTS_MAX];
	json_slot self = {};
	const char *start = k.buf;
	uint32_t count = 0;
	int rc;

	memset(slots, 0, sizeof(slots[0]) * s->nslots);
	self.kind = HD_OBJECT;
	while (start < k.end && is_space(*start))
		start++;
	if (s->begin && (rc = s->begin(k.w->ctx)))
		return rc;
	if (k.w->capture_root) {
		if ((rc = push_node(k, HD_OBJECT, {}, &self.node)) ||
		    (rc = capture_fields(k, o, 1, &count)))
			return rc;
	} else if ((rc = walk_fields(k, o, s, slots, 1))) {
		return rc;
	}
	if ((rc = trailing(k)))
		return rc;
	self.raw = { start, size_t(trim_end(start, k.end) - start) };
	if (k.w->capture_root) {
		hd_node *n = &k.w->tree->nodes[self.node];
		n->count = count;
		n->size = uint32_t(k.w->tree->count - self.node);
		n->raw = self.raw;
	}
	return s->done ? s->done(k.w->ctx, &self, slots) : 0;
}

} // namespace

extern "C" {

struct json_simd *json_simd_new(void)
{
	return new (std::nothrow) json_simd();
}

void json_simd_free(struct json_simd *js)
{
	delete js;
}

int json_simd_fail(struct hd_parse_error *err, enum hd_parse_status status, size_t offset,
		   const char *fmt, ...)
{
	va_list ap;

	if (err->status != HD_PARSE_OK)
		return -EPROTO;
	err->status = status;
	err->offset = offset;
	va_start(ap, fmt);
	vsnprintf(err->reason, sizeof(err->reason), fmt, ap);
	va_end(ap);
	return -EPROTO;
}

int json_simd_walk(struct json_simd *js, const char *buf, size_t len, size_t cap,
		   const struct json_walk *w, struct hd_parse_error *err)
{
	od::document doc;
	od::object root;

	if (cap < len + simdjson::SIMDJSON_PADDING || w->root->nslots > JSON_SLOTS_MAX)
		return -EINVAL;
	if (auto e = js->parser.iterate(buf, len, cap).get(doc))
		return stage1_error(buf, len, e, err);
	walker k = { &doc, buf, buf + len, next_backslash(buf, buf + len), w, err };
	if (doc.get_object().get(root))
		return diagnose(js, buf, len, w, err);
	return walk_root(k, root, w->root);
}

} // extern "C"
