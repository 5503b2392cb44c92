/* websocket_tls.c - what the WebSocket client asks of OpenSSL: the client context (TLS 1.2
 * at least, peers verified, record buffers released), one SSL per connection (SNI and the
 * name or IP check, session reuse through tls_sessions.c), the label on a TLS handshake
 * that did not finish, and giving the record buffers back while a socket is idle. */
#include "directline/websocket.h"

#include "base/log.h"
#include "directline/tls_sessions.h"
#include "directline/websocket_internal.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

/* {===== Context and connection */

SSL_CTX *ws_new_ssl_ctx(struct log *lg, const char *ca_file)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	int ok;

	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* Idle sockets give their 16 KiB+ record buffers back. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) :
		       SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		log_error(lg, "websocket.ca_failed", "ca_file=\"%s\"", ca_file ? ca_file : "(system)");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

SSL *ws_new_ssl(struct websocket *ws, const struct target *t)
{
	SSL *ssl = SSL_new(ws->wc->ssl_ctx);
	bool ok;

	if (!ssl)
		return NULL;
	if (t->ip)	/* no SNI for addresses (RFC 6066 3); check the IP SAN */
		ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), t->host) == 1;
	else
		ok = SSL_set_tlsext_host_name(ssl, t->host) == 1 && SSL_set1_host(ssl, t->host) == 1;
	/* The server is the host:port that starts ws->where. */
	ok = ok && tls_sessions_attach(ws->wc->sessions, ssl, ws->where, strcspn(ws->where, "/")) == 0;
	if (!ok) {
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

/* }===== */

/* {===== During the connection: handshake failure, resumption, idle buffers */

/* libevent's error list mixes SSL_get_error() codes (library 0) with real OpenSSL errors;
 * returns the most recent real one, or 0, and empties the list. */
static unsigned long openssl_error(struct bufferevent *bev)
{
	unsigned long e, real = 0;

	while ((e = bufferevent_get_openssl_error(bev)))
		if (!real && ERR_GET_LIB(e) != 0)
			real = e;
	return real;
}

static bool tcp_was_up(struct bufferevent *bev)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);

	return getpeername(bufferevent_getfd(bev), (struct sockaddr *)&sa, &len) == 0;
}

/* The TLS handshake did not finish: a certificate we refuse, a TLS error, or the TCP
 * connection itself failed (libevent reports that through the TLS layer too). */
void ws_tls_failed(struct websocket *ws, int e)
{
	SSL *ssl = bufferevent_openssl_get_ssl(ws->bev);
	long verify = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
	unsigned long ssl_err = openssl_error(ws->bev);
	char buf[120];

	if (verify != X509_V_OK) {
		ws_fail(ws, WEBSOCKET_END_TLS, -EPROTO, "certificate verify failed: %s",
			X509_verify_cert_error_string(verify));
	} else if (ssl_err) {
		ERR_error_string_n(ssl_err, buf, sizeof(buf));
		ws_fail(ws, WEBSOCKET_END_TLS, -EPROTO, "%s", buf);
	} else if (tcp_was_up(ws->bev)) {
		ws_fail(ws, WEBSOCKET_END_TLS, -EPROTO, "connection closed during the TLS handshake");
	} else {
		ws_fail(ws, WEBSOCKET_END_CONNECT, e ? -e : -ECONNREFUSED, "connect: %s",
			e ? strerror(e) : "connection failed");
	}
}

/* 1 when the TLS session was resumed (tls_sessions.c), so tests and logs can tell. */
int ws_tls_resumed(struct websocket *ws)
{
	SSL *ssl = ws->tls ? bufferevent_openssl_get_ssl(ws->bev) : NULL;

	return ssl && SSL_session_reused(ssl) ? 1 : 0;
}

/* An idle TLS socket gives OpenSSL's record buffers back (about 17 KiB, half of what it
 * holds): SSL_MODE_RELEASE_BUFFERS frees them once a record is consumed, but libevent ends
 * each burst with an SSL_read that finds nothing and leaves a fresh read buffer behind.
 * SSL_free_buffers refuses while a record is partly read or written, so it is always safe. */
void ws_release_tls_buffers(struct websocket *ws)
{
	SSL *ssl = ws->tls && ws->bev ? bufferevent_openssl_get_ssl(ws->bev) : NULL;

	if (ssl && ws->state == ST_OPEN && evbuffer_get_length(bufferevent_get_output(ws->bev)) == 0)
		(void)!SSL_free_buffers(ssl);
}

/* }===== */
