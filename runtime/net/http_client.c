/* http_client.c - libcurl's multi interface driven by the libevent loop.
 * Owns the multi handle, one easy handle per request (kept for reuse once it is done) and
 * each request's deadline; turns curl's results into a response or a stable error (the
 * multi handle's sockets and timer on the loop are http_curl_loop.c's, URLs http_url.c's,
 * copying headers out of libcurl http_curl_headers.c's). Callers decide what a status
 * means, and retries.
 *
 * Callbacks into callers run only from drain() (completions), on_deadline() (timeouts)
 * and http_client_free() (cancellations), never from inside a libcurl call, so callers may
 * start, cancel and free from them. `depth` counts those frames so that a free from inside
 * one releases the client only when the outermost frame unwinds. */
#include "net/http_client.h"

#include "base/clock.h"
#include "base/log.h"
#include "net/http_curl_headers.h"
#include "net/http_curl_loop.h"
#include "net/http_url.h"
#include "net/loop.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define METHOD_MAX 16		/* longest method token we accept, NUL included */
/* Finished easy handles kept for the next requests: a new one costs libcurl a 5 KiB
 * zeroed struct and, on its first transfer, a 16 KiB buffer (about 22 KiB each here). */
#define EASY_POOL_MAX 16
/* URLs kept parsed: parsing one costs libcurl about 5k instructions, and requests go to
 * a few URLs again and again (a hub's endpoint, a busy conversation's activities). */
#define URL_CACHE_MAX 8
#define HEADER_LINE_MAX 512	/* a longer "Name: value" line is built on the heap */
#define LOG_URL_MAX 512		/* a longer URL is cut in the debug line */
/* libcurl 7.88 writes a POSTFIELDS body under 64 KiB in the same send() as the request's
 * head (its MAX_INITIAL_POST_SIZE); a longer one follows on its own, later. */
#define BODY_WITH_HEAD_MAX (64 * 1024 - 1)

struct http_client {
	struct loop *lp;
	struct log *lg;
	CURLM *multi;
	CURLSH *share;			/* TLS sessions, so new connections resume them */
	struct http_curl_loop curl_loop;	/* the multi handle's sockets and timer */
	struct http_transfer *transfers;	/* in flight, doubly linked */
	unsigned in_flight;
	struct http_client_opts opts;	/* defaults filled in; strings are owned copies */
	CURL *idle[EASY_POOL_MAX];	/* configured easy handles, ready for a request */
	unsigned nidle;
	struct http_url_cache urls;
	int depth;			/* frames that are running callers' callbacks */
	bool closing;			/* http_client_free() was called */
};

struct http_transfer {
	struct http_client *hc;
	struct http_transfer *prev, *next;
	CURL *easy;
	struct checked_url *url;	/* a reference */
	struct curl_slist *headers;
	struct loop_timer *deadline;
	http_done_fn done;
	void *arg;
	char method[METHOD_MAX];
	char *upload;			/* a no_resend request's body; read once */
	size_t upload_len, upload_off;
	char *body;			/* the response body so far */
	size_t body_len, body_cap, max_body;
	int write_err;			/* why on_body refused data: -EFBIG or -ENOMEM */
	uint64_t started_ms;
	bool reset;			/* the handle needs curl_easy_reset before reuse */
	bool copied_body;		/* COPYPOSTFIELDS holds a copy of the body */
	bool finished;			/* the callback has started */
	bool held_back;			/* may_send said no */
	bool no_resend;			/* libcurl must not send the request again by itself */
	bool asked;			/* on_prerequest ran: the request left once */
	long redirects;			/* redirects followed when it did */
	bool resend_refused;		/* on_prerequest refused libcurl's own resend */
	bool (*may_send)(void *arg);
	void *may_send_arg;
};

int http_client_global_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -EIO;
}

void http_client_global_cleanup(void)
{
	curl_global_cleanup();
}

