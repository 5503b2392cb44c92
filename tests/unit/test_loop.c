/* test_loop.c - the loop's end: what libevent still had queued when the loop stopped runs
 * before the base is freed, so a bufferevent freed in the last turn is freed for real
 * (its socket closed), not kept alive by a deferred callback nobody will run. */
#include "net/loop.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

static void never(struct bufferevent *bev, void *arg)
{
	(void)bev;
	(void)arg;
	fail_msg("a freed bufferevent's callback ran");
}

/* Whether the peer of FD saw its socket closed (EOF), without waiting. */
static bool peer_closed(int fd)
{
	char c;

	return recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

static void test_a_bufferevent_freed_with_a_deferred_callback_queued_is_freed(void **state)
{
	struct loop *lp = loop_new();
	struct bufferevent *bev;
	int sv[2];

	(void)state;
	assert_non_null(lp);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	bev = bufferevent_socket_new(loop_base(lp), sv[0], BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	assert_non_null(bev);
	bufferevent_setcb(bev, never, never, NULL, NULL);
	/* As a read in the loop's last turn does: the read callback is queued, deferred, and
	 * holds a reference on the bufferevent until it has run. */
	bufferevent_trigger(bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS);
	bufferevent_free(bev);
	assert_false(peer_closed(sv[1]));	/* still held by the queued callback */
	loop_free(lp);
	assert_true(peer_closed(sv[1]));
	close(sv[1]);
}

static void test_an_idle_loop_frees_at_once(void **state)
{
	struct loop *lp = loop_new();

	(void)state;
	assert_non_null(lp);
	loop_free(lp);
	loop_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_bufferevent_freed_with_a_deferred_callback_queued_is_freed),
		cmocka_unit_test(test_an_idle_loop_frees_at_once),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
