/* store.c - the store API (store.h) over the backend the `state` string names: SQLite
 * (store_sqlite.c) or PostgreSQL (store_pg.c). Dispatch only, plus the helpers that
 * free what either backend handed out. */
#include "relay/store_backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct store {
	const struct store_backend *be;
	struct store_impl *impl;
};

bool store_is_postgresql(const char *state)
{
	return strncmp(state, "postgresql://", 13) == 0 || strncmp(state, "postgres://", 11) == 0;
}

int store_check(const char *state, char *err, size_t errlen)
{
	return store_is_postgresql(state) ? store_pg_check(state, err, errlen) : 0;
}

struct store *store_open(struct loop *lp, struct log *lg, const char *path, char *err, size_t errlen)
{
	return store_open_flags(lp, lg, path, 0, err, errlen);
}

struct store *store_open_flags(struct loop *lp, struct log *lg, const char *path, unsigned flags, char *err,
			       size_t errlen)
{
	struct store *st = calloc(1, sizeof(*st));

	if (!st) {
		snprintf(err, errlen, "out of memory opening the state");
		return NULL;
	}
	st->be = store_is_postgresql(path) ? &store_pg_backend : &store_sqlite_backend;
	st->impl = st->be == &store_pg_backend ? store_pg_open(lp, lg, path, flags, err, errlen)
					       : store_sqlite_open(lp, lg, path, err, errlen);
	if (!st->impl) {
		free(st);
		return NULL;
	}
	return st;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	st->be->close(st->impl);
	free(st);
}

int store_flush(struct store *st)
{
	return st->be->flush(st->impl);
}

bool store_write_pending(const struct store *st)
{
	return st->be->write_pending(st->impl);
}

int store_after_commit(struct store *st, store_commit_fn fn, void *arg)
{
	return st->be->after_commit(st->impl, fn, arg);
}

int store_commit_error(const struct store *st)
{
	return st->be->commit_error ? st->be->commit_error(st->impl) : 0;
}

int store_begin(struct store *st)
{
	return st->be->begin(st->impl);
}

void store_before_commit(struct store *st, store_commit_fn fn, void *arg)
{
	st->be->before_commit(st->impl, fn, arg);
}

int store_conv_put(struct store *st, const struct store_conv *c)
{
	return st->be->conv_put(st->impl, c);
}

int store_conv_get(struct store *st, const char *key, struct store_conv *out)
{
	return st->be->conv_get(st->impl, key, out);
}

int store_conv_each_open(struct store *st, store_conv_fn fn, void *arg)
{
	return st->be->conv_each_open(st->impl, fn, arg);
}

int store_purge_ended(struct store *st, int64_t before_s, int64_t events_before_s)
{
	return st->be->purge_ended(st->impl, before_s, events_before_s);
}

void store_conv_clear(struct store_conv *c)
{
	free(c->key);
	free(c->state);
	free(c->user_json);
	free(c->dl_conversation_id);
	free(c->dl_token);
	free(c->watermark);
	free(c->seen);
	free(c->hub_data);
	free(c->handoff_id);
	memset(c, 0, sizeof(*c));
}

int store_event_add(struct store *st, const char *event_id)
{
	return st->be->event_add ? st->be->event_add(st->impl, event_id) : -EOPNOTSUPP;
}

int store_event_add_async(struct store *st, const char *event_id, store_event_fn fn, void *arg)
{
	if (!st->be->event_add_async)
		return st->be->event_add(st->impl, event_id);
	return st->be->event_add_async(st->impl, event_id, fn, arg);
}

int store_event_delete(struct store *st, const char *event_id)
{
	return st->be->event_delete(st->impl, event_id);
}

void store_set_event_ttl(struct store *st, int64_t ttl_s)
{
	st->be->set_event_ttl(st->impl, ttl_s);
}

int64_t store_outbox_add(struct store *st, const char *key, const char *queue, const char *payload, size_t len)
{
	return st->be->outbox_add_call(st->impl, key, queue, NULL, NULL, payload, len);
}

int64_t store_outbox_add_call(struct store *st, const char *key, const char *queue, const char *role,
			      const char *fn, const char *payload, size_t len)
{
	return st->be->outbox_add_call(st->impl, key, queue, role, fn, payload, len);
}

int store_outbox_head(struct store *st, const char *key, const char *queue, struct store_item *out)
{
	return st->be->outbox_head(st->impl, key, queue, out);
}

int store_outbox_done(struct store *st, int64_t id)
{
	return st->be->outbox_done(st->impl, id);
}

int store_outbox_count(struct store *st, const char *key, const char *queue)
{
	return st->be->outbox_count(st->impl, key, queue);
}

int store_outbox_retry(struct store *st, int64_t id, int attempts, int64_t next_at_ms)
{
	return st->be->outbox_retry(st->impl, id, attempts, next_at_ms);
}

int store_outbox_each_queue(struct store *st, int (*fn)(const char *key, const char *queue, void *arg), void *arg)
{
	return st->be->outbox_each_queue(st->impl, fn, arg);
}

bool store_outbox_durable(struct store *st, int64_t id)
{
	return !st->be->outbox_durable || st->be->outbox_durable(st->impl, id);
}

void store_on_durable(struct store *st, store_commit_fn fn, void *arg)
{
	if (st->be->on_durable)
		st->be->on_durable(st->impl, fn, arg);
}

void store_item_clear(struct store_item *it)
{
	free(it->key);
	free(it->queue);
	free(it->payload);
	free(it->role);
	free(it->fn);
	memset(it, 0, sizeof(*it));
}

struct pg_conn *store_pg_conn(struct store *st)
{
	return st->be->pg_conn ? st->be->pg_conn(st->impl) : NULL;
}

int store_set_owner(struct store *st, const char *node, int64_t epoch)
{
	return st->be->set_owner ? st->be->set_owner(st->impl, node, epoch) : -EOPNOTSUPP;
}

int store_load(struct store *st, const char *key, void (*fn)(void *arg, int err), void *arg)
{
	return st->be->load ? st->be->load(st->impl, key, fn, arg) : -EOPNOTSUPP;
}

void store_forget(struct store *st, const char *key)
{
	if (st->be->forget)
		st->be->forget(st->impl, key);
}

void store_forget_all(struct store *st)
{
	if (st->be->forget_all)
		st->be->forget_all(st->impl);
}

int store_inbound_add(struct store *st, const struct store_inbound *in)
{
	return st->be->inbound_add ? st->be->inbound_add(st->impl, in) : -EOPNOTSUPP;
}

int store_inbound_read(struct store *st, const char *key, store_inbound_fn fn, void *arg)
{
	return st->be->inbound_read ? st->be->inbound_read(st->impl, key, fn, arg) : -EOPNOTSUPP;
}

int store_inbound_done(struct store *st, int64_t seq)
{
	return st->be->inbound_done ? st->be->inbound_done(st->impl, seq) : -EOPNOTSUPP;
}

int store_inbound_unowned(struct store *st, void (*fn)(void *arg, int err, const char *const *keys, size_t n),
			  void *arg)
{
	return st->be->inbound_unowned ? st->be->inbound_unowned(st->impl, fn, arg) : -EOPNOTSUPP;
}

int store_conv_fetch(struct store *st, const char *key, void (*fn)(void *arg, int err, const struct store_conv *c),
		     void *arg)
{
	return st->be->conv_fetch ? st->be->conv_fetch(st->impl, key, fn, arg) : -EOPNOTSUPP;
}
