/* admin_page.c - the status page, in the tradition of HAProxy's stats page: one
 * self-contained HTML page (no scripts, no external assets) that refreshes itself, with
 * the conversations by state and stream, the delivery queues and retries, the recent
 * handoffs and their route decisions, the last reload, and each conversation linked to
 * its detail (/admin/view/{key}: HTML, linking to the JSON). A browser logs in through a form that sets a cookie derived from the
 * admin token (admin_session_value); the bearer token works as well. Everything shown
 * is escaped; message text is never shown. */
#include "daemon/admin.h"

#include "base/clock.h"
#include "base/config.h"
#include "relay/conv_events.h"
#include "net/http_server.h"
#include "base/log.h"
#include "relay/relay_inspect.h"
#include "daemon/runtime.h"
#include "script/script_host.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE_REFRESH_S 5
#define PAGE_ROWS_MAX 200
#define PAGE_HANDOFFS_MAX 20
#define STATES_MAX 8

static const char style[] =
	"<style>body{font:13px sans-serif;margin:1em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
	"th,td{border:1px solid #bbb;padding:2px 8px;text-align:left}th{background:#dde}"
	"td.n{text-align:right}h1{font-size:18px}h2{font-size:15px;margin-bottom:0}.bad{color:#b00}</style>";

/* Appends S with &, <, >, " and ' escaped. */
static void add_html(struct evbuffer *out, const char *s)
{
	for (; s && *s; s++) {
		switch (*s) {
		case '&': evbuffer_add(out, "&amp;", 5); break;
		case '<': evbuffer_add(out, "&lt;", 4); break;
		case '>': evbuffer_add(out, "&gt;", 4); break;
		case '"': evbuffer_add(out, "&quot;", 6); break;
		case '\'': evbuffer_add(out, "&#39;", 5); break;
		default: evbuffer_add(out, s, 1);
		}
	}
}

static void send_html(struct evhttp_request *req, int status, struct evbuffer *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Content-Type", "text/html; charset=utf-8");
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'");
	evhttp_add_header(h, "X-Frame-Options", "DENY");
	evhttp_send_reply(req, status, NULL, body);
}

static void redirect(struct evhttp_request *req, const char *to)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Location", to);
	evhttp_send_reply(req, 303, NULL, NULL);
}

static bool peer_ok(struct hd_runtime *rt, struct evhttp_request *req)
{
	if (rt->config->admin.allow_remote || http_server_peer_is_loopback(req))
		return true;
	http_server_reply_json(req, 403, "{\"ok\":false,\"error\":\"admin routes answer loopback peers only\"}");
	return false;
}

/* ---- login ---- */

static void login_form(struct evhttp_request *req, int status, const char *message)
{
	struct evbuffer *out = evbuffer_new();

	if (!out) {
		evhttp_send_reply(req, 500, NULL, NULL);
		return;
	}
	evbuffer_add_printf(out, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>handoffd login</title>%s"
			    "</head><body><h1>handoffd</h1>", style);
	if (message) {
		evbuffer_add(out, "<p class=\"bad\">", 15);
		add_html(out, message);
		evbuffer_add(out, "</p>", 4);
	}
	evbuffer_add_printf(out, "<form method=\"post\" action=\"/admin/login\"><label>Admin token "
			    "<input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\"></label> "
			    "<button type=\"submit\" id=\"login\">Log in</button></form></body></html>");
	send_html(req, status, out);
	evbuffer_free(out);
}

static void on_login_form(struct evhttp_request *req, void *arg)
{
	if (peer_ok(arg, req))
		login_form(req, 200, NULL);
}

