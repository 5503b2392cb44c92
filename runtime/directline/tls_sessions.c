/* tls_sessions.c - a client's TLS sessions kept per server, for resumption.
 *
 * Why: a full handshake makes every connection parse and keep its own copy of the server's
 * certificate chain (several KiB each, for 10,000 streams to one server) and costs a
 * signature check. A resumed connection keeps a reference to the session it resumed, whose
 * certificates are shared and refcounted, and skips the certificate exchange. A session is
 * only offered to the server (host:port) it was made with, whose certificate and host name
 * were verified then; a server that refuses it makes a full, verified handshake. */
#include "directline/tls_sessions.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Servers one client talks to: the bot's Direct Line host, a few at most. */
#define TLS_SESSIONS_MAX 16

struct tls_server {
	struct tls_server *next;
	SSL_SESSION *last;	/* the newest session from this server; NULL before the first */
	size_t len;
	char name[];		/* host:port */
};

struct tls_sessions {
	struct tls_server *servers;
	size_t count;
	int ex_index;		/* SSL ex_data slot: the struct tls_server of each SSL */
};

/* The index of the cache in SSL_CTX ex_data, made once per process. */
static int ctx_index(void)
{
	static int index = -1;

	if (index < 0)
		index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	return index;
}

/* OpenSSL's new-session callback. We keep a copy: OpenSSL marks the session a connection
 * holds as not resumable when that connection is freed without a TLS shutdown, which a
 * dropped socket always is. The copy shares the certificates (refcounted). */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct tls_sessions *ts = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_index());
	struct tls_server *srv = ts ? SSL_get_ex_data(ssl, ts->ex_index) : NULL;
	SSL_SESSION *copy;

	if (!srv || !SSL_SESSION_is_resumable(sess))
		return 0;
	copy = SSL_SESSION_dup(sess);
	if (copy) {
		SSL_SESSION_free(srv->last);
		srv->last = copy;
	}
	return 0;	/* the connection keeps its own reference */
}

struct tls_sessions *tls_sessions_new(SSL_CTX *ctx)
{
	struct tls_sessions *ts = calloc(1, sizeof(*ts));

	if (!ts)
		return NULL;
	ts->ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (ts->ex_index < 0 || ctx_index() < 0 || SSL_CTX_set_ex_data(ctx, ctx_index(), ts) != 1) {
		free(ts);
		return NULL;
	}
	/* Client sessions go to the callback only; OpenSSL's own store is for servers. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, on_new_session);
	return ts;
}

void tls_sessions_free(struct tls_sessions *ts)
{
	struct tls_server *srv, *next;

	if (!ts)
		return;
	for (srv = ts->servers; srv; srv = next) {
		next = srv->next;
		SSL_SESSION_free(srv->last);
		free(srv);
	}
	free(ts);
}

static struct tls_server *find_server(struct tls_sessions *ts, const char *name, size_t len)
{
	struct tls_server *srv;

	for (srv = ts->servers; srv; srv = srv->next)
		if (srv->len == len && memcmp(srv->name, name, len) == 0)
			return srv;
	if (ts->count >= TLS_SESSIONS_MAX)
		return NULL;	/* more servers than a client talks to: no resumption for them */
	srv = calloc(1, sizeof(*srv) + len + 1);
	if (!srv)
		return NULL;
	memcpy(srv->name, name, len);
	srv->len = len;
	srv->next = ts->servers;
	ts->servers = srv;
	ts->count++;
	return srv;
}

int tls_sessions_attach(struct tls_sessions *ts, SSL *ssl, const char *server, size_t server_len)
{
	struct tls_server *srv = find_server(ts, server, server_len);

	if (!srv)
		return ts->count >= TLS_SESSIONS_MAX ? 0 : -ENOMEM;
	if (SSL_set_ex_data(ssl, ts->ex_index, srv) != 1)
		return -ENOMEM;
	if (srv->last && SSL_SESSION_is_resumable(srv->last)) {
		/* A copy for this connection, for the same reason as in on_new_session. */
		SSL_SESSION *copy = SSL_SESSION_dup(srv->last);

		if (copy)
			(void)!SSL_set_session(ssl, copy);	/* refused: a full handshake */
		SSL_SESSION_free(copy);
	}
	return 0;
}
