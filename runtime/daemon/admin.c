/* admin.c - admin routes over the listener. The reload itself is runtime_reload(); this
 * file only decides who may ask and how the answer reads. */
#include "daemon/admin.h"

#include "base/config.h"
#include "net/http_server.h"
#include "base/json_text.h"
#include "base/log.h"
#include "daemon/runtime.h"
#include "script/script_host.h"

#include <event2/http.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

/* The bearer token matches, compared in constant time. */
static bool bearer_matches(struct evhttp_request *req, const char *token)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	size_t n = strlen(token);

	if (!h || strncmp(h, "Bearer ", 7) != 0 || strlen(h + 7) != n)
		return false;
	return CRYPTO_memcmp(h + 7, token, n) == 0;
}

void admin_session_value(const struct hd_runtime *rt, char out[ADMIN_SESSION_HEX + 1])
{
	static const char msg[] = "handoffd admin session v1";
	const char *token = rt->config->admin.token;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	out[0] = '\0';
	if (!HMAC(EVP_sha256(), token, (int)strlen(token), (const unsigned char *)msg, sizeof(msg) - 1, mac, &n) ||
	    n * 2 != ADMIN_SESSION_HEX)
		return;
	for (unsigned int i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", mac[i]);
}

/* The session cookie of the login form matches. */
static bool cookie_matches(const struct hd_runtime *rt, struct evhttp_request *req)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Cookie");
	const char *name = ADMIN_SESSION_COOKIE "=";
	char want[ADMIN_SESSION_HEX + 1];

	for (const char *p = h; p && (p = strstr(p, name)); p++) {
		const char *v = p + strlen(name);

		if (p != h && p[-1] != ' ' && p[-1] != ';')
			continue;
		admin_session_value(rt, want);
		return want[0] && strlen(v) >= ADMIN_SESSION_HEX &&
		       (v[ADMIN_SESSION_HEX] == '\0' || v[ADMIN_SESSION_HEX] == ';') &&
		       CRYPTO_memcmp(v, want, ADMIN_SESSION_HEX) == 0;
	}
	return false;
}

bool admin_authorized(struct hd_runtime *rt, struct evhttp_request *req)
{
	if (bearer_matches(req, rt->config->admin.token))
		return true;
	/* The cookie is for reading in a browser: what changes things needs the token. */
	return evhttp_request_get_command(req) == EVHTTP_REQ_GET && cookie_matches(rt, req);
}

bool admin_allowed(struct hd_runtime *rt, struct evhttp_request *req, const char *route)
{
	if (!rt->config->admin.allow_remote && !http_server_peer_is_loopback(req)) {
		http_server_reply_json(req, 403, "{\"ok\":false,\"error\":\"admin routes answer loopback peers only\"}");
		return false;
	}
	if (!admin_authorized(rt, req)) {
		log_warn(rt->log, "admin.denied", "route=%s", route);
		http_server_reply_json(req, 401, "{\"ok\":false,\"error\":\"bad or missing bearer token\"}");
		return false;
	}
	return true;
}

static void on_reload(struct evhttp_request *req, void *arg)
{
	struct hd_runtime *rt = arg;
	char err[1024], escaped[2048], body[2300];

	if (!admin_allowed(rt, req, "/admin/reload"))
		return;
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
	int rc;

	if (!rt->config->admin.token)
		return 0;
	rc = http_server_route(rt->http, "POST", "/admin/reload", on_reload, rt);
	if (rc == 0)
		rc = admin_conversations_register(rt);
	return rc < 0 ? rc : admin_page_register(rt);
}