const char *http_client_strerror(int err)
{
	switch (err) {
	case 0: return "ok";
	case -ETIMEDOUT: return "timeout";
	case -ECONNREFUSED: return "connection refused";
	case -EHOSTUNREACH: return "host unreachable";
	case -ENXIO: return "resolve failed";
	case -EPROTO: return "tls error";
	case -EFBIG: return "body too large";
	case -ECANCELED: return "cancelled";
	case -EBUSY: return "too many requests in flight";
	case -EPIPE: return "send failed";
	case -ECONNRESET: return "connection reset";
	case -EBADMSG: return "bad response";
	case -ELOOP: return "too many redirects";
	case -EINVAL: return "invalid request";
	case -ENOMEM: return "out of memory";
	case -ESHUTDOWN: return "shutting down";
	case -EPERM: return "held back";
	default: return "request failed";
	}
}

const char *http_client_response_header(const struct http_response *res, const char *name)
{
	for (size_t i = 0; i < res->nheaders; i++)
		if (strcasecmp(res->headers[i].name, name) == 0)
			return res->headers[i].value;
	return NULL;
}

unsigned http_client_in_flight(const struct http_client *hc)
{
	return hc->in_flight;
}

/* {===== building a request */

static bool valid_method(const char *m)
{
	size_t n = strspn(m, "ABCDEFGHIJKLMNOPQRSTUVWXYZ");

	return n > 0 && n < METHOD_MAX && m[n] == '\0';
}

/* A header must not smuggle a second one in (CR/LF) nor hide a colon in its name. */
static bool valid_header(const struct http_header *h)
{
	size_t n;

	if (!h->name || !h->value)
		return false;
	n = strcspn(h->name, ":\r\n \t");
	return n > 0 && h->name[n] == '\0' && !strpbrk(h->value, "\r\n");
}

static int append_line(struct curl_slist **list, const char *line)
{
	struct curl_slist *next = curl_slist_append(*list, line);

	if (!next)
		return -ENOMEM;
	*list = next;
	return 0;
}

static int append_header(struct curl_slist **list, const char *name, const char *value)
{
	size_t nlen = strlen(name), vlen = strlen(value), len = nlen + vlen + 3;
	char small[HEADER_LINE_MAX];
	char *line = len <= sizeof(small) ? small : malloc(len);
	int rc;

	if (!line)
		return -ENOMEM;
	memcpy(line, name, nlen);
	/* "Name;" is curl's way to send an empty value; "Name:" would remove the header. */
	if (vlen) {
		memcpy(line + nlen, ": ", 2);
		memcpy(line + nlen + 2, value, vlen + 1);
	} else {
		memcpy(line + nlen, ";", 2);
	}
	rc = append_line(list, line);
	if (line != small)
		free(line);
	return rc;
}

static int build_headers(struct http_transfer *t, const struct http_request *req)
{
	bool has_expect = false;
	int rc;

	for (size_t i = 0; i < req->nheaders; i++) {
		if (!valid_header(&req->headers[i]))
			return -EINVAL;
		has_expect |= strcasecmp(req->headers[i].name, "Expect") == 0;
		rc = append_header(&t->headers, req->headers[i].name, req->headers[i].value);
		if (rc < 0)
			return rc;
	}
	/* Without this, curl sends "Expect: 100-continue" for large bodies and waits a second
	 * for servers that ignore it. */
	return has_expect ? 0 : append_line(&t->headers, "Expect:");
}

static bool method_has_body(const char *m)
{
	return strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0;
}

/* With the options used here, setopt fails only for want of memory. */
static int setopt_result(int failed)
{
	return failed ? -ENOMEM : 0;
}

/* may_send's question, once the request is about to leave. */
static bool held_back(struct http_transfer *t)
{
	if (t->may_send && !t->may_send(t->may_send_arg))
		t->held_back = true;
	return t->held_back;
}

/* Only a no_resend body too long to leave with the head is read: libcurl asks only for
 * bodies it was told to read, but the callback is set on every handle (see
 * configure_handle). libcurl writes such a body after the request line and headers, a
 * loop turn or more later: may_send is asked again before the first byte of it, so a
 * request whose body did not leave is cut short (the server drops an unfinished request). */
static size_t read_upload(char *buf, size_t size, size_t n, void *arg)
{
	struct http_transfer *t = arg;
	size_t left = t->upload_len - t->upload_off, want = size * n < left ? size * n : left;

	if (t->upload_off == 0 && held_back(t))
		return CURL_READFUNC_ABORT;
	if (want)
		memcpy(buf, t->upload + t->upload_off, want);
	t->upload_off += want;
	return want;
}