static void on_login(struct evhttp_request *req, void *arg)
{
	struct hd_runtime *rt = arg;
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	struct evkeyvalq form = { 0 };
	const char *token = rt->config->admin.token, *given;
	char *body = len < 4096 ? malloc(len + 1) : NULL;
	char value[ADMIN_SESSION_HEX + 1], cookie[ADMIN_SESSION_HEX + 128];
	bool ok;

	if (!peer_ok(rt, req)) {
		free(body);
		return;
	}
	if (!body) {
		login_form(req, 400, "The form was too large.");
		return;
	}
	evbuffer_copyout(in, body, len);
	body[len] = '\0';
	given = evhttp_parse_query_str(body, &form) == 0 ? evhttp_find_header(&form, "token") : NULL;
	ok = given && strlen(given) == strlen(token) && CRYPTO_memcmp(given, token, strlen(token)) == 0;
	evhttp_clear_headers(&form);
	free(body);
	if (!ok) {
		log_warn(rt->log, "admin.denied", "route=/admin/login");
		login_form(req, 401, "Wrong token.");
		return;
	}
	admin_session_value(rt, value);
	snprintf(cookie, sizeof(cookie), "%s=%s; Path=/admin; HttpOnly; SameSite=Strict", ADMIN_SESSION_COOKIE, value);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Set-Cookie", cookie);
	log_info(rt->log, "admin.login", "peer=%s", http_server_peer_is_loopback(req) ? "loopback" : "remote");
	redirect(req, "/admin/");
}

/* ---- the page ---- */

struct state_row {
	const char *name;	/* static (conv_state_name) */
	unsigned by_stream[3];	/* streaming, parked, none */
};

struct page {
	struct state_row states[STATES_MAX];
	size_t nstates;
	unsigned queued_to_bot, queued_to_hub, retrying, total;
	struct relay_conv_summary rows[PAGE_ROWS_MAX];	/* strings copied below */
	char *keys[PAGE_ROWS_MAX];
	char *routes[PAGE_ROWS_MAX];
	char *handoffs[PAGE_ROWS_MAX];
	size_t nrows;
};

static int stream_index(const char *stream)
{
	return strcmp(stream, "streaming") == 0 ? 0 : strcmp(stream, "parked") == 0 ? 1 : 2;
}

static void count_one(const struct relay_conv_summary *s, void *arg)
{
	struct page *p = arg;
	size_t i;

	for (i = 0; i < p->nstates && strcmp(p->states[i].name, s->state) != 0; i++)
		;
	if (i == p->nstates && p->nstates < STATES_MAX)
		p->states[p->nstates++].name = s->state;
	if (i < p->nstates)
		p->states[i].by_stream[stream_index(s->stream)]++;
	p->queued_to_bot += s->queued_to_bot;
	p->queued_to_hub += s->queued_to_hub;
	p->retrying += s->retrying;
	p->total++;
	if (p->nrows < PAGE_ROWS_MAX) {
		size_t n = p->nrows++;

		p->rows[n] = *s;
		p->keys[n] = strdup(s->key);
		p->routes[n] = s->route_json ? strdup(s->route_json) : NULL;
		p->handoffs[n] = s->handoff_id ? strdup(s->handoff_id) : NULL;
		p->rows[n].key = p->keys[n] ? p->keys[n] : "?";
		p->rows[n].route_json = p->routes[n];
		p->rows[n].handoff_id = p->handoffs[n];
	}
}

static int by_key(const void *a, const void *b)
{
	return strcmp(((const struct relay_conv_summary *)a)->key, ((const struct relay_conv_summary *)b)->key);
}

static int by_handoff_desc(const void *a, const void *b)
{
	uint64_t x = ((const struct relay_conv_summary *)a)->handoff_ms;
	uint64_t y = ((const struct relay_conv_summary *)b)->handoff_ms;

	return x < y ? 1 : x > y ? -1 : 0;
}

static void add_ago(struct evbuffer *out, uint64_t now, uint64_t then)
{
	if (then)
		evbuffer_add_printf(out, "<td class=\"n\">%.0f s</td>", (double)(now - then) / 1000.0);
	else
		evbuffer_add(out, "<td>-</td>", 10);
}

static void add_link(struct evbuffer *out, const char *key)
{
	char *esc = evhttp_uriencode(key, -1, 0);

	evbuffer_add(out, "<a href=\"/admin/view/", 21);
	add_html(out, esc ? esc : "");
	evbuffer_add(out, "\">", 2);
	add_html(out, key);
	evbuffer_add(out, "</a>", 4);
	free(esc);
}

