/* store_backend.h - what a state backend implements behind store.h (store.c dispatches).
 * Each backend defines its own struct store_impl; the functions mean what store.h says of
 * the store_* function of the same name. Only store.c and the backends include this. */
#ifndef HANDOFFD_STORE_BACKEND_H
#define HANDOFFD_STORE_BACKEND_H

#include "relay/store.h"

struct store_impl;

struct store_backend {
	void (*close)(struct store_impl *st);
	int (*flush)(struct store_impl *st);
	bool (*write_pending)(const struct store_impl *st);
	int (*after_commit)(struct store_impl *st, store_commit_fn fn, void *arg);
	int (*begin)(struct store_impl *st);
	void (*before_commit)(struct store_impl *st, store_commit_fn fn, void *arg);
	/* The outcome of the commit whose after-commit callbacks run now (NULL: always 0). */
	int (*commit_error)(const struct store_impl *st);
	int (*conv_put)(struct store_impl *st, const struct store_conv *c);
	int (*conv_get)(struct store_impl *st, const char *key, struct store_conv *out);
	int (*conv_each_open)(struct store_impl *st, store_conv_fn fn, void *arg);
	int (*purge_ended)(struct store_impl *st, int64_t before_s, int64_t events_before_s);
	/* NULL when the backend answers only asynchronously (event_add_async). */
	int (*event_add)(struct store_impl *st, const char *event_id);
	/* NULL: event_add answers at once. */
	int (*event_add_async)(struct store_impl *st, const char *event_id, store_event_fn fn, void *arg);
	int (*event_delete)(struct store_impl *st, const char *event_id);
	void (*set_event_ttl)(struct store_impl *st, int64_t ttl_s);
	int64_t (*outbox_add_call)(struct store_impl *st, const char *key, const char *queue, const char *role,
				   const char *fn, const char *payload, size_t len);
	int (*outbox_head)(struct store_impl *st, const char *key, const char *queue, struct store_item *out);
	int (*outbox_done)(struct store_impl *st, int64_t id);
	int (*outbox_count)(struct store_impl *st, const char *key, const char *queue);
	int (*outbox_retry)(struct store_impl *st, int64_t id, int attempts, int64_t next_at_ms);
	bool (*outbox_durable)(struct store_impl *st, int64_t id);	/* NULL: always */
	void (*on_durable)(struct store_impl *st, store_commit_fn fn, void *arg);	/* NULL: never */
	int (*outbox_each_queue)(struct store_impl *st, int (*fn)(const char *key, const char *queue, void *arg),
				 void *arg);
	/* A cluster member's (store.h); NULL: -EOPNOTSUPP. */
	struct pg_conn *(*pg_conn)(struct store_impl *st);
	int (*set_owner)(struct store_impl *st, const char *node, int64_t epoch);
	int (*load)(struct store_impl *st, const char *key, void (*fn)(void *arg, int err), void *arg);
	void (*forget)(struct store_impl *st, const char *key);
	void (*forget_all)(struct store_impl *st);
	int (*inbound_add)(struct store_impl *st, const struct store_inbound *in);
	int (*inbound_read)(struct store_impl *st, const char *key, store_inbound_fn fn, void *arg);
	int (*inbound_done)(struct store_impl *st, int64_t seq);
	int (*conv_fetch)(struct store_impl *st, const char *key,
			  void (*fn)(void *arg, int err, const struct store_conv *c), void *arg);
	int (*inbound_unowned)(struct store_impl *st, void (*fn)(void *arg, int err, const char *const *keys, size_t n),
			       void *arg);
};

extern const struct store_backend store_sqlite_backend;
struct store_impl *store_sqlite_open(struct loop *lp, struct log *lg, const char *path, char *err, size_t errlen);

extern const struct store_backend store_pg_backend;
/* CONNINFO: a libpq URI or connection string; connects, migrates and loads (blocking). */
struct store_impl *store_pg_open(struct loop *lp, struct log *lg, const char *conninfo, unsigned flags, char *err,
				 size_t errlen);
/* store_check for a PostgreSQL state. */
int store_pg_check(const char *conninfo, char *err, size_t errlen);

#endif