/* libcurl rewinds the body only to send it again; once any of it went out, refuse. */
static int seek_upload(void *arg, curl_off_t offset, int origin)
{
	struct http_transfer *t = arg;

	return offset == 0 && origin == SEEK_SET && t->upload_off == 0 ? CURL_SEEKFUNC_OK
									 : CURL_SEEKFUNC_FAIL;
}

/* A long no_resend body through the read callback, asking may_send again before it. */
static int set_upload(struct http_transfer *t, const struct http_request *req)
{
	CURL *e = t->easy;
	int failed = 0;

	t->upload = malloc(req->body_len ? req->body_len : 1);
	if (!t->upload)
		return -ENOMEM;
	memcpy(t->upload, req->body, req->body_len);
	t->upload_len = req->body_len;
	failed |= curl_easy_setopt(e, CURLOPT_POST, 1L);
	failed |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
	return setopt_result(failed);
}

/* Every method option is set on every request (a pooled handle keeps the last one's):
 * HTTPGET, POST or COPYPOSTFIELDS choose the method. HEAD and custom methods are not
 * undone that way: their handle is reset when it comes back (t->reset). */
static int set_method(struct http_transfer *t, const struct http_request *req)
{
	bool head = strcmp(t->method, "HEAD") == 0;
	CURL *e = t->easy;
	int failed = 0;

	if ((!req->body && req->body_len) || (head && req->body))
		return -EINVAL;
	failed |= curl_easy_setopt(e, CURLOPT_READDATA, t);
	failed |= curl_easy_setopt(e, CURLOPT_SEEKDATA, t);
	if (head) {
		t->reset = true;
		return setopt_result(failed | curl_easy_setopt(e, CURLOPT_NOBODY, 1L));
	}
	t->no_resend = req->no_resend;
	if (req->no_resend && req->body && req->body_len > BODY_WITH_HEAD_MAX) {
		failed |= set_upload(t, req) < 0;
	} else if (req->body || method_has_body(t->method)) {
		/* The size goes first: with it, COPYPOSTFIELDS copies bodies holding NUL bytes. */
		failed |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		failed |= curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body ? req->body : "");
		t->copied_body = true;
	} else {
		failed |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	}
	if (strcmp(t->method, "GET") != 0 && strcmp(t->method, "POST") != 0) {
		failed |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->method);
		t->reset = true;
	}
	return setopt_result(failed);
}

static size_t on_body(char *data, size_t size, size_t n, void *arg);

static int set_limits(struct http_transfer *t, const struct http_request *req)
{
	const struct http_client_opts *o = &t->hc->opts;
	uint32_t connect_ms = req->connect_timeout_ms ? req->connect_timeout_ms
						       : o->connect_timeout_ms;
	CURL *e = t->easy;
	int failed = 0;

	t->max_body = req->max_body ? req->max_body : o->max_body;
	/* MAXFILESIZE fails early on a Content-Length over the cap; on_body catches the rest. */
	failed |= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)t->max_body);
	failed |= curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	/* The whole-request timeout is our deadline timer, not CURLOPT_TIMEOUT_MS: libcurl
	 * 7.88 does not time out transfers queued for a connection. */
	failed |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
	failed |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, req->follow_redirects ? 1L : 0L);
	return setopt_result(failed);
}

/* CURLOPT_PREREQFUNCTION: right before each request of the transfer leaves. Another one
 * with no redirect in between is libcurl sending the request again by itself, its reused
 * connection having died before any answer: a no_resend request refuses that, since the
 * server may have acted on the first. */
static int on_prerequest(void *arg, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
	struct http_transfer *t = arg;
	long redirects = 0;

	(void)primary_ip, (void)local_ip, (void)primary_port, (void)local_port;
	curl_easy_getinfo(t->easy, CURLINFO_REDIRECT_COUNT, &redirects);
	if (t->no_resend && t->asked && redirects == t->redirects) {
		t->resend_refused = true;
		return CURL_PREREQFUNC_ABORT;
	}
	t->asked = true;
	t->redirects = redirects;
	return held_back(t) ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}

