/* http_client.h - outbound HTTP(S) requests with completion callbacks on the loop.
 * libcurl's multi interface does the protocol work; this part drives it from the libevent
 * loop, copies everything a request needs, bounds what comes back and turns failures into
 * a few stable errors. What a status means, retries and backoff belong to the callers
 * (directline.c, bindings/http.c).
 *
 * Lifetime rules, in one place:
 * - http_client_request() either fails (negative errno, the callback is never called) or
 *   succeeds and then the callback runs exactly once, later, from the loop, never inside
 *   http_client_request() itself, unless the request is cancelled first with
 *   http_client_cancel() (then it never runs).
 * - The struct http_transfer handle is valid from a successful http_client_request() until
 *   its callback starts or http_client_cancel() returns. Owners that keep the handle clear it
 *   at the top of their callback. Cancelling from inside the request's own callback is a
 *   harmless no-op; cancelling after the callback returned is a use-after-free.
 * - http_client_free() calls the callback of every request still in flight with
 *   -ECANCELED before it returns, so owners can release per-request state. It may be called
 *   from inside any completion callback of the same client (the memory is released when the
 *   callback returns). During free, new requests are refused with -ESHUTDOWN.
 *
 * Errors (negative errno; http_client_strerror() gives the stable, lowercase reason):
 *   -ETIMEDOUT "timeout", -ECONNREFUSED "connection refused", -EHOSTUNREACH "host unreachable",
 *   -ENXIO "resolve failed", -EPROTO "tls error", -EFBIG "body too large",
 *   -ECANCELED "cancelled", -EBUSY "too many requests in flight", -EPIPE "send failed",
 *   -ECONNRESET "connection reset", -EBADMSG "bad response", -ELOOP "too many redirects",
 *   -EINVAL "invalid request", -ENOMEM "out of memory", -ESHUTDOWN "shutting down",
 *   -EPERM "held back" (may_send said no), anything else "request failed". */
#ifndef HANDOFFD_HTTP_CLIENT_H
#define HANDOFFD_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Defaults for struct http_client_opts fields left at 0. */
#define HTTP_CLIENT_MAX_IN_FLIGHT 4096		/* accepted requests not yet completed */
#define HTTP_CLIENT_MAX_HOST_CONNECTIONS 32	/* open connections to one host:port */
#define HTTP_CLIENT_MAX_TOTAL_CONNECTIONS 256	/* open connections, all hosts */
#define HTTP_CLIENT_TIMEOUT_MS 30000		/* whole request, queueing included */
#define HTTP_CLIENT_CONNECT_TIMEOUT_MS 10000	/* TCP and TLS handshake */
#define HTTP_CLIENT_MAX_BODY (4u << 20)		/* response body bytes */
#define HTTP_CLIENT_MAX_REDIRECTS 5		/* when a request asks to follow them */
/* Response headers need no bound of ours: libcurl refuses more than 300 KiB of them. */

struct loop;
struct log;
struct http_client;
struct http_transfer;

struct http_header {
	const char *name;
	const char *value;
};

struct http_client_opts {
	unsigned max_in_flight;		/* beyond it, requests fail with -EBUSY */
	unsigned max_host_connections;	/* beyond them, requests wait in libcurl's queue */
	unsigned max_total_connections;
	uint32_t timeout_ms;		/* default for requests that leave it 0 */
	uint32_t connect_timeout_ms;	/* likewise */
	size_t max_body;		/* likewise */
	const char *ca_file;		/* PEM bundle for every request; NULL: the system store */
	/* NULL: libcurl's default (https_proxy..., no_proxy), as the environment is when the
	 * client is created; "": never */
	const char *proxy;
};

/* What to send. Everything is copied by http_client_request(): the caller may free or
 * reuse it as soon as the call returns. */
