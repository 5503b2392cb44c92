/* admin.h - the operator's HTTP routes: POST /admin/reload.
 * Registered only when the config has admin.token; answered only to loopback peers
 * unless admin.allow_remote is set. */
#ifndef HANDOFFD_ADMIN_H
#define HANDOFFD_ADMIN_H

struct hd_runtime;

/* Returns 0 or a negative errno from http_server_route. */
int admin_register(struct hd_runtime *rt);

#endif
