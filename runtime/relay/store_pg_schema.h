/* store_pg_schema.h - the PostgreSQL schema as an ordered list of migrations
 * (store_pg_schema.c). Migration I brings a database at version I to version I + 1;
 * store_pg.c runs the missing ones in one transaction when it opens the state and records
 * the version in handoffd_schema. Append, never edit a released entry. */
#ifndef HANDOFFD_STORE_PG_SCHEMA_H
#define HANDOFFD_STORE_PG_SCHEMA_H

/* The statements of each migration, in order; the list ends with NULL. */
extern const char *const store_pg_migrations[];
/* The version this code writes: the number of migrations. */
int store_pg_schema_version(void);

#endif