struct http_request {
	const char *method;		/* upper-case token; NULL: "GET" */
	const char *url;		/* http:// or https:// only */
	const struct http_header *headers;	/* sent as given; no CR or LF allowed */
	size_t nheaders;
	const char *body;		/* may hold NUL bytes; NULL: none (POST/PUT/PATCH send 0 bytes) */
	size_t body_len;
	uint32_t timeout_ms;		/* 0: the client's default */
	uint32_t connect_timeout_ms;	/* 0: the client's default */
	size_t max_body;		/* 0: the client's default; exceeding it fails with -EFBIG */
	const char *ca_file;		/* NULL: the client's */
	bool follow_redirects;		/* off unless asked; then at most HTTP_CLIENT_MAX_REDIRECTS */
	/* libcurl sends a request again by itself when a reused connection dies before any
	 * answer. For a POST that is not idempotent (Direct Line activities) that can deliver
	 * it twice: with NO_RESEND the request fails instead (-ECONNRESET, sent true). */
	bool no_resend;
	/* Asked right before the request's bytes leave (its connection up, libcurl's
	 * pre-request callback) and, for a no_resend body of 64 KiB or more (sent after the
	 * head), again right before the body's first byte: false fails it with -EPERM, sent
	 * false (a request cut before its body is one no server acts on). A cluster member
	 * passes its lease: a process that stalled between starting a request and sending it
	 * must not send it once another instance may have taken over. NULL: always. */
	bool (*may_send)(void *arg);
	void *may_send_arg;
};

/* Borrowed by the callback: every pointer in it dies when the callback returns. */
struct http_response {
	int status;			/* 100..599; 0 when err != 0 */
	const struct http_header *headers;	/* the final response's, in arrival order */
	size_t nheaders;
	const char *body;		/* NUL-terminated for convenience; "" when empty */
	size_t body_len;
	uint64_t total_ms;		/* from http_client_request() to completion */
	/* false: the request provably never left this process (refused, unreachable, resolve
	 * or TLS handshake failure, timed out while connecting or queued): resending a POST
	 * cannot duplicate it. true: some of it may have reached the server, even on error. */
	bool sent;
};

/* Any HTTP status, 4xx and 5xx included, is a response with err == 0. On error, RES is
 * still given with status 0: only its `sent` and `total_ms` mean anything. */
typedef void (*http_done_fn)(const struct http_response *res, int err, void *arg);

/* curl_global_init/cleanup: main calls them once, before the first client and after the
 * last one is freed (tests likewise). Returns 0 or -EIO. */
int http_client_global_init(void);
void http_client_global_cleanup(void);

/* OPTS may be NULL (all defaults); its strings are copied. Borrows LP and LG, which must
 * outlive the client. NULL on failure. */
struct http_client *http_client_new(struct loop *lp, struct log *lg,
				    const struct http_client_opts *opts);
/* Cancels everything in flight (callbacks get -ECANCELED) and frees the client. NULL is a
 * no-op. Safe inside a completion callback of HC. */
void http_client_free(struct http_client *hc);

/* Starts REQ. Returns 0 and, if OUT is not NULL, a handle for http_client_cancel();
 * or -EINVAL (bad method, URL or header), -EBUSY (in-flight cap), -ESHUTDOWN, -ENOMEM,
 * and then DONE is never called. Safe inside any completion callback. */
int http_client_request(struct http_client *hc, const struct http_request *req,
			http_done_fn done, void *arg, struct http_transfer **out);
/* Stops T and frees it; its callback is never called. NULL is a no-op. See the lifetime
 * rules above: T must not have completed. */
void http_client_cancel(struct http_transfer *t);
/* Requests accepted and not yet completed or cancelled. */
unsigned http_client_in_flight(const struct http_client *hc);

/* The first value of header NAME (case-insensitive) in RES, or NULL. */
const char *http_client_response_header(const struct http_response *res, const char *name);
/* A short, lowercase, stable reason for ERR (a value from the list above). */
const char *http_client_strerror(int err);

#endif
