/* test_loop.c - the loop's end: what libevent still had queued when the loop stopped runs
 * before the base is freed, so a bufferevent freed in the last turn is freed for real
 * (its socket closed), not kept alive by a deferred callback nobody will run; and the
 * loop's resolver is freed after that, since a lookup cancelled in the last turn still
 * has its answer queued, which reads the resolver (memcheck.sh would see the read of freed
 * memory that the sanitizers cannot: libevent is not instrumented). */
#include "net/loop.h"

#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
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

static int lookup_result = 1;

static void on_lookup(int result, struct evutil_addrinfo *res, void *arg)
{
	(void)arg;
	lookup_result = result;
	if (res)
		evutil_freeaddrinfo(res);
}

static void test_a_lookup_cancelled_in_the_last_turn_is_answered_before_the_resolver_goes(void **state)
{
	struct loop *lp = loop_new();
	struct evdns_base *dns;
	struct evdns_getaddrinfo_request *req;
	struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };

	(void)state;
	assert_non_null(lp);
	assert_non_null(dns = loop_dns(lp));
	assert_ptr_equal(loop_dns(lp), dns);
	/* A nameserver that never answers (the discard port), so the lookup stays pending. */
	evdns_base_clear_nameservers_and_suspend(dns);
	assert_int_equal(evdns_base_nameserver_ip_add(dns, "127.0.0.1:9"), 0);
	evdns_base_resume(dns);
	req = evdns_getaddrinfo(dns, "directline.example.com", "443", &hints, on_lookup, NULL);
	assert_non_null(req);
	evdns_getaddrinfo_cancel(req);
	assert_int_equal(lookup_result, 1);	/* the answer is queued, not given yet */
	loop_free(lp);
	assert_int_equal(lookup_result, EVUTIL_EAI_CANCEL);
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
		cmocka_unit_test(test_a_lookup_cancelled_in_the_last_turn_is_answered_before_the_resolver_goes),
		cmocka_unit_test(test_an_idle_loop_frees_at_once),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
