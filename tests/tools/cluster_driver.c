/* cluster_driver.c - one cluster member (runtime/relay/cluster.c) on its own pg_conn, for
 * tests/integration/test_cluster.py. Reads commands from stdin, one per line, and prints
 * what happens as one JSON object per line on stdout; the log goes to stderr.
 *
 *   cluster_driver --conninfo STR [--password-env NAME] [--node NAME] [--heartbeat S]
 *                  [--lease S] [--schema 1] [--log-level L]
 *
 * --schema 1 runs cluster_schema_sql (bare, one batch) before the member starts.
 *
 * Commands (the statements of one line share a batch):
 *   claim KEY...             cluster_claim each key
 *   write TAG KEY            what the relay does before a side effect: nothing unless the
 *                            lease is valid; then a fenced write touching KEY's row
 *   notify TAG KEY [bad]     cluster_notify(KEY) [and a failing statement in the batch]
 *   release KEY              cluster_release
 *   drain-begin              cluster_drain_begin
 *   drain                    cluster_release_all
 *   stats                    cluster_stats
 * End of input frees everything and exits 0 (ASan reports leaks as a failure).
 *
 * Output: {"ev":"ready"}, {"ev":"state","up":B}, {"ev":"schema","err":N},
 * {"ev":"registered","node":S,"epoch":N}, {"ev":"lost","epoch":N,"sqlstate":S},
 * {"ev":"claimed","keys":[S...]}, {"ev":"woken","key":S|null},
 * {"ev":"claim","key":S,"err":N,"mine":B,"owner":S}, {"ev":"write","tag":S,"lease":B,
 * "err":N,"sqlstate":S}, {"ev":"notified","tag":S,"err":N}, {"ev":"released","key":S,
 * "err":N}, {"ev":"drained","err":N}, {"ev":"stats",...}, {"ev":"error","msg":S}.
 * Every event carries "ms", the monotonic clock in milliseconds. */
#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"
#include "net/pg_conn.h"
#include "relay/cluster.h"
#include "driver_io.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG_CAP 64
#define WORDS_MAX 64

struct driver {
	struct loop *lp;
	struct log *lg;
	struct pg_conn *pc;
	struct cluster *cl;
	struct cluster_opts opts;
	struct event *in;
	struct evbuffer *input;
	bool schema;		/* run the schema first, then start the member */
	bool schema_queued;
};

/* {===== output */

static void begin(const char *ev)
{
	printf("{\"ev\":\"%s\",\"ms\":%" PRIu64, ev, clock_mono_ms());
}

/* ,"NAME": */
static void field(const char *name)
{
	printf(",\"%s\":", name);
}

static void end(void)
{
	fputs("}\n", stdout);
	fflush(stdout);
}

static void error(const char *msg)
{
	begin("error");
	field("msg");
	driver_json_str(msg);
	end();
}

/* }===== */

/* {===== the member's callbacks */

static void on_registered(void *arg, const char *node, int64_t epoch)
{
	(void)arg;
	begin("registered");
	field("node");
	driver_json_str(node);
	printf(",\"epoch\":%" PRId64, epoch);
	end();
}

static void on_lost(void *arg, int64_t old_epoch)
{
	struct driver *d = arg;

	begin("lost");
	printf(",\"epoch\":%" PRId64, old_epoch);
	field("sqlstate");
	driver_json_str(pg_conn_batch_sqlstate(d->pc));
	end();
}

static void on_claimed(void *arg, const char *const *keys, size_t n)
{
	(void)arg;
	begin("claimed");
	fputs(",\"keys\":[", stdout);
	for (size_t i = 0; i < n; i++) {
		if (i)
			putchar(',');
		driver_json_str(keys[i]);
	}
	putchar(']');
	end();
}

static void on_woken(void *arg, const char *key)
{
	(void)arg;
	begin("woken");
	field("key");
	driver_json_str(key);
	end();
}

/* }===== */

/* {===== commands' outcomes (ARG: a malloc'd tag or key, freed here) */

static void on_claim(void *arg, int err, bool mine, const char *owner)
{
	begin("claim");
	field("key");
	driver_json_str(arg);
	printf(",\"err\":%d,\"mine\":%s", err, mine ? "true" : "false");
	field("owner");
	driver_json_str(owner);
	end();
	free(arg);
}

struct pending {
	struct driver *d;
	char text[];
};

static struct pending *pending_new(struct driver *d, const char *text)
{
	struct pending *p = malloc(sizeof(*p) + strlen(text) + 1);

	if (p) {
		p->d = d;
		strcpy(p->text, text);
	}
	return p;
}