static void section_states(struct evbuffer *out, const struct page *p)
{
	evbuffer_add_printf(out, "<h2>Conversations</h2><table id=\"states\"><tr><th>state</th><th>streaming</th>"
			    "<th>parked</th><th>no stream</th><th>total</th></tr>");
	for (size_t i = 0; i < p->nstates; i++) {
		const unsigned *b = p->states[i].by_stream;

		evbuffer_add(out, "<tr><td>", 8);
		add_html(out, p->states[i].name);
		evbuffer_add_printf(out, "</td><td class=\"n\">%u</td><td class=\"n\">%u</td><td class=\"n\">%u</td>"
				    "<td class=\"n\">%u</td></tr>", b[0], b[1], b[2], b[0] + b[1] + b[2]);
	}
	evbuffer_add_printf(out, "<tr><th>all</th><td></td><td></td><td></td><td class=\"n\" id=\"total\">%u</td></tr>"
			    "</table>", p->total);
}

static void section_delivery(struct evbuffer *out, struct hd_runtime *rt, const struct page *p)
{
	struct relay_totals t;

	relay_inspect_totals(rt->relay, &t);
	evbuffer_add_printf(out, "<h2>Delivery</h2><table id=\"delivery\"><tr><th></th><th>to the bot</th>"
			    "<th>to the hub</th></tr><tr><td>queued now</td><td class=\"n\">%u</td><td class=\"n\">%u</td></tr>"
			    "<tr><td>delivered since start</td><td class=\"n\">%llu</td><td class=\"n\">%llu</td></tr></table>"
			    "<table><tr><td>conversations waiting for a retry</td><td class=\"n\">%u</td></tr>"
			    "<tr><td>retries since start</td><td class=\"n\">%llu</td></tr>"
			    "<tr><td>deliveries given up</td><td class=\"n\">%llu</td></tr></table>",
			    p->queued_to_bot, p->queued_to_hub, (unsigned long long)t.to_bot, (unsigned long long)t.to_hub,
			    p->retrying, (unsigned long long)t.retries, (unsigned long long)t.dropped);
	evbuffer_add_printf(out, "<h2>Handoffs since start</h2><table id=\"handoff-totals\"><tr><th>initiated</th>"
			    "<th>accepted</th><th>failed</th><th>completed</th></tr><tr><td class=\"n\">%llu</td>"
			    "<td class=\"n\">%llu</td><td class=\"n\">%llu</td><td class=\"n\">%llu</td></tr></table>",
			    (unsigned long long)t.handoffs_started, (unsigned long long)t.handoffs_accepted,
			    (unsigned long long)t.handoffs_failed, (unsigned long long)t.handoffs_completed);
}

static void section_handoffs(struct evbuffer *out, struct page *p, uint64_t now)
{
	size_t shown = 0;

	qsort(p->rows, p->nrows, sizeof(p->rows[0]), by_handoff_desc);
	evbuffer_add_printf(out, "<h2>Recent handoffs</h2><table id=\"handoffs\"><tr><th>conversation</th>"
			    "<th>handoff</th><th>started</th><th>state</th><th>route decision</th></tr>");
	for (size_t i = 0; i < p->nrows && shown < PAGE_HANDOFFS_MAX; i++) {
		const struct relay_conv_summary *s = &p->rows[i];

		if (!s->handoff_id)
			continue;
		shown++;
		evbuffer_add(out, "<tr><td>", 8);
		add_link(out, s->key);
		evbuffer_add(out, "</td><td>", 9);
		add_html(out, s->handoff_id);
		evbuffer_add(out, "</td>", 5);
		add_ago(out, now, s->handoff_ms);
		evbuffer_add(out, "<td>", 4);
		add_html(out, s->state);
		evbuffer_add(out, "</td><td><code>", 15);
		add_html(out, s->route_json ? s->route_json : "-");
		evbuffer_add(out, "</code></td></tr>", 17);
	}
	evbuffer_add(out, "</table>", 8);
}

