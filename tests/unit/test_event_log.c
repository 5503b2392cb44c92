/* test_event_log.c - libevent's own messages reach our log, and a burst of them is cut
 * down to a few lines (a failing syscall in a loop must not fill the disk). */
#include "net/event_log.h"
#include "base/log.h"

#include <event2/util.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static unsigned count_lines(const char *path, const char *needle)
{
	char line[1024];
	unsigned n = 0;
	FILE *fp = fopen(path, "r");

	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp))
		if (strstr(line, needle))
			n++;
	fclose(fp);
	return n;
}

static void test_libevent_messages_are_routed_and_limited(void **state)
{
	char path[] = "/tmp/handoffd-event-log-XXXXXX";
	int fd = mkstemp(path);
	struct log *lg = log_new();

	(void)state;
	assert_true(fd >= 0);
	close(fd);
	assert_non_null(lg);
	assert_int_equal(log_open_file(lg, path), 0);
	event_log_route(lg);
	/* Each call fails inside libevent, which warns "fcntl(-1, F_GETFL)". */
	for (int i = 0; i < 50; i++)
		assert_int_equal(evutil_make_socket_nonblocking(-1), -1);
	event_log_unroute(lg);
	assert_int_equal(evutil_make_socket_nonblocking(-1), -1);	/* back to stderr */
	log_free(lg);
	assert_int_equal(count_lines(path, "libevent"), 5);
	assert_int_equal(count_lines(path, "F_GETFL"), 5);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_libevent_messages_are_routed_and_limited),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
