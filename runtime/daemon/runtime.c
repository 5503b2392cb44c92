/* runtime.c - start-up, signals, health and the graceful stop.
 * Order at start: the listener with its built-in routes, the scripts (whose webhooks
 * join the listener), then signals and the file watch. Order at stop: stop accepting, let
 * in-flight work finish until shutdown_timeout, then leave the loop. */
#include "daemon/runtime.h"

#include "daemon/admin.h"
#include "base/clock.h"
#include "base/config.h"
#include "net/http_client.h"
#include "net/http_listener.h"
#include "net/http_server.h"
#include "base/json_text.h"
#include "base/log.h"
#include "net/loop.h"
#include "base/metrics.h"
#include "relay/cluster.h"
#include "relay/relay.h"
#include "relay/store.h"
#include "script/desk.h"
#include "script/script_host.h"
#include "daemon/sdnotify.h"
#include "daemon/watch.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DRAIN_POLL_MS 50

static double gauge_uptime(void *arg)
{
	return runtime_uptime(arg);
}

static double gauge_conversations(void *arg)
{
	return (double)runtime_conversations(arg);
}

static double count_streams(const struct hd_runtime *rt, bool want_parked)
{
	size_t streaming = 0, parked = 0;

	if (rt->relay)
		relay_stream_counts(rt->relay, &streaming, &parked);
	return (double)(want_parked ? parked : streaming);
}

static double gauge_streaming(void *arg)
{
	return count_streams(arg, false);
}

static double gauge_parked(void *arg)
{
	return count_streams(arg, true);
}

static struct relay_counts counts_of(const struct hd_runtime *rt)
{
	struct relay_counts n = { 0 };

	if (rt->relay)
		relay_conversation_counts(rt->relay, &n);
	return n;
}

static double gauge_bot(void *arg)
{
	return (double)counts_of(arg).bot;
}

static double gauge_routing(void *arg)
{
	return (double)counts_of(arg).routing;
}

static double gauge_agent(void *arg)
{
	return (double)counts_of(arg).agent;
}

static double gauge_ending(void *arg)
{
	return (double)counts_of(arg).ending;
}

static int add_state_gauges(struct hd_runtime *rt)
{
	static const char help[] = "Conversations in memory by state (ending: over, draining)";
	struct metrics *m = rt->metrics;

	if (metrics_gauge_labels(m, "handoffd_conversations_by_state", "state=\"bot\"", help, gauge_bot, rt) < 0 ||
	    metrics_gauge_labels(m, "handoffd_conversations_by_state", "state=\"routing\"", help, gauge_routing, rt) < 0 ||
	    metrics_gauge_labels(m, "handoffd_conversations_by_state", "state=\"agent\"", help, gauge_agent, rt) < 0 ||
	    metrics_gauge_labels(m, "handoffd_conversations_by_state", "state=\"ending\"", help, gauge_ending, rt) < 0)
		return -ENOMEM;
	return 0;
}

static double gauge_tasks(void *arg)
{
	return (double)script_host_tasks(((struct hd_runtime *)arg)->scripts);
}

static double gauge_generation(void *arg)
{
	return (double)script_host_generation(((struct hd_runtime *)arg)->scripts);
}

static int add_metrics(struct hd_runtime *rt)
{
	struct metrics *m = rt->metrics;

	rt->reloads_ok = metrics_counter(m, "handoffd_reloads_total", "result=\"ok\"", "Script reloads");
	rt->reloads_failed = metrics_counter(m, "handoffd_reloads_total", "result=\"failed\"", "Script reloads");
	if (metrics_gauge(m, "handoffd_uptime_seconds", "Seconds since start", gauge_uptime, rt) < 0 ||
	    metrics_gauge(m, "handoffd_conversations", "Open conversations", gauge_conversations, rt) < 0 ||
	    metrics_gauge_labels(m, "handoffd_conversations_streams", "stream=\"streaming\"",
				 "Open Direct Line conversations by stream", gauge_streaming, rt) < 0 ||
	    metrics_gauge_labels(m, "handoffd_conversations_streams", "stream=\"parked\"",
				 "Open Direct Line conversations by stream", gauge_parked, rt) < 0 ||
	    metrics_gauge(m, "handoffd_script_tasks", "Script tasks not finished", gauge_tasks, rt) < 0 ||
	    metrics_gauge(m, "handoffd_script_generation", "Scripts generation serving", gauge_generation, rt) < 0)
		return -ENOMEM;
	return add_state_gauges(rt);
}