static void section_rows(struct evbuffer *out, struct page *p, uint64_t now)
{
	qsort(p->rows, p->nrows, sizeof(p->rows[0]), by_key);
	evbuffer_add_printf(out, "<h2>Conversations (first %d by key)</h2><table id=\"conversations\"><tr>"
			    "<th>key</th><th>state</th><th>stream</th><th>age</th><th>last to bot</th>"
			    "<th>last to hub</th><th>queued to bot</th><th>queued to hub</th></tr>", PAGE_ROWS_MAX);
	for (size_t i = 0; i < p->nrows; i++) {
		const struct relay_conv_summary *s = &p->rows[i];

		evbuffer_add(out, "<tr><td>", 8);
		add_link(out, s->key);
		evbuffer_add(out, "</td><td>", 9);
		add_html(out, s->state);
		evbuffer_add(out, "</td><td>", 9);
		add_html(out, s->stream);
		evbuffer_add(out, "</td>", 5);
		add_ago(out, now, s->opened_ms);
		add_ago(out, now, s->last_to_bot_ms);
		add_ago(out, now, s->last_to_hub_ms);
		evbuffer_add_printf(out, "<td class=\"n\">%u</td><td class=\"n\">%u</td></tr>", s->queued_to_bot,
				    s->queued_to_hub);
	}
	evbuffer_add(out, "</table>", 8);
}

static void section_reload(struct evbuffer *out, struct hd_runtime *rt)
{
	char when[64] = "never";
	struct tm tm;

	if (rt->last_reload_time && gmtime_r(&rt->last_reload_time, &tm))
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
	evbuffer_add_printf(out, "<h2>Scripts</h2><table id=\"reload\"><tr><td>generation serving</td>"
			    "<td class=\"n\">%lu</td></tr><tr><td>last reload</td><td>", script_host_generation(rt->scripts));
	add_html(out, when);
	evbuffer_add(out, "</td></tr><tr><td>its result</td><td>", 37);
	if (!rt->last_reload_time)
		evbuffer_add(out, "-", 1);
	else if (rt->last_reload_ok)
		evbuffer_add(out, "ok", 2);
	else {
		evbuffer_add(out, "<span class=\"bad\">failed: ", 26);
		add_html(out, rt->last_reload_failure ? rt->last_reload_failure : "?");
		evbuffer_add(out, "</span>", 7);
	}
	evbuffer_add(out, "</td></tr></table>", 18);
}

static void free_page(struct page *p)
{
	for (size_t i = 0; i < p->nrows; i++) {
		free(p->keys[i]);
		free(p->routes[i]);
		free(p->handoffs[i]);
	}
	free(p);
}

static void on_page(struct evhttp_request *req, void *arg)
{
	struct hd_runtime *rt = arg;
	struct page *p;
	struct evbuffer *out;
	uint64_t now = clock_wall_ms();

	if (!peer_ok(rt, req))
		return;
	if (!admin_authorized(rt, req)) {
		redirect(req, "/admin/login");
		return;
	}
	p = calloc(1, sizeof(*p));
	out = evbuffer_new();
	if (!p || !out) {
		free(p);
		if (out)
			evbuffer_free(out);
		evhttp_send_reply(req, 500, NULL, NULL);
		return;
	}
	evbuffer_add_printf(out, "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
			    "<meta http-equiv=\"refresh\" content=\"%d\"><title>handoffd status</title>%s</head><body>"
			    "<h1>handoffd %s</h1><p>up %.0f s; %s; this page refreshes every %d s.</p>",
			    PAGE_REFRESH_S, style, HANDOFFD_VERSION, runtime_uptime(rt),
			    rt->stopping ? "stopping" : "serving", PAGE_REFRESH_S);
	if (rt->relay) {
		relay_inspect_each(rt->relay, count_one, p);
		section_states(out, p);
		section_delivery(out, rt, p);
		section_handoffs(out, p, now);
	} else {
		evbuffer_add_printf(out, "<p>No hub is configured: no conversations.</p>");
	}
	section_reload(out, rt);
	if (rt->relay)
		section_rows(out, p, now);
	evbuffer_add_printf(out, "</body></html>");
	send_html(req, 200, out);
	evbuffer_free(out);
	free_page(p);
}

/* ---- one conversation ---- */

static void add_row(struct evbuffer *out, const char *name, const char *value)
{
	evbuffer_add(out, "<tr><th>", 8);
	add_html(out, name);
	evbuffer_add(out, "</th><td>", 9);
	add_html(out, value ? value : "-");
	evbuffer_add(out, "</td></tr>", 10);
}

