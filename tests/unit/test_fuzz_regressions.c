/* test_fuzz_regressions.c - replays every input the fuzzer ever broke the parser with
 * (tests/fuzz/regressions/) through the fuzz target itself, in the ordinary build with
 * its sanitizers, so a fixed crash stays fixed. */
#include "../fuzz/fuzz_parse.c"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

static char *read_file(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	long n;

	assert_non_null(fp);
	if (fseek(fp, 0, SEEK_END) == 0 && (n = ftell(fp)) >= 0 && fseek(fp, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)n + 1);
		assert_non_null(buf);
		assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
		*len = (size_t)n;
	}
	fclose(fp);
	assert_non_null(buf);
	return buf;
}

static void test_replay_regressions(void **state)
{
	const char *dir = getenv("HANDOFFD_TEST_DIR");
	char path[4096];
	struct dirent *d;
	unsigned replayed = 0;
	DIR *dp;

	(void)state;
	snprintf(path, sizeof(path), "%s/fuzz/regressions", dir ? dir : "tests");
	dp = opendir(path);
	assert_non_null(dp);
	while ((d = readdir(dp))) {
		size_t len = 0;
		char *data;
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/fuzz/regressions/%s", dir ? dir : "tests", d->d_name);
		data = read_file(path, &len);
		LLVMFuzzerTestOneInput((const uint8_t *)data, len);
		free(data);
		replayed++;
	}
	closedir(dp);
	fuzz_done();
	assert_true(replayed > 0);
	printf("replayed %u inputs\n", replayed);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_replay_regressions),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
