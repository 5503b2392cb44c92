/* tls_sessions.h - a client's TLS sessions kept per server (host:port), so that the next
 * connection to the same server resumes instead of a full handshake. */
#ifndef HANDOFFD_TLS_SESSIONS_H
#define HANDOFFD_TLS_SESSIONS_H

#include <openssl/ssl.h>

struct tls_sessions;

/* Makes ctx hand every new client session to the cache. One cache per SSL_CTX. */
struct tls_sessions *tls_sessions_new(SSL_CTX *ctx);
void tls_sessions_free(struct tls_sessions *ts);

/* Ties ssl to server (host:port, the first server_len bytes): it offers that server's last
 * session, and the sessions it gets replace it. 0, or -ENOMEM. */
int tls_sessions_attach(struct tls_sessions *ts, SSL *ssl, const char *server, size_t server_len);

#endif