struct hd_runtime *runtime_new(struct config *cfg, struct log *lg)
{
	struct hd_runtime *rt = calloc(1, sizeof(*rt));

	if (!rt) {
		config_free(cfg);
		return NULL;
	}
	rt->config = cfg;
	rt->log = lg;
	rt->loop = loop_new();
	rt->metrics = metrics_new();
	rt->curl_ready = http_client_global_init() == 0;	/* libcurl counts its own inits */
	rt->http_client = rt->loop && rt->curl_ready ? http_client_new(rt->loop, lg, NULL) : NULL;
	rt->scripts = rt->metrics ? script_host_new(rt) : NULL;
	if (!rt->loop || !rt->http_client || !rt->scripts || add_metrics(rt) < 0) {
		runtime_free(rt);
		return NULL;
	}
	rt->started_ms = clock_mono_ms();
	return rt;
}

void runtime_free(struct hd_runtime *rt)
{
	if (!rt)
		return;
	for (size_t i = 0; i < sizeof(rt->signals) / sizeof(rt->signals[0]); i++)
		loop_signal_free(rt->signals[i]);
	loop_timer_free(rt->drain);
	watch_free(rt->watch);
	sdnotify_free(rt->notify);
	script_host_free(rt->scripts);	/* first: aborted tasks cancel their requests */
	relay_free(rt->relay);		/* after: those tasks' ends still reach the relay */
	http_client_free(rt->http_client);
	if (rt->curl_ready)
		http_client_global_cleanup();
	http_server_free(rt->http);
	metrics_free(rt->metrics);
	loop_free(rt->loop);
	config_free(rt->config);
	free(rt);
}

double runtime_uptime(const struct hd_runtime *rt)
{
	return (double)(clock_mono_ms() - rt->started_ms) / 1000.0;
}

unsigned long runtime_conversations(const struct hd_runtime *rt)
{
	return rt->relay ? (unsigned long)relay_conversation_count(rt->relay) : 0;
}

int runtime_check(struct hd_runtime *rt, char *err, size_t errlen)
{
	/* A database state must be reachable and at a version this handoffd can use. */
	if (store_check(rt->config->state, err, errlen) < 0)
		return -1;
	return script_host_load(rt->scripts, err, errlen);
}

/* Notes the outcome for /healthz; a failure's message in ERR is redacted in place, for
 * the log and for whoever the caller shows it to (the admin answer). */
static void record_reload(struct hd_runtime *rt, int rc, char *err, size_t errlen)
{
	const char *failure = script_host_failure(rt->scripts);

	rt->last_reload_ok = rc == 0;
	rt->last_reload_time = time(NULL);
	rt->last_reload_failure = rc == 0 ? NULL : failure ? failure : "internal";
	if (rc < 0)
		log_redact(rt->log, err, errlen);
	metrics_inc(rc < 0 ? rt->reloads_failed : rt->reloads_ok);
}

int runtime_reload(struct hd_runtime *rt, char *err, size_t errlen)
{
	int rc;

	sdnotify_reloading(rt->notify);
	rc = script_host_load(rt->scripts, err, errlen);
	record_reload(rt, rc, err, errlen);
	sdnotify_ready(rt->notify);	/* a failed reload keeps the old scripts serving */
	if (rc == 0)
		log_info(rt->log, "reload.ok", "generation=%lu", script_host_generation(rt->scripts));
	else
		log_error(rt->log, "reload.failed", "error=\"%s\" kept_generation=%lu", err,
			  script_host_generation(rt->scripts));
	return rc;
}

