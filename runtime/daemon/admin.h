/* admin.h - the operator's HTTP routes: POST /admin/reload, the conversations
 * (admin_conversations.c).
 * Registered only when the config has admin.token; answered only to loopback peers
 * unless admin.allow_remote is set. */
#ifndef HANDOFFD_ADMIN_H
#define HANDOFFD_ADMIN_H

#include <stdbool.h>

struct evhttp_request;
struct hd_runtime;

/* Returns 0 or a negative errno from http_server_route. */
int admin_register(struct hd_runtime *rt);

/* The status page's login cookie: its name, and its value, HMAC-SHA256 of a constant
 * keyed with admin.token in hex (never the token itself). */
#define ADMIN_SESSION_COOKIE "handoffd_admin"
#define ADMIN_SESSION_HEX 64
void admin_session_value(const struct hd_runtime *rt, char out[ADMIN_SESSION_HEX + 1]);

/* The bearer token matches, or (GET only) the login cookie does. */
bool admin_authorized(struct hd_runtime *rt, struct evhttp_request *req);
/* Whether REQ may use admin ROUTE (peer and token); when not, REQ is answered (403/401). */
bool admin_allowed(struct hd_runtime *rt, struct evhttp_request *req, const char *route);

/* admin_conversations.c: GET /admin/conversations[/{key}], POST .../{key}/end|return-to-bot */
int admin_conversations_register(struct hd_runtime *rt);

/* admin_page.c: the status page GET /admin/ and its login form /admin/login */
int admin_page_register(struct hd_runtime *rt);

#endif
