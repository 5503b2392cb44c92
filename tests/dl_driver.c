/* dl_driver.c - drives the Direct Line client (runtime/directline/directline.h) for the integration
 * tests: reads commands from stdin, one per line, and prints everything the client
 * reports as one JSON object per line on stdout. The log goes to stderr.
 *
 *   dl_driver -c CONFIG.lua [--log-level debug] [--print-tokens 1]
 *
 * Commands:
 *   open KEY                   a new conversation
 *   send KEY TAG TEXT...       a message activity with TEXT
 *   sendjson KEY TAG JSON      any activity
 *   senditem KEY TAG ID CREATED MAYBE JSON
 *                              any activity as the caller's item ID created at CREATED (ms);
 *                              MAYBE 1: it may have been sent before (directline_send_item)
 *   close KEY [end]            give the handle back (end: tell the bot)
 *   park KEY / wake KEY        directline_park / directline_wake
 *   reopen KEY [expired|unplaced]
 *                              close if open, then resume from the last on_persist
 *                              (expired: as if its token had expired meanwhile;
 *                              unplaced: as if no watermark had ever been stored)
 *   stats                      print the client's figures
 *   metrics                    print the metrics text
 * End of input closes everything and exits.
 *
 * Output events: {"ev":"ready"}, {"ev":"state",...}, {"ev":"activity","raw":{...}},
 * {"ev":"persist",...} (the token only with --print-tokens, so a test can look for it in
 * the log), {"ev":"sent",...}, {"ev":"refused",...}, {"ev":"stats",...},
 * {"ev":"metrics","text":...}, {"ev":"error",...}. */
#include "base/config.h"
#include "directline/directline.h"
#include "net/http_client.h"
#include "base/log.h"
#include "net/loop.h"
#include "base/metrics.h"

#include <handoffd/activity.h>

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_CONVS 4096
#define LINE_MAX_BYTES (1 << 20)

/* The last on_persist of a conversation, kept for `reopen`. */
struct saved {
	char *conversation_id, *token, *watermark;
	int64_t token_expires;
	uint64_t *seen;
	size_t nseen;
	bool unsettled;
};

struct conv {
	char *key;
	struct dl_conv *c;
	struct saved saved;
};

struct driver {
	struct loop *lp;
	struct log *lg;
	struct http_client *hc;
	struct metrics *m;
	struct directline *dl;
	struct event *in;
	char *line;
	size_t used;
	struct conv convs[MAX_CONVS];
	size_t nconvs;
	bool print_tokens;
};

/* {===== Output */

