/* pg_driver.c - drives runtime/net/pg_conn.c for tests/integration/test_pg_conn.py.
 * Reads commands from stdin, one per line, and prints what the connection reports as one
 * JSON object per line on stdout. The log goes to stderr.
 *
 *   pg_driver --conninfo STR [--password-env NAME] [--max-queued N] [--backoff-max MS]
 *             [--batch-timeout MS] [--check SQL] [--log-level L]
 *
 * --check runs pg_conn_check_sync() first and prints {"ev":"check","rc":N,"out":S,"err":S}.
 *
 * Commands (each line is handled within one loop turn, so its statements share a batch):
 *   exec TAG SQL...          one statement; prints its rows when the batch is done
 *   bare TAG SQL...          the same, queued bare (without the prologue)
 *   prologue TAG SQL...      sets the batch prologue ("-": clears it)
 *   listen TAG CHANNEL       pg_conn_listen
 *   batch TAG N [SLEEP_S]    N inserts into items(tag, n) [then SELECT pg_sleep(SLEEP_S)]
 *   badbatch TAG N           N inserts, the middle one into a table that does not exist
 *   cancel TAG N             N inserts, then pg_conn_free() before the batch goes out
 *   stats                    the connection's figures
 * End of input frees everything and exits 0 (ASan reports leaks as a failure).
 *
 * Output: {"ev":"ready"}, {"ev":"state","up":B,"reason":S}, {"ev":"done","tag":S,"err":N,
 * "reason":S,"msg":S,"rows":[[...]]}, {"ev":"batch","tag":S,"ok":N,"failed":N,"err":N,
 * "reason":S,"msg":S} once every statement of a batch/badbatch/cancel reported,
 * {"ev":"refused","tag":S,"err":N,"reason":S} when pg_conn_queue() refused,
 * {"ev":"prologue","tag":S,"err":N}, {"ev":"listen","tag":S,"err":N} (the calls' returns),
 * {"ev":"prologue_failed","sqlstate":S,"msg":S} (the hook),
 * {"ev":"notify","channel":S|null,"payload":S}, {"ev":"stats",...}, {"ev":"error","msg":S}.
 * "done" also carries "sqlstate" (pg_conn_batch_sqlstate). */
#include "base/log.h"
#include "net/loop.h"
#include "net/pg_conn.h"
#include "driver_io.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG_CAP 64

struct driver {
	struct loop *lp;
	struct log *lg;
	struct pg_conn *pc;
	struct event *in;
	struct evbuffer *input;		/* stdin up to the next newline */
};

/* A command's tag, kept until its statement's callback. */
struct tagged {
	struct driver *d;
	char tag[TAG_CAP];
};

/* One tagged group of statements whose outcomes are counted. */
struct tally {
	char tag[TAG_CAP];
	unsigned expected, ok, failed;
	int err;
	char msg[512];
};

/* {===== output */

static void emit_end(void)
{
	fputs("}\n", stdout);
	fflush(stdout);
}

static void error(const char *msg)
{
	fputs("{\"ev\":\"error\",\"msg\":", stdout);
	driver_json_str(msg);
	emit_end();
}

static void print_rows(const PGresult *res)
{
	fputs(",\"rows\":[", stdout);
	for (int i = 0; res && i < PQntuples(res); i++) {
		printf("%s[", i ? "," : "");
		for (int j = 0; j < PQnfields(res); j++) {
			printf("%s", j ? "," : "");
			driver_json_str(PQgetisnull(res, i, j) ? NULL : PQgetvalue(res, i, j));
		}
		putchar(']');
	}
	putchar(']');
}

/* }===== */

/* {===== callbacks */

static void on_state(void *arg, bool up, const char *reason)
{
	(void)arg;
	printf("{\"ev\":\"state\",\"up\":%s,\"reason\":", up ? "true" : "false");
	driver_json_str(reason);
	emit_end();
}

static void on_exec(void *arg, int err, const char *msg, const struct pg_result *res)
{
	struct tagged *tag = arg;

	fputs("{\"ev\":\"done\",\"tag\":", stdout);
	driver_json_str(tag->tag);
	printf(",\"err\":%d,\"reason\":", err);
	driver_json_str(pg_conn_strerror(err));
	fputs(",\"msg\":", stdout);
	driver_json_str(msg);
	fputs(",\"sqlstate\":", stdout);
	driver_json_str(pg_conn_batch_sqlstate(((struct tagged *)arg)->d->pc));
	print_rows((const PGresult *)res);
	emit_end();
	free(tag);
}

static void on_prologue_failed(void *arg, const char *sqlstate, const char *msg)
{
	(void)arg;
	fputs("{\"ev\":\"prologue_failed\",\"sqlstate\":", stdout);
	driver_json_str(sqlstate);
	fputs(",\"msg\":", stdout);
	driver_json_str(msg);
	emit_end();
}

