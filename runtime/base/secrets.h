/* secrets.h - which config values are secrets, so the log can redact them.
 * A value is a secret by its key's name (secret, token, client_secret, password, api_key,
 * webhook_secret, access_token, private_key, ...) at any depth of the sections that hold
 * credentials, or as the password part of the `state` connection string. config.c asks
 * at load, script_host.c at every reload (the hub settings are read again then). */
#ifndef HANDOFFD_SECRETS_H
#define HANDOFFD_SECRETS_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

/* Receives each secret found; S is borrowed for the call only. */
typedef void (*secrets_fn)(void *arg, const char *s);

/* True when a config key of this name holds a secret (case does not matter). */
bool secrets_key_is_secret(const char *key);

/* Walks the config table at IDX: every string under a secret-named key at any depth of
 * hub, front, desk, directline and admin, and the password of `state`. */
void secrets_from_config(lua_State *L, int idx, secrets_fn add, void *arg);

/* The password in a connection string ("scheme://user:PASSWORD@host/...", or
 * "... password=PASSWORD ..."), written to OUT; false when there is none. */
bool secrets_state_password(const char *state, char *out, size_t cap);

/* For a config file Lua cannot run (a syntax error): every quoted string assigned to a
 * secret-named key in TEXT, found by reading the source, since the error message may
 * quote the text next to the error. */
void secrets_from_source(const char *text, secrets_fn add, void *arg);
/* The same for the file at PATH (read up to 1 MiB); nothing when it cannot be read. */
void secrets_from_file(const char *path, secrets_fn add, void *arg);

#endif