static int set_transport(struct http_transfer *t, const struct http_request *req)
{
	CURL *e = t->easy;
	int failed = 0;

	t->may_send = req->may_send;
	t->may_send_arg = req->may_send_arg;
	failed |= curl_easy_setopt(e, CURLOPT_PRIVATE, t);
	failed |= curl_easy_setopt(e, CURLOPT_PREREQDATA, t);
	/* The handle http_url_get() gave: libcurl 7.88 then copies it instead of parsing the
	 * URL string again. The string goes too: a pooled handle would otherwise keep
	 * the last request's as its effective URL (libcurl prints a CURLU back into a string
	 * only on a fresh handle, and a string costs it nothing more here). */
	failed |= curl_easy_setopt(e, CURLOPT_URL, t->url->str);
	failed |= curl_easy_setopt(e, CURLOPT_CURLU, t->url->handle);
	failed |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
	/* A CA of the request's own replaces the client's until the handle is reset. */
	if (req->ca_file) {
		failed |= curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file);
		t->reset = true;
	}
	return setopt_result(failed);
}

/* The options every request of HC shares, set once per easy handle: the pooled handles
 * keep them, so a request sets only what is its own (set_method, set_transport,
 * set_limits). */
static int configure_handle(struct http_client *hc, CURL *e)
{
	const struct http_client_opts *o = &hc->opts;
	int failed = 0;

	failed |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	failed |= curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	failed |= curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)HTTP_CLIENT_MAX_REDIRECTS);
	failed |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	failed |= curl_easy_setopt(e, CURLOPT_SHARE, hc->share);
	/* Verification is not an option: a test CA goes in ca_file instead. */
	failed |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	failed |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (o->ca_file)
		failed |= curl_easy_setopt(e, CURLOPT_CAINFO, o->ca_file);
	if (o->proxy)
		failed |= curl_easy_setopt(e, CURLOPT_PROXY, o->proxy);
	/* No proxy at all: no_proxy cannot matter, and an empty list spares libcurl its
	 * environment lookups on every request. */
	if (o->proxy && !*o->proxy)
		failed |= curl_easy_setopt(e, CURLOPT_NOPROXY, "");
	failed |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	failed |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	failed |= curl_easy_setopt(e, CURLOPT_READFUNCTION, read_upload);
	failed |= curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_upload);
	failed |= curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prerequest);
	failed |= http_curl_loop_configure(&hc->curl_loop, e) < 0;
	/* No CURLOPT_PIPEWAIT: in libcurl 7.88 a transfer waiting on a connection that turns
	 * out to be HTTP/1.1 can stall until its connect timeout. */
	return setopt_result(failed);
}

/* A pooled handle, configured for HC, or a new one. */
static CURL *easy_take(struct http_client *hc)
{
	CURL *e;

	if (hc->nidle)
		return hc->idle[--hc->nidle];
	e = curl_easy_init();
	if (e && configure_handle(hc, e) < 0) {
		curl_easy_cleanup(e);
		return NULL;
	}
	return e;
}

/* Keeps T's handle for a later request, or frees it. A handle whose request changed what
 * set_method() does not set again (method, CA) is reset and configured anew; otherwise
 * only the body copy goes, the per-request options being set again by the next one. */
static void easy_put(struct http_transfer *t)
{
	struct http_client *hc = t->hc;
	CURL *e = t->easy;

	if (!e)
		return;
	if (hc->closing || hc->nidle == EASY_POOL_MAX) {
		curl_easy_cleanup(e);
		return;
	}
	if (t->reset) {
		curl_easy_reset(e);
		if (configure_handle(hc, e) < 0) {
			curl_easy_cleanup(e);
			return;
		}
	} else if (t->copied_body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);	/* frees the copy */
	}
	hc->idle[hc->nidle++] = e;
}

static void transfer_free(struct http_transfer *t)
{
	if (!t)
		return;
	easy_put(t);
	http_url_release(t->url);
	curl_slist_free_all(t->headers);
	loop_timer_free(t->deadline);
	free(t->upload);
	free(t->body);
	free(t);
}

static void on_deadline(void *arg);