static void on_notify(void *arg, const char *channel, const char *payload)
{
	(void)arg;
	fputs("{\"ev\":\"notify\",\"channel\":", stdout);
	driver_json_str(channel);
	fputs(",\"payload\":", stdout);
	driver_json_str(payload);
	emit_end();
}

static void print_tally(const struct tally *t)
{
	fputs("{\"ev\":\"batch\",\"tag\":", stdout);
	driver_json_str(t->tag);
	printf(",\"ok\":%u,\"failed\":%u,\"err\":%d,\"reason\":", t->ok, t->failed, t->err);
	driver_json_str(pg_conn_strerror(t->err));
	fputs(",\"msg\":", stdout);
	driver_json_str(t->msg[0] ? t->msg : NULL);
	emit_end();
}

static void on_counted(void *arg, int err, const char *msg, const struct pg_result *res)
{
	struct tally *t = arg;

	(void)res;
	if (err) {
		t->failed++;
		if (!t->err) {
			t->err = err;
			snprintf(t->msg, sizeof(t->msg), "%s", msg ? msg : "");
		}
	} else {
		t->ok++;
	}
	if (t->ok + t->failed == t->expected) {
		print_tally(t);
		free(t);
	}
}

/* }===== */

/* {===== commands */

static void refused(const char *tag, int err)
{
	fputs("{\"ev\":\"refused\",\"tag\":", stdout);
	driver_json_str(tag);
	printf(",\"err\":%d,\"reason\":", err);
	driver_json_str(pg_conn_strerror(err));
	emit_end();
}

static void cmd_exec(struct driver *d, const char *tag, const char *sql, bool bare)
{
	struct tagged *t = malloc(sizeof(*t));
	int err = -ENOMEM;

	if (t) {
		t->d = d;
		snprintf(t->tag, sizeof(t->tag), "%s", tag);
		err = bare ? pg_conn_queue_bare(d->pc, sql, 0, NULL, on_exec, t) :
			     pg_conn_queue(d->pc, sql, 0, NULL, on_exec, t);
	}
	if (err) {
		refused(tag, err);
		free(t);
	}
}

/* The return of a call named EV for TAG. */
static void returned(const char *ev, const char *tag, int err)
{
	printf("{\"ev\":\"%s\",\"tag\":", ev);
	driver_json_str(tag);
	printf(",\"err\":%d", err);
	emit_end();
}

static void cmd_prologue(struct driver *d, const char *tag, const char *sql)
{
	bool clear = strcmp(sql, "-") == 0;

	returned("prologue", tag, pg_conn_set_prologue(d->pc, clear ? NULL : sql, 0, NULL,
							 on_prologue_failed, d));
}

/* Queues one counted statement; a refusal shrinks what the tally waits for. */
static void queue_counted(struct driver *d, struct tally *t, const char *sql, int nparams,
			  const char *const *params)
{
	int err = pg_conn_queue(d->pc, sql, nparams, params, on_counted, t);

	if (err) {
		refused(t->tag, err);
		t->expected--;
	}
}

/* N inserts (BAD_AT: the index that goes to a missing table, or -1), then the optional
 * sleep. The tally is complete when every accepted statement reported. */
static void cmd_batch(struct driver *d, const char *tag, long n, long bad_at, const char *sleep_s)
{
	struct tally *t = calloc(1, sizeof(*t));
	char num[24];

	if (!t) {
		error("out of memory");
		return;
	}
	snprintf(t->tag, sizeof(t->tag), "%s", tag);
	t->expected = (unsigned)n + (sleep_s ? 1 : 0);
	for (long i = 0; i < n; i++) {
		const char *params[] = { tag, num };

		snprintf(num, sizeof(num), "%ld", i);
		queue_counted(d, t, i == bad_at ? "INSERT INTO missing_table(tag, n) VALUES ($1, $2)" :
				    "INSERT INTO items(tag, n) VALUES ($1, $2)", 2, params);
	}
	if (sleep_s) {
		const char *params[] = { sleep_s };

		queue_counted(d, t, "SELECT pg_sleep($1::float8)", 1, params);
	}
	if (t->expected == 0) {
		print_tally(t);
		free(t);
	}
}

static void cmd_stats(struct driver *d)
{
	struct pg_conn_stats s;

	pg_conn_stats(d->pc, &s);
	printf("{\"ev\":\"stats\",\"up\":%s,\"queued\":%u,\"batches_committed\":%llu,"
	       "\"batches_failed\":%llu,\"statements_committed\":%llu,\"connects\":%llu,"
	       "\"connect_failures\":%llu,\"batches_fenced\":%llu,\"round_trips\":%llu,"
	       "\"commit_us_count\":%llu,\"commit_us_sum\":%llu", s.up ? "true" : "false", s.queued,
	       (unsigned long long)s.batches_committed, (unsigned long long)s.batches_failed,
	       (unsigned long long)s.statements_committed, (unsigned long long)s.connects,
	       (unsigned long long)s.connect_failures, (unsigned long long)s.batches_fenced,
	       (unsigned long long)s.round_trips, (unsigned long long)s.commit_us_count,
	       (unsigned long long)s.commit_us_sum);
	emit_end();
}