static void add_time_row(struct evbuffer *out, const char *name, uint64_t now, uint64_t then)
{
	evbuffer_add(out, "<tr><th>", 8);
	add_html(out, name);
	evbuffer_add(out, "</th>", 5);
	add_ago(out, now, then);
	evbuffer_add(out, "</tr>", 5);
}

static void detail_html(struct evbuffer *out, const char *key, const char *path_key,
			const struct relay_conv_summary *s, const struct conv_events *ev)
{
	uint64_t now = clock_wall_ms();
	char queued[64];

	evbuffer_add_printf(out, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>handoffd: conversation"
			    "</title>%s</head><body><p><a href=\"/admin/\">status page</a></p><h1>", style);
	add_html(out, key);
	evbuffer_add(out, "</h1><table id=\"detail\">", 24);
	add_row(out, "state", s->state);
	add_row(out, "stream", s->stream);
	add_row(out, "handoff", s->handoff_id);
	add_row(out, "route decision", s->route_json);
	add_time_row(out, "age", now, s->opened_ms);
	add_time_row(out, "last to bot", now, s->last_to_bot_ms);
	add_time_row(out, "last to hub", now, s->last_to_hub_ms);
	snprintf(queued, sizeof(queued), "%u to the bot, %u to the hub%s", s->queued_to_bot, s->queued_to_hub,
		 s->retrying ? " (waiting for a retry)" : "");
	add_row(out, "queued", queued);
	evbuffer_add(out, "</table><p><a id=\"json\" href=\"/admin/conversations/", 51);
	add_html(out, path_key);
	evbuffer_add_printf(out, "\">as JSON</a> (with the hub data's keys)</p><h2>Last %d events</h2>"
			    "<table id=\"events\"><tr><th>when</th><th>event</th><th>detail</th></tr>", CONV_EVENTS_MAX);
	for (unsigned i = 0; ev && i < ev->count; i++) {
		const struct conv_event *e = conv_events_at(ev, i);

		evbuffer_add(out, "<tr>", 4);
		add_ago(out, now, e->at_ms);
		evbuffer_add(out, "<td>", 4);
		add_html(out, conv_event_kind_name(e->kind));
		evbuffer_add(out, "</td><td>", 9);
		add_html(out, e->detail);
		evbuffer_add(out, "</td></tr>", 10);
	}
	evbuffer_add(out, "</table></body></html>", 22);
}

static void on_view(struct evhttp_request *req, void *arg)
{
	static const char prefix[] = "/admin/view/";
	struct hd_runtime *rt = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *raw = path && strlen(path) > sizeof(prefix) - 1 ? path + sizeof(prefix) - 1 : "";
	char *key = evhttp_uridecode(raw, 0, NULL);
	struct relay_conv_summary s;
	const struct conv_events *ev;
	struct evbuffer *out = NULL;

	if (!peer_ok(rt, req))
		goto done;
	if (!admin_authorized(rt, req)) {
		redirect(req, "/admin/login");
		goto done;
	}
	if (!key || !rt->relay || relay_inspect_one(rt->relay, key, &s, &ev) < 0) {
		http_server_reply_json(req, 404, "{\"ok\":false,\"error\":\"no such conversation\"}");
		goto done;
	}
	out = evbuffer_new();
	if (!out) {
		evhttp_send_reply(req, 500, NULL, NULL);
		goto done;
	}
	detail_html(out, key, raw, &s, ev);
	send_html(req, 200, out);
done:
	if (out)
		evbuffer_free(out);
	free(key);
}

int admin_page_register(struct hd_runtime *rt)
{
	int rc = http_server_route(rt->http, "GET", "/admin/", on_page, rt);

	if (rc == 0)
		rc = http_server_route(rt->http, "GET", "/admin/view/*", on_view, rt);

	if (rc == 0)
		rc = http_server_route(rt->http, "GET", "/admin/login", on_login_form, rt);
	if (rc == 0)
		rc = http_server_route(rt->http, "POST", "/admin/login", on_login, rt);
	return rc;
}