static int transfer_setup(struct http_transfer *t, const struct http_request *req)
{
	int rc;

	if (!valid_method(t->method))
		return -EINVAL;
	rc = http_url_get(&t->hc->urls, req->url, &t->url);
	if (rc == 0)
		rc = build_headers(t, req);
	if (rc < 0)
		return rc;
	t->easy = easy_take(t->hc);
	t->deadline = loop_timer_new(t->hc->lp, on_deadline, t);
	if (!t->easy || !t->deadline)
		return -ENOMEM;
	rc = set_method(t, req);
	if (rc == 0)
		rc = set_transport(t, req);
	return rc < 0 ? rc : set_limits(t, req);
}

static int transfer_new(struct http_client *hc, const struct http_request *req,
			struct http_transfer **out)
{
	struct http_transfer *t = calloc(1, sizeof(*t));
	const char *method = req->method ? req->method : "GET";
	int rc;

	if (!t)
		return -ENOMEM;
	t->hc = hc;
	if (strlen(method) < METHOD_MAX)
		strcpy(t->method, method);
	rc = transfer_setup(t, req);
	if (rc < 0) {
		t->reset = true;	/* whatever options it got so far go */
		transfer_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

/* }===== */

/* {===== in flight */

static void attach(struct http_transfer *t, uint32_t timeout_ms)
{
	struct http_client *hc = t->hc;

	t->next = hc->transfers;
	if (hc->transfers)
		hc->transfers->prev = t;
	hc->transfers = t;
	hc->in_flight++;
	t->started_ms = clock_mono_ms();
	loop_timer_start(t->deadline, timeout_ms, 0);
}

/* Takes T out of the client and out of libcurl; its memory stays. */
static void detach(struct http_transfer *t)
{
	struct http_client *hc = t->hc;

	if (t->prev)
		t->prev->next = t->next;
	else
		hc->transfers = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
	hc->in_flight--;
	loop_timer_stop(t->deadline);
	curl_multi_remove_handle(hc->multi, t->easy);
}

int http_client_request(struct http_client *hc, const struct http_request *req,
			http_done_fn done, void *arg, struct http_transfer **out)
{
	struct http_transfer *t;
	int rc;

	if (hc->closing)
		return -ESHUTDOWN;
	if (!req || !req->url || !done)
		return -EINVAL;
	if (hc->in_flight >= hc->opts.max_in_flight)
		return -EBUSY;
	rc = transfer_new(hc, req, &t);
	if (rc < 0)
		return rc;
	t->done = done;
	t->arg = arg;
	if (curl_multi_add_handle(hc->multi, t->easy) != CURLM_OK) {
		transfer_free(t);
		return -ENOMEM;
	}
	attach(t, req->timeout_ms ? req->timeout_ms : hc->opts.timeout_ms);
	if (out)
		*out = t;
	return 0;
}

void http_client_cancel(struct http_transfer *t)
{
	if (!t || t->finished)
		return;
	detach(t);
	t->reset = true;	/* stopped half way: start its handle from scratch */
	transfer_free(t);
}

/* Collects the body, up to max_body bytes; refusing more makes curl fail the transfer. */
static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct http_transfer *t = arg;
	size_t len = size * n, cap;
	char *p;

	if (len > t->max_body - t->body_len) {
		t->write_err = -EFBIG;
		return 0;
	}
	if (t->body_len + len + 1 > t->body_cap) {
		cap = t->body_cap ? t->body_cap * 2 : 1024;
		if (cap < t->body_len + len + 1)
			cap = t->body_len + len + 1;
		if (cap > t->max_body + 1)
			cap = t->max_body + 1;
		p = realloc(t->body, cap);
		if (!p) {
			t->write_err = -ENOMEM;
			return 0;
		}
		t->body = p;
		t->body_cap = cap;
	}
	memcpy(t->body + t->body_len, data, len);
	t->body_len += len;
	t->body[t->body_len] = '\0';
	return len;
}

/* }===== */

/* {===== completion */

static int connect_error(CURL *e)
{
	long os_errno = 0;

	curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &os_errno);
	return os_errno == ECONNREFUSED ? -ECONNREFUSED : -EHOSTUNREACH;
}

