/* admin.c - admin routes over the listener. The reload itself is runtime_reload(); this
 * file only decides who may ask and how the answer reads. */
#include "admin.h"

#include "config.h"
#include "http_server.h"
#include "json_text.h"
#include "log.h"
#include "runtime.h"
#include "script_host.h"

#include <event2/http.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

/* The bearer token matches, compared in constant time. */
static int authorized(struct evhttp_request *req, const char *token)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	size_t n = strlen(token);

	if (!h || strncmp(h, "Bearer ", 7) != 0 || strlen(h + 7) != n)
		return 0;
	return CRYPTO_memcmp(h + 7, token, n) == 0;
}

static void on_reload(struct evhttp_request *req, void *arg)
{
	struct hd_runtime *rt = arg;
	char err[1024], escaped[2048], body[2300];

	if (!rt->config->admin.allow_remote && !http_server_peer_is_loopback(req)) {
		http_server_reply_json(req, 403, "{\"ok\":false,\"error\":\"admin routes answer loopback peers only\"}");
		return;
	}
	if (!authorized(req, rt->config->admin.token)) {
		log_warn(rt->log, "admin.denied", "route=/admin/reload");
		http_server_reply_json(req, 401, "{\"ok\":false,\"error\":\"bad or missing bearer token\"}");
		return;
	}
	log_info(rt->log, "admin.reload", "peer=%s", http_server_peer_is_loopback(req) ? "loopback" : "remote");
	if (runtime_reload(rt, err, sizeof(err)) < 0) {
		json_text_string(escaped, sizeof(escaped), 0, err);
		snprintf(body, sizeof(body), "{\"ok\":false,\"error\":%s,\"generation\":%lu}", escaped,
			 script_host_generation(rt->scripts));
		http_server_reply_json(req, 422, body);
		return;
	}
	snprintf(body, sizeof(body), "{\"ok\":true,\"generation\":%lu}", script_host_generation(rt->scripts));
	http_server_reply_json(req, 200, body);
}

int admin_register(struct hd_runtime *rt)
{
	if (!rt->config->admin.token)
		return 0;
	return http_server_route(rt->http, "POST", "/admin/reload", on_reload, rt);
}
