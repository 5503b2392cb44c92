/* http_test_server.h - an evhttp server on 127.0.0.1 (port 0) in the caller's loop, plain or
 * TLS with a self-signed certificate made at run time, for http_client's test and benchmark.
 * Static inline functions only, so a program may use part of them. Include cmocka.h
 * first; setup failures are cmocka assertions.
 *   /echo                      the request body back; X-Method, X-Echo (X-Test), X-Expect
 *   /status?code=N[&retry_after=S][&location=L]
 *   /big?n=N[&chunked=1]       N bytes of 'x'
 *   /hang                      never answers */
#ifndef HANDOFFD_HTTP_TEST_SERVER_H
#define HANDOFFD_HTTP_TEST_SERVER_H

#include "net/loop.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* {===== the test server */

struct server {
	struct evhttp *http;
	uint16_t port;
	int connections;	/* accepted so far */
	int requests;		/* served so far */
	SSL_CTX *tls;		/* NULL: plain HTTP */
};

static inline const char *method_name(enum evhttp_cmd_type cmd)
{
	switch (cmd) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_PATCH: return "PATCH";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_HEAD: return "HEAD";
	default: return "OTHER";
	}
}

/* /echo: the request body back, with the method and the X-Test and Expect headers. */
static inline void serve_echo(struct evhttp_request *req)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *test = evhttp_find_header(in, "X-Test");
	const char *expect = evhttp_find_header(in, "Expect");
	struct evbuffer *body = evbuffer_new();

	evbuffer_add_buffer(body, evhttp_request_get_input_buffer(req));
	evhttp_add_header(out, "X-Method", method_name(evhttp_request_get_command(req)));
	evhttp_add_header(out, "X-Echo", test ? test : "");
	if (expect)
		evhttp_add_header(out, "X-Expect", expect);
	evhttp_send_reply(req, 200, "OK", body);
	evbuffer_free(body);
}

/* /status?code=N[&retry_after=S][&location=L] */
static inline void serve_status(struct evhttp_request *req, struct evkeyvalq *q)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	const char *code = evhttp_find_header(q, "code");
	const char *retry = evhttp_find_header(q, "retry_after");
	const char *loc = evhttp_find_header(q, "location");
	struct evbuffer *body = evbuffer_new();

	if (retry)
		evhttp_add_header(out, "Retry-After", retry);
	if (loc)
		evhttp_add_header(out, "Location", loc);
	evbuffer_add_printf(body, "status %s", code);
	evhttp_send_reply(req, atoi(code), "X", body);
	evbuffer_free(body);
}

/* /big?n=N[&chunked=1]: N bytes of 'x', with a Content-Length or chunked. */
static inline void serve_big(struct evhttp_request *req, struct evkeyvalq *q)
{
	size_t n = (size_t)atol(evhttp_find_header(q, "n"));
	const char *chunked = evhttp_find_header(q, "chunked");
	struct evbuffer *body = evbuffer_new();
	char *x = malloc(n);

	memset(x, 'x', n);
	evbuffer_add(body, x, n);
	free(x);
	if (chunked) {
		evhttp_send_reply_start(req, 200, "OK");
		evhttp_send_reply_chunk(req, body);
		evhttp_send_reply_end(req);
	} else {
		evhttp_send_reply(req, 200, "OK", body);
	}
	evbuffer_free(body);
}

static inline void serve(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = evhttp_uri_get_path(uri);
	const char *query = evhttp_uri_get_query(uri);
	struct evkeyvalq q = { 0 };
	struct server *s = arg;

	s->requests++;
	evhttp_parse_query_str(query ? query : "", &q);
	if (strcmp(path, "/echo") == 0)
		serve_echo(req);
	else if (strcmp(path, "/status") == 0)
		serve_status(req, &q);
	else if (strcmp(path, "/big") == 0)
		serve_big(req, &q);
	else if (strcmp(path, "/hang") != 0)	/* /hang: never answer */
		evhttp_send_error(req, 404, NULL);
	evhttp_clear_headers(&q);
}

static inline struct bufferevent *new_connection(struct event_base *base, void *arg)
{
	struct server *s = arg;

	s->connections++;
	if (!s->tls)
		return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	return bufferevent_openssl_socket_new(base, -1, SSL_new(s->tls), BUFFEREVENT_SSL_ACCEPTING,
					      BEV_OPT_CLOSE_ON_FREE);
}

static inline uint16_t fd_port(evutil_socket_t fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	return ntohs(sin.sin_port);
}

static inline void server_start(struct server *s, struct loop *lp, SSL_CTX *tls)
{
	struct evhttp_bound_socket *bound;

	s->tls = tls;
	s->http = evhttp_new(loop_base(lp));
	assert_non_null(s->http);
	evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
				   EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(s->http, serve, s);
	evhttp_set_bevcb(s->http, new_connection, s);
	bound = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
	assert_non_null(bound);
	s->port = fd_port(evhttp_bound_socket_get_fd(bound));
}

static inline void server_stop(struct server *s)
{
	if (s->http)
		evhttp_free(s->http);
	SSL_CTX_free(s->tls);
	memset(s, 0, sizeof(*s));
}

/* }===== */

/* {===== a self-signed certificate made at run time */

struct cert {
	EVP_PKEY *key;
	X509 *x509;
	char ca_path[64];	/* the certificate as a PEM file, to trust it */
};

static inline void add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(x, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

static inline void write_pem(struct cert *c)
{
	int fd;
	FILE *f;

	strcpy(c->ca_path, "/tmp/hd-test-ca-XXXXXX");
	fd = mkstemp(c->ca_path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, c->x509), 1);
	fclose(f);
}

/* SAN is the subjectAltName, e.g. "IP:127.0.0.1". */
static inline void cert_make(struct cert *c, const char *san)
{
	X509_NAME *name;

	c->key = EVP_EC_gen("P-256");
	c->x509 = X509_new();
	assert_non_null(c->key);
	assert_non_null(c->x509);
	X509_set_version(c->x509, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(c->x509), 1);
	X509_gmtime_adj(X509_getm_notBefore(c->x509), -60);
	X509_gmtime_adj(X509_getm_notAfter(c->x509), 3600);
	X509_set_pubkey(c->x509, c->key);
	name = X509_get_subject_name(c->x509);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"handoffd test",
				   -1, -1, 0);
	X509_set_issuer_name(c->x509, name);
	add_ext(c->x509, NID_basic_constraints, "critical,CA:TRUE");
	add_ext(c->x509, NID_subject_alt_name, san);
	assert_true(X509_sign(c->x509, c->key, EVP_sha256()) > 0);
	write_pem(c);
}

static inline SSL_CTX *cert_server_ctx(const struct cert *c)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_use_certificate(ctx, c->x509), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, c->key), 1);
	return ctx;
}

static inline void cert_free(struct cert *c)
{
	unlink(c->ca_path);
	X509_free(c->x509);
	EVP_PKEY_free(c->key);
}

/* }===== */

#endif