static void on_write(void *arg, int err, const char *msg, const struct pg_result *res)
{
	struct pending *p = arg;

	(void)msg;
	(void)res;
	begin("write");
	field("tag");
	driver_json_str(p->text);
	printf(",\"lease\":true,\"err\":%d", err);
	field("sqlstate");
	driver_json_str(pg_conn_batch_sqlstate(p->d->pc));
	end();
	free(p);
}

static void on_notified(void *arg, int err, const char *msg, const struct pg_result *res)
{
	(void)msg;
	(void)res;
	begin("notified");
	field("tag");
	driver_json_str(arg);
	printf(",\"err\":%d", err);
	end();
	free(arg);
}

static void on_released(void *arg, int err)
{
	begin("released");
	field("key");
	driver_json_str(arg);
	printf(",\"err\":%d", err);
	end();
	free(arg);
}

static void on_drained(void *arg, int err)
{
	(void)arg;
	begin("drained");
	printf(",\"err\":%d", err);
	end();
}

/* }===== */

/* {===== commands */

static void refused(const char *what, int err)
{
	char msg[256];

	snprintf(msg, sizeof(msg), "%s refused: %s (%d)", what, pg_conn_strerror(err), err);
	error(msg);
}

static void cmd_claim(struct driver *d, char **w, int n)
{
	for (int i = 0; i < n; i++) {
		char *key = strdup(w[i]);
		int err = key ? cluster_claim(d->cl, key, on_claim, key) : -ENOMEM;

		if (err) {
			free(key);
			refused("claim", err);
		}
	}
}

static void cmd_write(struct driver *d, const char *tag, const char *key)
{
	const char *params[] = { key };
	struct pending *p;
	int err;

	if (!cluster_lease_valid(d->cl)) {
		begin("write");
		field("tag");
		driver_json_str(tag);
		fputs(",\"lease\":false", stdout);
		end();
		return;
	}
	p = pending_new(d, tag);
	err = p ? pg_conn_queue(d->pc, "UPDATE owners SET claimed_at = claimed_at WHERE key = $1", 1, params,
				on_write, p) : -ENOMEM;
	if (err) {
		free(p);
		refused("write", err);
	}
}

static void cmd_notify(struct driver *d, const char *tag, const char *key, bool bad)
{
	char *t = strdup(tag);
	int err = t ? cluster_notify(d->cl, key) : -ENOMEM;

	if (!err && bad)
		err = pg_conn_queue(d->pc, "SELECT 1 FROM missing_table", 0, NULL, NULL, NULL);
	if (!err)
		err = pg_conn_queue(d->pc, "SELECT 1", 0, NULL, on_notified, t);
	if (err) {
		free(t);
		refused("notify", err);
	}
}

static void cmd_release(struct driver *d, const char *key)
{
	char *k = strdup(key);
	int err = k ? cluster_release(d->cl, k, on_released, k) : -ENOMEM;

	if (err) {
		free(k);
		refused("release", err);
	}
}

static void cmd_stats(struct driver *d)
{
	struct cluster_stats s;

	cluster_stats(d->cl, &s);
	begin("stats");
	field("node");
	driver_json_str(s.node);
	printf(",\"epoch\":%" PRId64 ",\"registered\":%s,\"lease_valid\":%s,\"owned\":%" PRIu64
	       ",\"peers\":%" PRIu64 ",\"claims\":%" PRIu64 ",\"takeovers\":%" PRIu64
	       ",\"nodes_expired\":%" PRIu64 ",\"fenced\":%" PRIu64 ",\"lost\":%" PRIu64
	       ",\"round_trips\":%" PRIu64 ",\"commit_us_sum\":%" PRIu64 ",\"commit_us_count\":%" PRIu64,
	       s.epoch, s.registered ? "true" : "false", s.lease_valid ? "true" : "false", s.owned,
	       s.peers, s.claims, s.takeovers, s.nodes_expired, s.fenced, s.lost, s.round_trips,
	       s.commit_us_sum, s.commit_us_count);
	end();
}