static void json_str(FILE *f, const char *s, size_t len)
{
	fputc('"', f);
	for (size_t i = 0; s && i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void json_cstr(FILE *f, const char *s)
{
	if (s)
		json_str(f, s, strlen(s));
	else
		fputs("null", f);
}

static void emit_end(void)
{
	fputs("}\n", stdout);
	fflush(stdout);
}

static void emit_begin(const char *ev, const char *key, struct dl_conv *c)
{
	printf("{\"ev\":\"%s\",\"key\":", ev);
	json_cstr(stdout, key);
	printf(",\"conv\":");
	json_cstr(stdout, c ? directline_conversation_id(c) : NULL);
}

/* }===== */

/* {===== Callbacks */

static struct conv *find(struct driver *d, const char *key)
{
	for (size_t i = 0; i < d->nconvs; i++)
		if (strcmp(d->convs[i].key, key) == 0)
			return &d->convs[i];
	return NULL;
}

static void on_activity(struct dl_conv *c, const char *key, const struct hd_activity *a, void *arg)
{
	(void)arg;
	emit_begin("activity", key, c);
	printf(",\"id\":");
	json_str(stdout, a->id.ptr, a->id.len);
	printf(",\"type\":");
	json_str(stdout, a->type.ptr, a->type.len);
	printf(",\"role\":");
	json_str(stdout, a->from_role.ptr, a->from_role.len);
	printf(",\"held\":%s,\"raw\":%.*s", directline_held(c) ? "true" : "false", (int)a->raw.len, a->raw.ptr);
	emit_end();
}

static void on_state(struct dl_conv *c, const char *key, enum dl_state state, const char *reason, void *arg)
{
	(void)arg;
	emit_begin("state", key, c);
	printf(",\"state\":\"%s\",\"reason\":", directline_state_name(state));
	json_cstr(stdout, reason);
	emit_end();
}

static void save(struct saved *s, const struct dl_persist *p)
{
	free(s->conversation_id);
	free(s->token);
	free(s->watermark);
	free(s->seen);
	s->conversation_id = p->conversation_id ? strdup(p->conversation_id) : NULL;
	s->token = p->token ? strdup(p->token) : NULL;
	s->watermark = p->watermark ? strdup(p->watermark) : NULL;
	s->token_expires = p->token_expires;
	s->unsettled = p->unsettled;
	s->seen = p->nseen ? malloc(p->nseen * sizeof(*s->seen)) : NULL;
	s->nseen = s->seen ? p->nseen : 0;
	if (s->seen)
		memcpy(s->seen, p->seen, p->nseen * sizeof(*s->seen));
}

static void on_persist(struct dl_conv *c, const char *key, const struct dl_persist *p, void *arg)
{
	struct driver *d = arg;
	struct conv *cv = find(d, key);

	if (cv)
		save(&cv->saved, p);
	emit_begin("persist", key, c);
	printf(",\"watermark\":");
	json_cstr(stdout, p->watermark);
	if (d->print_tokens) {
		printf(",\"token\":");
		json_cstr(stdout, p->token);
	}
	printf(",\"token_expires\":%lld,\"has_token\":%s,\"nseen\":%zu,\"unsettled\":%s",
	       (long long)p->token_expires, p->token ? "true" : "false", p->nseen, p->unsettled ? "true" : "false");
	emit_end();
}

struct tag {
	char key[256];
	char tag[64];
};

static void on_sent(struct dl_conv *c, int err, const char *reason, const char *activity_id, void *arg)
{
	struct tag *t = arg;

	emit_begin("sent", t->key, c);
	printf(",\"tag\":");
	json_cstr(stdout, t->tag);
	printf(",\"err\":%d,\"reason\":", err);
	json_cstr(stdout, reason);
	printf(",\"id\":");
	json_cstr(stdout, activity_id);
	emit_end();
	free(t);
}

static const struct directline_callbacks callbacks = {
	.on_activity = on_activity, .on_state = on_state, .on_persist = on_persist,
};

/* }===== */

/* {===== Commands */

static void error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void error(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	printf("{\"ev\":\"error\",\"message\":");
	json_cstr(stdout, msg);
	emit_end();
}

static void cmd_open(struct driver *d, const char *key)
{
	struct conv *cv = find(d, key);

	if (!cv) {
		if (d->nconvs == MAX_CONVS) {
			error("too many conversations");
			return;
		}
		cv = &d->convs[d->nconvs++];
		cv->key = strdup(key);
	}
	if (cv->c) {
		error("%s is open", key);
		return;
	}
	cv->c = directline_open(d->dl, key, NULL);
	if (!cv->c)
		error("open %s failed", key);
}

/* HOW "expired": as if the process was down longer than the token lived; "unplaced": as
 * if the process that took the bot's activities in had never stored their position. */
static void cmd_reopen(struct driver *d, struct conv *cv, const char *how)
{
	bool expired = strcmp(how, "expired") == 0;
	struct dl_persist p = {
		.conversation_id = cv->saved.conversation_id, .token = cv->saved.token,
		.token_expires = expired ? 1 : cv->saved.token_expires,
		.watermark = strcmp(how, "unplaced") == 0 ? NULL : cv->saved.watermark,
		.seen = cv->saved.seen, .nseen = cv->saved.nseen, .unsettled = cv->saved.unsettled,
	};

	directline_close(cv->c, false);
	cv->c = directline_open(d->dl, cv->key, &p);
	if (!cv->c)
		error("reopen %s failed", cv->key);
}

static void cmd_send(struct driver *d, struct conv *cv, const char *tag, const char *json,
		     const struct dl_send_item *item)
{
	struct tag *t = calloc(1, sizeof(*t));
	int rc;

	(void)d;
	if (!t)
		return;
	snprintf(t->key, sizeof(t->key), "%s", cv->key);
	snprintf(t->tag, sizeof(t->tag), "%s", tag);
	rc = item ? directline_send_item(cv->c, json, strlen(json), item, on_sent, t)
		  : directline_send(cv->c, json, strlen(json), on_sent, t);
	if (rc < 0) {
		emit_begin("refused", cv->key, cv->c);
		printf(",\"tag\":");
		json_cstr(stdout, tag);
		printf(",\"err\":%d", rc);
		emit_end();
		free(t);
	}
}

static void send_text(struct driver *d, struct conv *cv, const char *tag, const char *text)
{
	size_t n = strlen(text) * 6 + 64;
	char *json = malloc(n), *p = json;

	if (!json)
		return;
	p += sprintf(p, "{\"type\":\"message\",\"text\":\"");
	for (; *text; text++) {
		if (*text == '"' || *text == '\\')
			*p++ = '\\';
		*p++ = *text;
	}
	sprintf(p, "\"}");
	cmd_send(d, cv, tag, json, NULL);
	free(json);
}

static void cmd_stats(struct driver *d)
{
	struct directline_stats st;

	directline_get_stats(d->dl, &st);
	printf("{\"ev\":\"stats\",\"conversations\":%zu,\"online\":%zu,\"reconnecting\":%zu,"
	       "\"dispatched\":%llu,\"duplicates\":%llu,\"echoes\":%llu,\"reconnects\":%llu,"
	       "\"refreshes\":%llu,\"connects_in_flight\":%u,\"connects_queued\":%zu,\"parked\":%zu",
	       st.conversations, st.online, st.reconnecting, (unsigned long long)st.dispatched,
	       (unsigned long long)st.duplicates, (unsigned long long)st.echoes,
	       (unsigned long long)st.reconnects, (unsigned long long)st.refreshes,
	       st.connects_in_flight, st.connects_queued, st.parked);
	emit_end();
}

static void cmd_metrics(struct driver *d)
{
	struct evbuffer *buf = evbuffer_new();

	if (!buf)
		return;
	metrics_render(d->m, buf);
	printf("{\"ev\":\"metrics\",\"text\":");
	json_str(stdout, (const char *)evbuffer_pullup(buf, -1), evbuffer_get_length(buf));
	emit_end();
	evbuffer_free(buf);
}

/* Splits off the next space-separated word of *S. */
static char *word(char **s)
{
	char *w = *s, *sp;

	while (*w == ' ')
		w++;
	if (!*w)
		return NULL;
	sp = strchr(w, ' ');
	if (sp) {
		*sp = '\0';
		*s = sp + 1;
	} else {
		*s = w + strlen(w);
	}
	return w;
}

static void command(struct driver *d, char *line)
{
	char *cmd = word(&line), *key = cmd ? word(&line) : NULL;
	struct conv *cv = key ? find(d, key) : NULL;

	if (!cmd)
		return;
	if (strcmp(cmd, "stats") == 0) {
		cmd_stats(d);
	} else if (strcmp(cmd, "metrics") == 0) {
		cmd_metrics(d);
	} else if (strcmp(cmd, "open") == 0 && key) {
		cmd_open(d, key);
	} else if (strcmp(cmd, "reopen") == 0 && cv && cv->saved.conversation_id) {
		cmd_reopen(d, cv, line);
	} else if (!cv || !cv->c) {
		error("bad command or unknown conversation: %s %s", cmd, key ? key : "");
	} else if (strcmp(cmd, "send") == 0 || strcmp(cmd, "sendjson") == 0) {
		char *tag = word(&line);

		if (!tag)
			error("%s needs a tag", cmd);
		else if (cmd[4] == 'j')
			cmd_send(d, cv, tag, line, NULL);
		else
			send_text(d, cv, tag, line);
	} else if (strcmp(cmd, "senditem") == 0) {
		char *tag = word(&line), *id = tag ? word(&line) : NULL, *created = id ? word(&line) : NULL;
		char *maybe = created ? word(&line) : NULL;
		struct dl_send_item item = { 0 };

		if (!maybe) {
			error("senditem needs a tag, an id, a creation time and a maybe-sent flag");
			return;
		}
		item.id = strtoll(id, NULL, 10);
		item.created_ms = strtoll(created, NULL, 10);
		item.maybe_sent = strcmp(maybe, "1") == 0;
		cmd_send(d, cv, tag, line, &item);
	} else if (strcmp(cmd, "park") == 0) {
		directline_park(cv->c);
	} else if (strcmp(cmd, "wake") == 0) {
		directline_wake(cv->c);
	} else if (strcmp(cmd, "close") == 0) {
		directline_close(cv->c, strcmp(line, "end") == 0);
		cv->c = NULL;
	} else {
		error("unknown command %s", cmd);
	}
}

static void on_input(evutil_socket_t fd, short what, void *arg)
{
	struct driver *d = arg;
	ssize_t n;
	char *nl;

	(void)what;
	n = read(fd, d->line + d->used, LINE_MAX_BYTES - d->used - 1);
	if (n <= 0) {
		loop_stop(d->lp);
		return;
	}
	d->used += (size_t)n;
	d->line[d->used] = '\0';
	while ((nl = strchr(d->line, '\n'))) {
		*nl = '\0';
		command(d, d->line);
		d->used -= (size_t)(nl + 1 - d->line);
		memmove(d->line, nl + 1, d->used + 1);
	}
	if (d->used == LINE_MAX_BYTES - 1)
		d->used = 0;	/* a line that long is garbage */
}

/* }===== */

static int setup(struct driver *d, const struct config *cfg)
{
	struct http_client_opts ho = { .ca_file = cfg->directline.ca_file, .proxy = "" };

	d->lp = loop_new();
	d->m = metrics_new();
	d->line = malloc(LINE_MAX_BYTES);
	if (!d->lp || !d->m || !d->line || http_client_global_init() < 0)
		return -ENOMEM;
	d->hc = http_client_new(d->lp, d->lg, &ho);
	if (!d->hc)
		return -ENOMEM;
	d->dl = directline_new(d->lp, d->lg, d->hc, d->m, &cfg->directline, &callbacks, d);
	if (!d->dl)
		return -EINVAL;
	d->in = event_new(loop_base(d->lp), 0, EV_READ | EV_PERSIST, on_input, d);
	return d->in && event_add(d->in, NULL) == 0 ? 0 : -ENOMEM;
}

static void teardown(struct driver *d)
{
	for (size_t i = 0; i < d->nconvs; i++) {
		directline_close(d->convs[i].c, false);
		free(d->convs[i].key);
		free(d->convs[i].saved.conversation_id);
		free(d->convs[i].saved.token);
		free(d->convs[i].saved.watermark);
		free(d->convs[i].saved.seen);
	}
	if (d->in)
		event_free(d->in);
	directline_free(d->dl);
	http_client_free(d->hc);
	http_client_global_cleanup();
	metrics_free(d->m);
	loop_free(d->lp);
	free(d->line);
}

int main(int argc, char **argv)
{
	static struct driver d;
	struct config *cfg = NULL;
	char err[1024] = "";
	enum log_level level = LEVEL_INFO;
	int rc = 1;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "-c") == 0)
			cfg = config_load(argv[i + 1], err, sizeof(err));
		else if (strcmp(argv[i], "--log-level") == 0)
			log_level_parse(argv[i + 1], &level);
		else if (strcmp(argv[i], "--print-tokens") == 0)
			d.print_tokens = strcmp(argv[i + 1], "1") == 0;
	}
	if (!cfg) {
		fprintf(stderr, "usage: dl_driver -c CONFIG.lua [--log-level L]%s%s\n", err[0] ? ": " : "",
			err[0] ? err : "");
		return 2;
	}
	d.lg = log_new();
	if (d.lg) {
		log_set_level(d.lg, level);
		if (setup(&d, cfg) == 0) {
			printf("{\"ev\":\"ready\"}\n");
			fflush(stdout);
			rc = loop_run(d.lp) < 0;
		}
		teardown(&d);
	}
	config_free(cfg);
	log_free(d.lg);
	return rc;
}