static int result_error(const struct http_transfer *t, CURLcode rc)
{
	switch (rc) {
	case CURLE_OK: return 0;
	case CURLE_WRITE_ERROR: return t->write_err ? t->write_err : -EIO;
	case CURLE_FILESIZE_EXCEEDED: return -EFBIG;
	case CURLE_OPERATION_TIMEDOUT: return -ETIMEDOUT;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY: return -ENXIO;
	case CURLE_COULDNT_CONNECT: return connect_error(t->easy);
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS: return -EPROTO;
	case CURLE_SEND_ERROR: return -EPIPE;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_FAIL_REWIND:	/* a no_resend request's connection died */
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE: return -ECONNRESET;
	case CURLE_TOO_MANY_REDIRECTS: return -ELOOP;
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_BAD_CONTENT_ENCODING:
	case CURLE_UNSUPPORTED_PROTOCOL: return -EBADMSG;
	case CURLE_OUT_OF_MEMORY: return -ENOMEM;
	case CURLE_ABORTED_BY_CALLBACK: return t->held_back ? -EPERM : t->resend_refused ? -ECONNRESET : -EIO;
	default: return -EIO;
	}
}

/* "Sent" means libcurl got as far as writing the request: its pretransfer time is set
 * (never 0 once reached, and kept across curl's own retries). */
static bool request_sent(CURL *e)
{
	curl_off_t us = 0;

	curl_easy_getinfo(e, CURLINFO_PRETRANSFER_TIME_T, &us);
	return us > 0;
}

/* Fills RES for T's outcome; returns ERR, or -ENOMEM if the headers cannot be copied. */
static int build_response(struct http_transfer *t, int err, struct http_response *res,
			  char **hdrs)
{
	long status = 0;

	memset(res, 0, sizeof(*res));
	res->body = "";
	res->sent = !t->held_back && request_sent(t->easy);
	res->total_ms = clock_mono_ms() - t->started_ms;
	if (err)
		return err;
	if (http_curl_headers_copy(t->easy, hdrs, &res->headers, &res->nheaders) < 0)
		return -ENOMEM;
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
	res->status = (int)status;
	if (t->body) {
		res->body = t->body;
		res->body_len = t->body_len;
	}
	return 0;
}

static void log_done(const struct http_transfer *t, const struct http_response *res, int err)
{
	char url[LOG_URL_MAX];
	char *full = NULL;

	if (log_get_level(t->hc->lg) > LEVEL_DEBUG)
		return;
	curl_url_get(t->url->handle, CURLUPART_URL, &full, 0);
	http_url_redact(full ? full : "", url, sizeof(url));
	curl_free(full);
	if (err)
		log_debug(t->hc->lg, "http.done", "method=%s url=%s err=\"%s\" sent=%d ms=%llu",
			  t->method, url, http_client_strerror(err), res->sent,
			  (unsigned long long)res->total_ms);
	else
		log_debug(t->hc->lg, "http.done", "method=%s url=%s status=%d bytes=%zu ms=%llu",
			  t->method, url, res->status, res->body_len,
			  (unsigned long long)res->total_ms);
}

/* Delivers T's outcome and frees T. Runs inside an enter()/leave() pair. */
static void finish(struct http_transfer *t, CURLcode rc)
{
	struct http_response res;
	char *hdrs = NULL;
	int err = build_response(t, result_error(t, rc), &res, &hdrs);

	log_done(t, &res, err);
	detach(t);
	t->reset |= rc != CURLE_OK;	/* a failed transfer's handle starts from scratch */
	t->finished = true;
	t->done(&res, err, t->arg);
	free(hdrs);
	transfer_free(t);
}

static void destroy(struct http_client *hc)
{
	while (hc->nidle)	/* before the share they are attached to */
		curl_easy_cleanup(hc->idle[--hc->nidle]);
	http_url_cache_clear(&hc->urls);
	curl_multi_cleanup(hc->multi);	/* closes the kept connections, unparking them */
	http_curl_loop_clear(&hc->curl_loop);
	curl_share_cleanup(hc->share);
	free((char *)hc->opts.ca_file);
	free((char *)hc->opts.proxy);
	free(hc);
}

static void enter(struct http_client *hc)
{
	hc->depth++;
}

/* Ends a frame that ran callbacks: the client is freed here if one of them asked to. */
static void leave(struct http_client *hc)
{
	if (--hc->depth == 0 && hc->closing)
		destroy(hc);
}