/* ,"cluster":{...} for a cluster member (a PostgreSQL state), else "". */
static void cluster_health_json(const struct hd_runtime *rt, char *out, size_t cap)
{
	struct cluster_stats cs;
	char node[2 * CLUSTER_NODE_MAX + 8];

	if (!relay_cluster_stats(rt->relay, &cs))
		return;
	json_text_string(node, sizeof(node), 0, cs.node);
	if (snprintf(out, cap, ",\"cluster\":{\"node\":%s,\"epoch\":%lld,\"owned\":%llu,\"peers\":%llu,\"lease_valid\":%s}",
		 node, (long long)cs.epoch, (unsigned long long)cs.owned, (unsigned long long)cs.peers,
		 cs.lease_valid ? "true" : "false") >= (int)cap)
		out[0] = '\0';	/* cannot happen with the sizes above; no half object */
}

static void on_healthz(struct evhttp_request *req, void *arg)
{
	struct hd_runtime *rt = arg;
	char body[2560], failure[64] = "null", when[32], listener[256], cluster[3 * CLUSTER_NODE_MAX + 200] = "";
	size_t streaming = 0, parked = 0;
	struct relay_counts n = counts_of(rt);
	struct tm tm;

	if (rt->last_reload_failure)
		json_text_string(failure, sizeof(failure), 0, rt->last_reload_failure);
	gmtime_r(&rt->last_reload_time, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	http_listener_health_json(http_server_listener(rt->http), listener, sizeof(listener));
	if (rt->relay)
		relay_stream_counts(rt->relay, &streaming, &parked);
	cluster_health_json(rt, cluster, sizeof(cluster));
	snprintf(body, sizeof(body),
		 "{\"status\":\"%s\",\"version\":\"%s\",\"uptime_s\":%.0f,\"conversations\":%lu,"
		 "\"conversations_by_state\":{\"bot\":%zu,\"routing\":%zu,\"agent\":%zu,\"ending\":%zu},"
		 "\"streams\":{\"streaming\":%zu,\"parked\":%zu},"
		 "\"generation\":%lu,\"last_reload\":{\"ok\":%s,\"error\":%s,\"time\":\"%s\"},"
		 "\"listener\":%s%s}",
		 rt->stopping ? "stopping" : "ok", HANDOFFD_VERSION, runtime_uptime(rt),
		 runtime_conversations(rt), n.bot, n.routing, n.agent, n.ending, streaming, parked,
		 script_host_generation(rt->scripts), rt->last_reload_ok ? "true" : "false", failure, when,
		 listener, cluster);
	http_server_reply_json(req, rt->stopping ? 503 : 200, body);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
	struct hd_runtime *rt = arg;
	struct evbuffer *body = evbuffer_new();

	if (!body) {
		evhttp_send_error(req, 503, NULL);
		return;
	}
	metrics_render(rt->metrics, body);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; version=0.0.4");
	evhttp_send_reply(req, 200, NULL, body);
	evbuffer_free(body);
}

/* Work that a graceful stop waits for: unanswered requests and unfinished script tasks. */
static int in_flight(const struct hd_runtime *rt)
{
	return (rt->http ? (int)http_server_in_flight(rt->http) : 0) + (int)script_host_tasks(rt->scripts);
}

static void on_left(void *arg)
{
	struct hd_runtime *rt = arg;

	loop_stop(rt->loop);
}

/* A cluster member's conversations go to the other instances when it has left. */
#define CLUSTER_LEAVE_MS 5000

static void on_drain_tick(void *arg)
{
	struct hd_runtime *rt = arg;
	int busy = in_flight(rt);

	if (busy > 0 && clock_mono_ms() < rt->stop_deadline_ms)
		return;
	if (busy > 0)
		log_warn(rt->log, "shutdown.deadline", "abandoned=%d", busy);
	loop_timer_stop(rt->drain);
	if (relay_cluster_leave(rt->relay, CLUSTER_LEAVE_MS, on_left, rt) < 0)
		loop_stop(rt->loop);
}

void runtime_stop(struct hd_runtime *rt)
{
	if (rt->stopping)
		return;
	rt->stopping = true;
	rt->stop_deadline_ms = clock_mono_ms() + (uint64_t)(rt->config->shutdown_timeout * 1000.0);
	if (rt->http)
		http_server_stop_accepting(rt->http);
	script_host_shutdown(rt->scripts);
	sdnotify_stopping(rt->notify);
	log_info(rt->log, "shutdown.begin", "in_flight=%d timeout_s=%g", in_flight(rt),
		 rt->config->shutdown_timeout);
	if (!rt->drain)
		rt->drain = loop_timer_new(rt->loop, on_drain_tick, rt);
	if (!rt->drain || loop_timer_start(rt->drain, DRAIN_POLL_MS, 1) < 0)
		loop_stop(rt->loop);	/* cannot wait: stop now rather than never */
}

static void on_signal(int signo, void *arg)
{
	struct hd_runtime *rt = arg;
	char err[1024];

	if (signo == SIGHUP) {
		log_info(rt->log, "signal", "name=SIGHUP action=reload");
		log_reopen(rt->log);
		runtime_reload(rt, err, sizeof(err));
		return;
	}
	log_info(rt->log, "signal", "name=%s action=stop", signo == SIGTERM ? "SIGTERM" : "SIGINT");
	runtime_stop(rt);
}

/* A script file changed (scripts.watch): reload, as on SIGHUP. */
static void on_scripts_changed(void *arg)
{
	char err[1024];

	runtime_reload(arg, err, sizeof(err));
}

static int install_signals(struct hd_runtime *rt)
{
	static const int signos[] = { SIGTERM, SIGINT, SIGHUP };

	for (size_t i = 0; i < sizeof(signos) / sizeof(signos[0]); i++) {
		rt->signals[i] = loop_signal_new(rt->loop, signos[i], on_signal, rt);
		if (!rt->signals[i])
			return -ENOMEM;
	}
	return 0;
}

int runtime_start(struct hd_runtime *rt, char *err, size_t errlen)
{
	const struct config *cfg = rt->config;
	int rc;

	/* The built-in routes first, so a hub's webhook cannot take /healthz. */
	rt->http = http_server_new(rt->loop, rt->log, cfg->listen_host, cfg->listen_port,
				   &(struct http_listener_limits){
					   .connections = (unsigned)cfg->limits.connections,
					   .connections_per_ip = (unsigned)cfg->limits.connections_per_ip,
					   .request_timeout = cfg->limits.request_timeout,
					   .idle_timeout = cfg->limits.keepalive_timeout,
					   .buffered_bytes = (size_t)(cfg->limits.buffered_mb * 1024 * 1024),
				   }, err, errlen);
	if (!rt->http)
		return -EADDRNOTAVAIL;
	rc = http_server_route(rt->http, "GET", "/healthz", on_healthz, rt);
	if (rc == 0)
		rc = http_server_route(rt->http, "GET", "/metrics", on_metrics, rt);
	if (rc == 0)
		rc = admin_register(rt);
	if (rc < 0) {
		snprintf(err, errlen, "start-up failed: %s", strerror(-rc));
		return rc;
	}
	rc = script_host_load(rt->scripts, err, errlen);
	record_reload(rt, rc, err, errlen);
	if (rc < 0)
		return rc;
	if (cfg->hub_module || cfg->front_module) {
		struct relay_desk_ops desk = desk_ops(rt);	/* the relay calls the scripts so */

		rt->relay = relay_new(rt, &desk, err, errlen);
		if (!rt->relay)
			return -EINVAL;
	}
	rc = install_signals(rt);
	if (rc < 0) {
		snprintf(err, errlen, "start-up failed: %s", strerror(-rc));
		return rc;
	}
	if (cfg->scripts.watch)
		/* A failure is logged; reload by signal still works. */
		rt->watch = watch_new(cfg, rt->loop, rt->log, on_scripts_changed, rt);
	log_info(rt->log, "http.listen", "addr=%s:%d", cfg->listen_host, http_server_port(rt->http));
	rt->notify = sdnotify_new(rt);
	sdnotify_ready(rt->notify);
	return 0;
}

int runtime_run(struct hd_runtime *rt)
{
	log_info(rt->log, "started", "version=%s pid=%ld", HANDOFFD_VERSION, (long)getpid());
	if (loop_run(rt->loop) < 0) {
		log_error(rt->log, "loop.failed", "reason=dispatch");
		return 1;
	}
	log_info(rt->log, "stopped", "uptime_s=%.0f", runtime_uptime(rt));
	return 0;
}