static void command(struct driver *d, char *line)
{
	char *w[WORDS_MAX];
	int n = 0;

	for (char *tok = strtok(line, " "); tok && n < WORDS_MAX; tok = strtok(NULL, " "))
		w[n++] = tok;
	if (n == 0)
		return;
	if (!d->cl)
		error("not started");
	else if (strcmp(w[0], "claim") == 0)
		cmd_claim(d, w + 1, n - 1);
	else if (strcmp(w[0], "write") == 0 && n == 3)
		cmd_write(d, w[1], w[2]);
	else if (strcmp(w[0], "notify") == 0 && (n == 3 || n == 4))
		cmd_notify(d, w[1], w[2], n == 4 && strcmp(w[3], "bad") == 0);
	else if (strcmp(w[0], "release") == 0 && n == 2)
		cmd_release(d, w[1]);
	else if (strcmp(w[0], "drain-begin") == 0) {
		int err = cluster_drain_begin(d->cl);

		if (err)
			refused("drain-begin", err);
	} else if (strcmp(w[0], "drain") == 0) {
		int err = cluster_release_all(d->cl, on_drained, d);

		if (err)
			refused("drain", err);
	} else if (strcmp(w[0], "stats") == 0)
		cmd_stats(d);
	else
		error("unknown command");
}

static void on_line(void *arg, char *line)
{
	command(arg, line);
}

static void on_input(evutil_socket_t fd, short what, void *arg)
{
	struct driver *d = arg;

	(void)what;
	if (driver_read_lines(d->input, fd, on_line, d) < 0)
		loop_stop(d->lp);
}

/* }===== */

/* {===== start-up */

static void start_member(struct driver *d)
{
	struct cluster_callbacks cb = { .arg = d, .registered = on_registered, .lost = on_lost,
					.claimed = on_claimed, .woken = on_woken };

	d->cl = cluster_new(d->lp, d->lg, d->pc, &d->opts, &cb);
	if (!d->cl) {
		error("cluster_new failed");
		loop_stop(d->lp);
	}
}

static void on_schema(void *arg, int err, const char *msg, const struct pg_result *res)
{
	struct driver *d = arg;

	(void)res;
	begin("schema");
	printf(",\"err\":%d", err);
	field("msg");
	driver_json_str(msg);
	end();
	if (err == 0)
		start_member(d);
	else if (err != -ECANCELED)
		loop_stop(d->lp);
}

static void on_state(void *arg, bool up, const char *reason)
{
	struct driver *d = arg;

	begin("state");
	printf(",\"up\":%s", up ? "true" : "false");
	field("reason");
	driver_json_str(reason);
	end();
	if (!up || !d->schema || d->schema_queued)
		return;
	d->schema_queued = true;
	for (size_t i = 0; i < cluster_schema_count; i++)
		if (pg_conn_queue_bare(d->pc, cluster_schema_sql[i], 0, NULL,
				       i + 1 == cluster_schema_count ? on_schema : NULL, d) < 0)
			error("schema refused");
}

int main(int argc, char **argv)
{
	static struct driver d;
	struct pg_conn_opts o = { .backoff_max_ms = 500 };
	enum log_level level = LEVEL_INFO;
	int rc = 1;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--conninfo") == 0)
			o.conninfo = argv[i + 1];
		else if (strcmp(argv[i], "--password-env") == 0)
			o.password = getenv(argv[i + 1]);
		else if (strcmp(argv[i], "--node") == 0)
			d.opts.node = argv[i + 1];
		else if (strcmp(argv[i], "--heartbeat") == 0)
			d.opts.heartbeat_s = strtod(argv[i + 1], NULL);
		else if (strcmp(argv[i], "--lease") == 0)
			d.opts.lease_s = strtod(argv[i + 1], NULL);
		else if (strcmp(argv[i], "--schema") == 0)
			d.schema = strcmp(argv[i + 1], "1") == 0;
		else if (strcmp(argv[i], "--log-level") == 0)
			log_level_parse(argv[i + 1], &level);
	}
	if (!o.conninfo) {
		fprintf(stderr, "usage: cluster_driver --conninfo STR [--node NAME] ...\n");
		return 2;
	}
	d.lg = log_new();
	d.lp = loop_new();
	d.input = evbuffer_new();
	if (d.lg && d.lp && d.input) {
		log_set_level(d.lg, level);
		if (o.password)
			log_add_secret(d.lg, o.password);
		d.pc = pg_conn_new(d.lp, d.lg, &o, on_state, &d);
		if (d.pc && !d.schema)
			start_member(&d);
		d.in = event_new(loop_base(d.lp), 0, EV_READ | EV_PERSIST, on_input, &d);
		if (d.pc && d.in && event_add(d.in, NULL) == 0) {
			begin("ready");
			end();
			rc = loop_run(d.lp) < 0;
		}
	}
	cluster_free(d.cl);
	pg_conn_free(d.pc);
	if (d.in)
		event_free(d.in);
	if (d.input)
		evbuffer_free(d.input);
	loop_free(d.lp);
	log_free(d.lg);
	return rc;
}
