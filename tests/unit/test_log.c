/* test_log.c - log lines: levels, text and JSON form, and that secrets never get out. */
#include "base/log.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char *read_all(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf = calloc(1, 65536);

	assert_non_null(fp);
	assert_non_null(buf);
	if (fread(buf, 1, 65535, fp) == 0)
		buf[0] = '\0';
	fclose(fp);
	return buf;
}

/* Opens a log on a fresh temp file; PATH receives its name. */
static struct log *temp_log(char *path)
{
	struct log *lg = log_new();
	int fd;

	strcpy(path, "/tmp/handoffd-log-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_non_null(lg);
	assert_int_equal(log_open_file(lg, path), 0);
	return lg;
}

static void test_levels_filter(void **state)
{
	char path[64];
	struct log *lg = temp_log(path);
	char *out;

	(void)state;
	log_set_level(lg, LEVEL_WARN);
	log_info(lg, "quiet.event", "k=%d", 1);
	log_warn(lg, "loud.event", "k=%d", 2);
	out = read_all(path);
	assert_null(strstr(out, "quiet.event"));
	assert_non_null(strstr(out, " warn loud.event k=2\n"));
	free(out);
	log_free(lg);
	unlink(path);
}

static void test_secrets_redacted(void **state)
{
	char path[64];
	struct log *lg = temp_log(path);
	char *out;

	(void)state;
	assert_int_equal(log_add_secret(lg, "s3cr3t-direct-line"), 0);
	log_info(lg, "dl.start", "secret=%s", "s3cr3t-direct-line");
	log_info(lg, "dl.echo", "note=\"the key s3cr3t-direct-line leaked\"");
	log_info(lg, "ws.open", "url=wss://dl.invalid/stream?watermark=5&t=eyJhbGciOi.abc.def");
	log_info(lg, "http", "header=\"Authorization: Bearer eyJtoken.payload.sig\"");
	log_info(lg, "oauth", "body=%s", "{\"access_token\":\"eyJaccess\",\"expires_in\":3600}");
	out = read_all(path);
	assert_null(strstr(out, "s3cr3t"));
	assert_null(strstr(out, "eyJ"));
	assert_non_null(strstr(out, "watermark=5&t=***"));
	assert_non_null(strstr(out, "Bearer ***"));
	assert_non_null(strstr(out, "body=\"{\\\"access_token\\\":\\\"***\\\",\\\"expires_in\\\":3600}\"\n"));
	free(out);
	log_free(lg);
	unlink(path);
}

static void test_json_lines(void **state)
{
	char path[64];
	struct log *lg = temp_log(path);
	char *out;

	(void)state;
	log_set_json(lg, true);
	log_info(lg, "conv.state", "conv=%s from=bot to=\"agent desk\" quote=%s", "c1", "a\"b");
	out = read_all(path);
	assert_non_null(strstr(out, "\"level\":\"info\",\"event\":\"conv.state\",\"conv\":\"c1\","
				    "\"from\":\"bot\",\"to\":\"agent desk\",\"quote\":\"a\\\"b\"}\n"));
	assert_int_equal(out[0], '{');
	free(out);
	log_free(lg);
	unlink(path);
}

/* Values from the network cannot end a line, close their quotes or add a field. */
static void test_values_escaped(void **state)
{
	char path[64];
	struct log *lg = temp_log(path);
	char *out;

	(void)state;
	log_info(lg, "conv.open", "conv=%s", "c1\n2026-01-01T00:00:00.000Z error forged.line x=1");
	log_info(lg, "conv.state", "reason=\"%s\" n=%d", "a\" injected=\"1\\", 7);
	log_info(lg, "ctl", "v=%s", "tab\there\x01" "bell");
	log_info(lg, "utf8", "v=%s", "caf\xc3\xa9 \xff\xc3(\xed\xa0\x80");
	out = read_all(path);
	assert_non_null(strstr(out, " info conv.open conv=\"c1\\n2026-01-01T00:00:00.000Z error forged.line x=1\"\n"));
	assert_non_null(strstr(out, " info conv.state reason=\"a\\\" injected=\\\"1\\\\\" n=7\n"));
	assert_non_null(strstr(out, " info ctl v=tab\\there\\x01bell\n"));
	assert_non_null(strstr(out, " info utf8 v=\"caf\xc3\xa9 \\xff\\xc3(\\xed\\xa0\\x80\"\n"));
	assert_null(strstr(out, "\nforged"));
	free(out);
	log_free(lg);
	unlink(path);
}

static void test_json_values_escaped(void **state)
{
	char path[64];
	struct log *lg = temp_log(path);
	char fields[256];
	size_t len;
	char *out;

	(void)state;
	log_set_json(lg, true);
	log_info(lg, "conv.open", "conv=%s reason=\"%s\"", "c1\n{\"forged\":1}", "x\" y=\"2");
	len = log_append_field(lg, fields, sizeof(fields), 0, "id", "a\0b", 3);
	log_append_field(lg, fields, sizeof(fields), len, "bad key=\n", "v", 1);
	log_write_fields(lg, LEVEL_INFO, "script\nevent", fields);
	log_info(lg, "utf8", "v=%s", "caf\xc3\xa9\xff");
	out = read_all(path);
	assert_non_null(strstr(out, "\"event\":\"conv.open\",\"conv\":\"c1\\u000a{\\\"forged\\\":1}\","
				    "\"reason\":\"x\\\" y=\\\"2\"}\n"));
	assert_non_null(strstr(out, "\"event\":\"utf8\",\"v\":\"caf\xc3\xa9\xc3\xbf\"}\n"));
	assert_non_null(strstr(out, "\"event\":\"script\\u000aevent\",\"id\":\"a\\u0000b\",\"bad_key__\":\"v\"}\n"));
	free(out);
	log_free(lg);
	unlink(path);
}

static void test_level_names(void **state)
{
	enum log_level lv;

	(void)state;
	assert_int_equal(log_level_parse("debug", &lv), 0);
	assert_int_equal(lv, LEVEL_DEBUG);
	assert_int_equal(log_level_parse("error", &lv), 0);
	assert_int_equal(lv, LEVEL_ERROR);
	assert_true(log_level_parse("verbose", &lv) < 0);
}

static void test_long_lines_bounded(void **state)
{
	char path[64];
	struct log *lg = temp_log(path);
	char *big = malloc(100000), *out;

	(void)state;
	memset(big, 'x', 99999);
	big[99999] = '\0';
	log_info(lg, "big", "v=%s", big);
	log_info(lg, "after", "ok=1");
	out = read_all(path);
	assert_non_null(strstr(out, "after ok=1\n"));
	free(out);
	free(big);
	log_free(lg);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_levels_filter),
		cmocka_unit_test(test_secrets_redacted),
		cmocka_unit_test(test_json_lines),
		cmocka_unit_test(test_values_escaped),
		cmocka_unit_test(test_json_values_escaped),
		cmocka_unit_test(test_level_names),
		cmocka_unit_test(test_long_lines_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
