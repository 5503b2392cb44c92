/* webhooks.h - serving the `webhooks` tables of hub modules over the HTTP listener.
 * A hub module declares `webhooks = { ["POST /hubs/name/events"] = function(req) ... end }`;
 * each request runs as a task of the generation that registered the route, and the
 * handler's `status, body, headers` become the answer. */
#ifndef HANDOFFD_WEBHOOKS_H
#define HANDOFFD_WEBHOOKS_H

#include <stddef.h>

struct http_server;
struct script_gen;

/* Reads and checks the webhooks tables of G's hub modules into G. */
int webhooks_collect(struct script_gen *g, char *err, size_t errlen);
/* Registers G's routes; on a clash registers none and says which in ERR. */
int webhooks_attach(struct http_server *srv, struct script_gen *g, char *err, size_t errlen);
void webhooks_detach(struct http_server *srv, struct script_gen *g);
/* Frees what webhooks_collect stored in G. */
void webhooks_free(struct script_gen *g);

#endif