static void drain(struct http_client *hc)
{
	CURLMsg *msg;
	char *t;
	int left;

	enter(hc);
	/* A free inside a callback removes every other handle, and their messages with them. */
	while ((msg = curl_multi_info_read(hc->multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
		finish((struct http_transfer *)t, msg->data.result);
	}
	leave(hc);
}

/* What http_curl_loop runs after each of libcurl's socket actions. */
static void after_action(void *arg)
{
	drain(arg);	/* may free the client */
}

static void on_deadline(void *arg)
{
	struct http_transfer *t = arg;
	struct http_client *hc = t->hc;

	enter(hc);
	finish(t, CURLE_OPERATION_TIMEDOUT);
	leave(hc);
}

/* }===== */

/* {===== the client */

static void fill_defaults(struct http_client_opts *o)
{
	if (!o->max_in_flight)
		o->max_in_flight = HTTP_CLIENT_MAX_IN_FLIGHT;
	if (!o->max_host_connections)
		o->max_host_connections = HTTP_CLIENT_MAX_HOST_CONNECTIONS;
	if (!o->max_total_connections)
		o->max_total_connections = HTTP_CLIENT_MAX_TOTAL_CONNECTIONS;
	if (!o->timeout_ms)
		o->timeout_ms = HTTP_CLIENT_TIMEOUT_MS;
	if (!o->connect_timeout_ms)
		o->connect_timeout_ms = HTTP_CLIENT_CONNECT_TIMEOUT_MS;
	if (!o->max_body)
		o->max_body = HTTP_CLIENT_MAX_BODY;
}

/* The variables libcurl 7.88 reads to pick a proxy for http and https URLs (an empty one
 * counts as unset). */
static bool proxy_in_environment(void)
{
	static const char *const names[] = { "http_proxy", "https_proxy", "HTTPS_PROXY",
					     "all_proxy", "ALL_PROXY" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *v = getenv(names[i]);

		if (v && *v)
			return true;
	}
	return false;
}

static int copy_opts(struct http_client *hc, const struct http_client_opts *opts)
{
	const char *ca, *proxy;

	if (opts)
		hc->opts = *opts;
	fill_defaults(&hc->opts);
	ca = hc->opts.ca_file;
	proxy = hc->opts.proxy;
	/* libcurl's default with no proxy variable set is no proxy: saying so once here saves
	 * it five getenv() calls and their bookkeeping per request. */
	if (!proxy && !proxy_in_environment())
		proxy = "";
	hc->opts.ca_file = ca ? strdup(ca) : NULL;
	hc->opts.proxy = proxy ? strdup(proxy) : NULL;
	return (ca && !hc->opts.ca_file) || (proxy && !hc->opts.proxy) ? -ENOMEM : 0;
}

static int setup_multi(struct http_client *hc)
{
	CURLM *m = hc->multi;
	const struct http_client_opts *o = &hc->opts;
	int rc = 0;

	rc |= curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o->max_host_connections);
	rc |= curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)o->max_total_connections);
	/* Keep as many idle connections as we may open, for reuse. */
	rc |= curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)o->max_total_connections);
	rc |= curl_share_setopt(hc->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	return rc ? -EINVAL : 0;
}

struct http_client *http_client_new(struct loop *lp, struct log *lg,
				    const struct http_client_opts *opts)
{
	struct http_client *hc = calloc(1, sizeof(*hc));

	if (!hc)
		return NULL;
	hc->lp = lp;
	hc->lg = lg;
	hc->multi = curl_multi_init();
	hc->share = curl_share_init();
	if (copy_opts(hc, opts) < 0 || !hc->multi || !hc->share ||
	    http_curl_loop_init(&hc->curl_loop, lp, hc->multi, after_action, hc) < 0 || setup_multi(hc) < 0) {
		destroy(hc);
		return NULL;
	}
	return hc;
}

void http_client_free(struct http_client *hc)
{
	struct http_response res = { .body = "" };
	struct http_transfer *t;

	if (!hc || hc->closing)
		return;
	hc->closing = true;
	enter(hc);
	/* Pop one at a time: a callback may cancel others. */
	while ((t = hc->transfers)) {
		res.sent = request_sent(t->easy);
		res.total_ms = clock_mono_ms() - t->started_ms;
		detach(t);
		t->finished = true;
		t->done(&res, -ECANCELED, t->arg);
		transfer_free(t);
	}
	leave(hc);
}

/* }===== */
