/* test_crypto.c - what handoff.crypto leaves behind in OpenSSL: every failure path must
 * empty the thread's error queue, or a stale reason would mislead the next TLS call
 * (SSL_get_error reads that queue). The answers themselves are tested in
 * tests/lua/crypto.test.lua. */
#include "script/bindings/bindings.h"

#include <lauxlib.h>
#include <lualib.h>
#include <openssl/err.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

/* Runs CHUNK with `crypto` bound to the module and returns its first result as a string
 * ("nil" for nil); the state is closed before returning. */
static void run(const char *chunk, const char *want)
{
	lua_State *L = luaL_newstate();

	assert_non_null(L);
	luaL_openlibs(L);
	luaL_requiref(L, "crypto", luaopen_handoff_crypto, 1);
	lua_pop(L, 1);
	assert_int_equal(luaL_dostring(L, chunk), LUA_OK);
	assert_string_equal(luaL_tolstring(L, 1, NULL), want);
	lua_close(L);
}

static void test_bad_key_clears_errors(void **state)
{
	(void)state;
	ERR_clear_error();
	run("return crypto.rsa_verify('-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----\\n',"
	    " 'data', 'sig')", "nil");
	assert_int_equal(ERR_peek_error(), 0);
}

static void test_bad_signature_clears_errors(void **state)
{
	/* a 512-bit key: the malformed 3-byte signature fails inside OpenSSL's RSA code */
	static const char chunk[] =
		"return crypto.rsa_verify([[\n-----BEGIN PUBLIC KEY-----\n"
		"MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAM83YwCCMJJFf2xGL7VYqjgT6XQIwTtD\n"
		"hXZOZ0UL3ZbGIn+52YRfZXP+qSdP6H/LYkeOzL0uiDiw/lgzkJPlxu8CAwEAAQ==\n"
		"-----END PUBLIC KEY-----\n]], 'data', 'sig')";

	(void)state;
	ERR_clear_error();
	run(chunk, "false");
	assert_int_equal(ERR_peek_error(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_key_clears_errors),
		cmocka_unit_test(test_bad_signature_clears_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
