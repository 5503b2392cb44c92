/* test_secrets.c - which config values count as secrets: key names, depth, the state
 * password, and a config file that does not compile. */
#include "base/secrets.h"

#include <lauxlib.h>
#include <lualib.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

struct found {
	char list[1024];	/* "a|b|c|" */
};

static void collect(void *arg, const char *s)
{
	struct found *f = arg;

	strncat(f->list, s, sizeof(f->list) - strlen(f->list) - 2);
	strcat(f->list, "|");
}

static void test_key_names(void **state)
{
	static const char *const secret[] = { "secret", "token", "client_secret", "webhook_secret",
					      "Password", "db_passwd", "api_key", "apiKey", "auth_token",
					      "access_token", "private_key", "signing_key", "credentials" };
	static const char *const plain[] = { "token_url", "url", "module", "user_id", "key", "tokens_seen",
					     "monkey" };

	(void)state;
	for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
		if (!secrets_key_is_secret(secret[i]))
			fail_msg("%s should be a secret", secret[i]);
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		if (secrets_key_is_secret(plain[i]))
			fail_msg("%s should not be a secret", plain[i]);
}

static void test_config_table_at_any_depth(void **state)
{
	lua_State *L = luaL_newstate();
	struct found f = { "" };

	(void)state;
	luaL_openlibs(L);
	assert_int_equal(luaL_dostring(L,
		"return { hub = { module = 'm', url = 'https://u', deep = { deeper = { api_key = 'k1' } },\n"
		"                 secrets = { 'k2', 'k3' } },\n"
		"         desk = { oauth = { client_secret = 'k4' } }, directline = { token = 'k5' },\n"
		"         routes = 'r.lua', other = { secret = 'not-a-section' },\n"
		"         state = 'postgres://app:k6@db/app' }"), LUA_OK);
	secrets_from_config(L, -1, collect, &f);
	assert_non_null(strstr(f.list, "k1|"));
	assert_non_null(strstr(f.list, "k2|"));
	assert_non_null(strstr(f.list, "k3|"));
	assert_non_null(strstr(f.list, "k4|"));
	assert_non_null(strstr(f.list, "k5|"));
	assert_non_null(strstr(f.list, "k6|"));
	assert_null(strstr(f.list, "https://u"));
	assert_null(strstr(f.list, "not-a-section"));
	assert_int_equal(lua_gettop(L), 1);
	lua_close(L);
}

static void test_state_password(void **state)
{
	char pw[64];

	(void)state;
	assert_true(secrets_state_password("postgres://user:pa55@host:5432/db", pw, sizeof(pw)));
	assert_string_equal(pw, "pa55");
	assert_true(secrets_state_password("host=db user=app password=s3cret dbname=x", pw, sizeof(pw)));
	assert_string_equal(pw, "s3cret");
	assert_true(secrets_state_password("host=db password='two words'", pw, sizeof(pw)));
	assert_string_equal(pw, "two words");
	assert_false(secrets_state_password("sqlite:/var/lib/handoffd/state.db", pw, sizeof(pw)));
	assert_false(secrets_state_password("postgres://user@host/db", pw, sizeof(pw)));
}

static void test_source_that_does_not_compile(void **state)
{
	struct found f = { "" };

	(void)state;
	secrets_from_source("return {\n  hub = { webhook_secret = \"w1\", url = 'https://u',\n"
			    "    ['api_key'] = 'a1', token_url = 'https://t' }\n"
			    "  directline = { secret = \"unfinished-s1,   \n  }\n", collect, &f);
	assert_string_equal(f.list, "w1|a1|unfinished-s1,|");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_names),
		cmocka_unit_test(test_config_table_at_any_depth),
		cmocka_unit_test(test_state_password),
		cmocka_unit_test(test_source_that_does_not_compile),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
