/* secrets.c - which config values are secrets (see secrets.h). Knows names and shapes
 * only; what to do with a secret (log_add_secret) is the caller's. */
#include "base/secrets.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SECRETS_DEPTH_MAX 8
#define SECRETS_VALUE_MAX 1024
#define SECRETS_FILE_MAX (1 << 20)

/* Keys that hold credentials wherever they appear; the hub settings are free-form. */
static const char *const secret_sections[] = { "hub", "front", "desk", "directline", "admin" };
static const char *const secret_words[] = { "secret", "password", "passwd" };
static const char *const secret_suffixes[] = {
	"token", "apikey", "api_key", "private_key", "access_key", "signing_key", "credentials",
};

/* Where WORD first occurs in S, whatever the case; NULL when it does not. */
static const char *find_nocase(const char *s, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = s; *p; p++)
		if (strncasecmp(p, word, n) == 0)
			return p;
	return NULL;
}

bool secrets_key_is_secret(const char *key)
{
	size_t klen = strlen(key);

	for (size_t i = 0; i < sizeof(secret_words) / sizeof(secret_words[0]); i++)
		if (find_nocase(key, secret_words[i]))
			return true;
	for (size_t i = 0; i < sizeof(secret_suffixes) / sizeof(secret_suffixes[0]); i++) {
		size_t n = strlen(secret_suffixes[i]);

		/* token_url is not a secret, access_token is: the name must end in the word. */
		if (klen >= n && strcasecmp(key + klen - n, secret_suffixes[i]) == 0)
			return true;
	}
	return false;
}

/* Every string anywhere in the value at IDX (a secret key's table holds secrets only). */
static void add_all_strings(lua_State *L, int idx, int depth, secrets_fn add, void *arg)
{
	idx = lua_absindex(L, idx);
	if (lua_type(L, idx) == LUA_TSTRING) {
		add(arg, lua_tostring(L, idx));
		return;
	}
	if (lua_type(L, idx) != LUA_TTABLE || depth >= SECRETS_DEPTH_MAX)
		return;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		add_all_strings(L, -1, depth + 1, add, arg);
		lua_pop(L, 1);
	}
}

/* The strings under secret-named keys in the table at IDX, at any depth. Raw access
 * only: the walk must not run a script's metamethods. */
static void walk(lua_State *L, int idx, int depth, secrets_fn add, void *arg)
{
	idx = lua_absindex(L, idx);
	if (depth >= SECRETS_DEPTH_MAX)
		return;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		if (lua_type(L, -2) == LUA_TSTRING && secrets_key_is_secret(lua_tostring(L, -2)))
			add_all_strings(L, -1, depth, add, arg);
		else if (lua_type(L, -1) == LUA_TTABLE)
			walk(L, -1, depth + 1, add, arg);
		lua_pop(L, 1);
	}
}

void secrets_from_config(lua_State *L, int idx, secrets_fn add, void *arg)
{
	char password[SECRETS_VALUE_MAX];

	idx = lua_absindex(L, idx);
	if (lua_type(L, idx) != LUA_TTABLE)
		return;
	for (size_t i = 0; i < sizeof(secret_sections) / sizeof(secret_sections[0]); i++) {
		lua_pushstring(L, secret_sections[i]);
		lua_rawget(L, idx);
		if (lua_type(L, -1) == LUA_TTABLE)
			walk(L, -1, 0, add, arg);
		lua_pop(L, 1);
	}
	lua_pushliteral(L, "state");
	lua_rawget(L, idx);
	if (lua_type(L, -1) == LUA_TSTRING &&
	    secrets_state_password(lua_tostring(L, -1), password, sizeof(password)))
		add(arg, password);
	lua_pop(L, 1);
}

static bool copy_span(const char *s, size_t n, char *out, size_t cap)
{
	if (n == 0 || n >= cap)
		return false;
	memcpy(out, s, n);
	out[n] = '\0';
	return true;
}

bool secrets_state_password(const char *state, char *out, size_t cap)
{
	const char *scheme = strstr(state, "://"), *kv = find_nocase(state, "password=");

	if (scheme) {
		const char *auth = scheme + 3;
		size_t authlen = strcspn(auth, "@/?#");
		const char *colon = memchr(auth, ':', authlen);

		if (auth[authlen] == '@' && colon)
			return copy_span(colon + 1, (size_t)(auth + authlen - colon - 1), out, cap);
	}
	if (kv) {
		const char *v = kv + strlen("password=");

		if (*v == '\'' || *v == '"')
			return copy_span(v + 1, strcspn(v + 1, *v == '\'' ? "'" : "\""), out, cap);
		return copy_span(v, strcspn(v, " ;&"), out, cap);
	}
	return false;
}

/* The quoted string starting at P ('...' or "..."), without escapes, into OUT. An
 * unfinished one (the syntax error itself) runs to the end of the line, as Lua quotes it
 * in its message. False when there is none. */
static bool quoted(const char *p, char *out, size_t cap)
{
	char q = *p;
	size_t n;

	if (q != '"' && q != '\'')
		return false;
	n = strcspn(p + 1, q == '"' ? "\"\n" : "'\n");
	if (p[1 + n] != q)	/* unfinished: what Lua quotes, less the line's trailing blanks */
		while (n > 0 && (p[n] == ' ' || p[n] == '\t' || p[n] == '\r'))
			n--;
	return copy_span(p + 1, n, out, cap);
}

void secrets_from_source(const char *text, secrets_fn add, void *arg)
{
	char key[64], value[SECRETS_VALUE_MAX];

	for (const char *p = text; *p; p++) {
		size_t n;
		const char *q;

		if (!(isalpha((unsigned char)*p) || *p == '_') ||
		    (p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '_')))
			continue;
		n = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
		if (n >= sizeof(key)) {
			p += n - 1;
			continue;
		}
		memcpy(key, p, n);
		key[n] = '\0';
		q = p + n;
		q += strspn(q, " \t\"']");
		if (*q != '=' || q[1] == '=' || !secrets_key_is_secret(key)) {
			p += n - 1;
			continue;
		}
		q++;
		q += strspn(q, " \t\r\n");
		if (quoted(q, value, sizeof(value)))
			add(arg, value);
		p += n - 1;
	}
}

void secrets_from_file(const char *path, secrets_fn add, void *arg)
{
	FILE *f = fopen(path, "r");
	char *text = f ? malloc(SECRETS_FILE_MAX + 1) : NULL;
	size_t n;

	if (text) {
		n = fread(text, 1, SECRETS_FILE_MAX, f);
		text[n] = '\0';
		secrets_from_source(text, add, arg);
	}
	free(text);
	if (f)
		fclose(f);
}
