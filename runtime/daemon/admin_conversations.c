/* admin_conversations.c - the inspection routes: the conversations, one conversation,
 * and the operator's two ways to unstick one. What is shown is relay_inspect.c's; this
 * file parses the request and answers. */
#include "daemon/admin.h"

#include "base/config.h"
#include "net/http_server.h"
#include "base/log.h"
#include "relay/relay_inspect.h"
#include "daemon/runtime.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "/admin/conversations/"

static void reply_buffer(struct evhttp_request *req, int status, struct evbuffer *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	evhttp_send_reply(req, status, NULL, body);
}

static const char *request_path(struct evhttp_request *req)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;

	return path ? path : "";
}

static bool no_relay(struct hd_runtime *rt, struct evhttp_request *req)
{
	if (rt->relay)
		return false;
	http_server_reply_json(req, 404, "{\"ok\":false,\"error\":\"no hub is configured\"}");
	return true;
}

static void on_list(struct evhttp_request *req, void *arg)
{
	struct hd_runtime *rt = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
	struct evkeyvalq q = { 0 };
	const char *limit;
	struct evbuffer *out;
	int rc;

	if (!admin_allowed(rt, req, "/admin/conversations") || no_relay(rt, req))
		return;
	if (query && evhttp_parse_query_str(query, &q) < 0) {
		http_server_reply_json(req, 400, "{\"ok\":false,\"error\":\"malformed query\"}");
		return;
	}
	out = evbuffer_new();
	limit = evhttp_find_header(&q, "limit");
	rc = out ? relay_inspect_list(rt->relay, evhttp_find_header(&q, "state"),
				       limit ? (size_t)strtoul(limit, NULL, 10) : 0, evhttp_find_header(&q, "after"), out)
		 : -ENOMEM;
	if (rc == 0)
		reply_buffer(req, 200, out);
	else if (rc == -EINVAL)
		http_server_reply_json(req, 400, "{\"ok\":false,\"error\":\"unknown state\"}");
	else
		http_server_reply_json(req, 500, "{\"ok\":false,\"error\":\"out of memory\"}");
	evhttp_clear_headers(&q);
	if (out)
		evbuffer_free(out);
}

/* The key in PATH after PREFIX, up to END (excluded), percent-decoded; NULL if empty. */
static char *key_of(const char *path, const char *end)
{
	const char *start = path + strlen(PREFIX);
	char *raw, *key;

	if (end <= start)
		return NULL;
	raw = strndup(start, (size_t)(end - start));
	key = raw ? evhttp_uridecode(raw, 0, NULL) : NULL;
	free(raw);
	if (key && !*key) {
		free(key);
		key = NULL;
	}
	return key;
}

static void on_show(struct evhttp_request *req, void *arg)
{
	struct hd_runtime *rt = arg;
	const char *path = request_path(req);
	char *key;
	struct evbuffer *out;
	int rc;

	if (!admin_allowed(rt, req, "/admin/conversations/{key}") || no_relay(rt, req))
		return;
	key = key_of(path, path + strlen(path));
	out = evbuffer_new();
	rc = !key ? -ENOENT : !out ? -ENOMEM : relay_inspect_show(rt->relay, key, rt->config->admin.show_content, out);
	if (rc == 0)
		reply_buffer(req, 200, out);
	else if (rc == -ENOENT)
		http_server_reply_json(req, 404, "{\"ok\":false,\"error\":\"no such conversation\"}");
	else
		http_server_reply_json(req, 500, "{\"ok\":false,\"error\":\"out of memory\"}");
	free(key);
	if (out)
		evbuffer_free(out);
}

static bool ends_with(const char *s, const char *suffix, const char **at)
{
	size_t n = strlen(s), m = strlen(suffix);

	if (n < m || strcmp(s + n - m, suffix) != 0)
		return false;
	*at = s + n - m;
	return true;
}

static void on_action(struct evhttp_request *req, void *arg)
{
	struct hd_runtime *rt = arg;
	const char *path = request_path(req), *at = NULL;
	bool end = ends_with(path, "/end", &at);
	bool to_bot = !end && ends_with(path, "/return-to-bot", &at);
	char *key;
	int rc;

	if (!admin_allowed(rt, req, "/admin/conversations/{key}/{action}") || no_relay(rt, req))
		return;
	if (!end && !to_bot) {
		http_server_reply_json(req, 404, "{\"ok\":false,\"error\":\"the actions are end and return-to-bot\"}");
		return;
	}
	key = key_of(path, at);
	rc = !key ? -ENOENT : end ? relay_inspect_end(rt->relay, key) : relay_inspect_return_to_bot(rt->relay, key);
	if (rc == 0) {
		log_info(rt->log, "admin.conversation", "action=%s conv=%s", end ? "end" : "return-to-bot", key);
		http_server_reply_json(req, 200, "{\"ok\":true}");
	} else if (rc == -ENOENT) {
		http_server_reply_json(req, 404, "{\"ok\":false,\"error\":\"no such conversation\"}");
	} else {
		http_server_reply_json(req, 409, "{\"ok\":false,\"error\":\"no handoff under way\"}");
	}
	free(key);
}

int admin_conversations_register(struct hd_runtime *rt)
{
	int rc = http_server_route(rt->http, "GET", "/admin/conversations", on_list, rt);

	if (rc == 0)
		rc = http_server_route(rt->http, "GET", PREFIX "*", on_show, rt);
	if (rc == 0)
		rc = http_server_route(rt->http, "POST", PREFIX "*", on_action, rt);
	return rc;
}