static char *word(char **s)
{
	char *w = *s + strspn(*s, " "), *sp;

	if (!*w)
		return NULL;
	sp = strchr(w, ' ');
	*s = sp ? (*sp = '\0', sp + 1) : w + strlen(w);
	return w;
}

static void command(struct driver *d, char *line)
{
	char *cmd = word(&line), *tag = cmd ? word(&line) : NULL, *arg = NULL;
	/* These take the rest of the line. */
	bool is_exec = cmd && (strcmp(cmd, "exec") == 0 || strcmp(cmd, "bare") == 0 ||
			       strcmp(cmd, "prologue") == 0 || strcmp(cmd, "listen") == 0);
	long n = 0;

	if (tag && !is_exec) {
		arg = word(&line);
		n = arg ? strtol(arg, NULL, 10) : 0;
	}
	if (!cmd)
		return;
	if (!d->pc)
		error("connection freed");
	else if (strcmp(cmd, "stats") == 0)
		cmd_stats(d);
	else if (!tag || strlen(tag) >= TAG_CAP)
		error("command needs a tag");
	else if (strcmp(cmd, "prologue") == 0)
		cmd_prologue(d, tag, line);
	else if (strcmp(cmd, "listen") == 0)
		returned("listen", tag, pg_conn_listen(d->pc, line));
	else if (is_exec)
		cmd_exec(d, tag, line, strcmp(cmd, "bare") == 0);	/* the rest of the line is the SQL */
	else if (n <= 0 || n > 1000000)
		error("bad count");
	else if (strcmp(cmd, "batch") == 0)
		cmd_batch(d, tag, n, -1, word(&line));
	else if (strcmp(cmd, "badbatch") == 0)
		cmd_batch(d, tag, n, n / 2, NULL);
	else if (strcmp(cmd, "cancel") == 0) {
		cmd_batch(d, tag, n, -1, NULL);
		pg_conn_free(d->pc);
		d->pc = NULL;
	} else
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

static void print_check(const struct pg_conn_opts *o, const char *sql)
{
	char out[256], err[512] = "";
	int rc = pg_conn_check_sync(o, sql, out, sizeof(out), err, sizeof(err));

	printf("{\"ev\":\"check\",\"rc\":%d,\"out\":", rc);
	driver_json_str(out);
	fputs(",\"err\":", stdout);
	driver_json_str(err);
	emit_end();
}

int main(int argc, char **argv)
{
	static struct driver d;
	struct pg_conn_opts o = { 0 };
	enum log_level level = LEVEL_INFO;
	const char *check_sql = NULL;
	int rc = 1;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--conninfo") == 0)
			o.conninfo = argv[i + 1];
		else if (strcmp(argv[i], "--password-env") == 0)
			o.password = getenv(argv[i + 1]);
		else if (strcmp(argv[i], "--max-queued") == 0)
			o.max_queued = (unsigned)strtoul(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--backoff-max") == 0)
			o.backoff_max_ms = (uint32_t)strtoul(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--batch-timeout") == 0)
			o.batch_timeout_ms = (uint32_t)strtoul(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--check") == 0)
			check_sql = argv[i + 1];
		else if (strcmp(argv[i], "--log-level") == 0)
			log_level_parse(argv[i + 1], &level);
	}
	if (!o.conninfo) {
		fprintf(stderr, "usage: pg_driver --conninfo STR [--password-env NAME] ...\n");
		return 2;
	}
	if (check_sql)
		print_check(&o, check_sql);
	d.lg = log_new();
	d.lp = loop_new();
	d.input = evbuffer_new();
	if (d.lg && d.lp && d.input) {
		log_set_level(d.lg, level);
		if (o.password)
			log_add_secret(d.lg, o.password);
		d.pc = pg_conn_new(d.lp, d.lg, &o, on_state, &d);
		if (d.pc)
			pg_conn_set_notify(d.pc, on_notify, &d);
		d.in = event_new(loop_base(d.lp), 0, EV_READ | EV_PERSIST, on_input, &d);
		if (d.pc && d.in && event_add(d.in, NULL) == 0) {
			puts("{\"ev\":\"ready\"}");
			fflush(stdout);
			rc = loop_run(d.lp) < 0;
		}
	}
	pg_conn_free(d.pc);
	if (d.in)
		event_free(d.in);
	if (d.input)
		evbuffer_free(d.input);
	loop_free(d.lp);
	log_free(d.lg);
	return rc;
}
