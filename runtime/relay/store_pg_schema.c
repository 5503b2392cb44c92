/* store_pg_schema.c - the migrations of the PostgreSQL state, in one place (see
 * store_pg_schema.h). The tables mirror SQLite's (store_sqlite.c); outbox ids are given by
 * handoffd (store_pg.c), and handoffd_outbox_id keeps their high-water mark so that a
 * restart never hands out an id again. */
#include "relay/store_pg_schema.h"

#include <stddef.h>

const char *const store_pg_migrations[] = {
	/* 0 -> 1: what SQLite's schema version 1 holds. */
	"CREATE TABLE conversations ("
	"  key text PRIMARY KEY, state text NOT NULL, user_json text, dl_conversation_id text,"
	"  dl_token text, dl_token_expiry bigint, watermark text, dl_seen bytea, hub_data text,"
	"  handoff_id text, updated_at bigint NOT NULL);"
	"CREATE INDEX conversations_by_state ON conversations (state, updated_at);"
	"CREATE TABLE events (id text PRIMARY KEY, at bigint NOT NULL);"
	"CREATE INDEX events_by_time ON events (at);"
	"CREATE TABLE outbox ("
	"  id bigint PRIMARY KEY, key text NOT NULL, queue text NOT NULL, payload bytea NOT NULL,"
	"  attempts integer NOT NULL DEFAULT 0, next_at bigint NOT NULL DEFAULT 0,"
	"  created bigint NOT NULL DEFAULT 0, role text, fn text);"
	"CREATE INDEX outbox_by_queue ON outbox (key, queue, id);"
	"CREATE SEQUENCE handoffd_outbox_id;",
	/* 1 -> 2: several instances (relay_cluster.c). Hub events for a conversation held
	 * elsewhere wait in inbound, in the order the database gives (seq); ORIGIN makes a
	 * delivery stored twice (a batch sent again, a hub's retry at another instance) add
	 * its row once, so an applied row stays (DONE) until the event ids expire. Outbox ids
	 * come in blocks from one sequence, above every id handed out before. */
	"CREATE TABLE inbound ("
	"  seq bigserial PRIMARY KEY, origin text NOT NULL UNIQUE, key text NOT NULL, op text NOT NULL,"
	"  id text NOT NULL, arg text, flag boolean NOT NULL DEFAULT false, payload bytea,"
	"  created bigint NOT NULL, done boolean NOT NULL DEFAULT false);"
	"CREATE INDEX inbound_by_key ON inbound (key, seq) WHERE NOT done;"
	"CREATE INDEX inbound_done ON inbound (created) WHERE done;"
	"CREATE SEQUENCE handoffd_outbox_block INCREMENT BY 1000000;"
	"SELECT setval('handoffd_outbox_block', greatest((SELECT last_value FROM handoffd_outbox_id),"
	"  (SELECT coalesce(max(id), 0) FROM outbox)) + 1000000);",
	NULL,
};

int store_pg_schema_version(void)
{
	int n = 0;

	while (store_pg_migrations[n])
		n++;
	return n;
}
