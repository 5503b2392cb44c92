/* fuzz_http.c - libFuzzer target over the inbound HTTP path: every input is sent by a
 * real TCP client to the real listener (http_listener + evhttp + http_server's checks and
 * routes) in this process, the client half-closes, and the loop runs until the daemon side
 * has closed the connection. Then the listener's books must balance: no connection and no
 * buffered byte may be left counted once the peer is gone.
 * Built with clang by tests/fuzz/CMakeLists.txt. */
#include "net/http_listener.h"
#include "net/http_server.h"
#include "base/log.h"
#include "base/clock.h"
#include "net/loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FUZZ_INPUT_DEADLINE_MS 2000

/* libFuzzer calls the target with nothing but the input: the daemon side lives here. */
static struct {
	struct loop *lp;
	struct log *log;
	struct http_server *srv;
	struct loop_timer *deadline;
	struct event *client_ev;
	int client_fd;
	const uint8_t *data;
	size_t len, sent;
	int closed, expired;
} fz;

static void route_echo(struct evhttp_request *req, void *arg)
{
	struct evbuffer *body = evhttp_request_get_input_buffer(req);
	struct evbuffer *out = evbuffer_new();

	(void)arg;
	if (out)
		evbuffer_add_buffer(out, body);
	evhttp_send_reply(req, 200, "OK", out);
	if (out)
		evbuffer_free(out);
}

static void route_json(struct evhttp_request *req, void *arg)
{
	(void)arg;
	http_server_reply_json(req, http_server_peer_is_loopback(req) ? 200 : 403, "{\"ok\":true}");
}

static void fuzz_init(void)
{
	struct http_listener_limits limits = {
		.connections = 64, .connections_per_ip = 8, .request_timeout = 0.5,
		.idle_timeout = 0.5, .buffered_bytes = 256 * 1024,
	};
	char err[256];

	fz.lp = loop_new();
	fz.log = log_new();
	if (!fz.lp || !fz.log)
		abort();
	log_set_level(fz.log, LEVEL_ERROR);
	fz.srv = http_server_new(fz.lp, fz.log, "127.0.0.1", 0, &limits, err, sizeof(err));
	if (!fz.srv) {
		fprintf(stderr, "fuzz_http: %s\n", err);
		abort();
	}
	if (http_server_route(fz.srv, "POST", "/echo", route_echo, NULL) < 0 ||
	    http_server_route(fz.srv, "PUT", "/echo", route_echo, NULL) < 0 ||
	    http_server_route(fz.srv, "GET", "/", route_json, NULL) < 0 ||
	    http_server_route(fz.srv, "GET", "/healthz", route_json, NULL) < 0)
		abort();
}

static void on_deadline(void *arg)
{
	(void)arg;
	fz.expired = 1;
	loop_stop(fz.lp);
}

/* Writes what the socket takes, half-closes once all is out, reads until the daemon closes. */
static void on_client(evutil_socket_t fd, short what, void *arg)
{
	char buf[4096];
	ssize_t n;

	(void)arg;
	if ((what & EV_WRITE) && fz.sent < fz.len) {
		n = send(fd, fz.data + fz.sent, fz.len - fz.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0)
			fz.sent += (size_t)n;
		else
			fz.sent = fz.len;	/* the daemon closed on us; stop writing */
		if (fz.sent == fz.len)
			shutdown(fd, SHUT_WR);
	}
	if (what & EV_READ) {
		while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
			;
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
			fz.closed = 1;
			loop_stop(fz.lp);
			return;
		}
	}
	if (fz.sent == fz.len && (what & EV_WRITE)) {
		event_del(fz.client_ev);
		event_assign(fz.client_ev, loop_base(fz.lp), fd, EV_READ | EV_PERSIST, on_client, NULL);
		event_add(fz.client_ev, NULL);
	}
}

static int client_connect(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)http_server_port(fz.srv)) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS))
		abort();
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_listener_stats st;

	if (!fz.lp)
		fuzz_init();
	fz.data = data;
	fz.len = size;
	fz.sent = 0;
	fz.closed = fz.expired = 0;
	fz.client_fd = client_connect();
	if (size == 0)
		shutdown(fz.client_fd, SHUT_WR);
	fz.client_ev = event_new(loop_base(fz.lp), fz.client_fd, EV_READ | EV_WRITE | EV_PERSIST, on_client, NULL);
	fz.deadline = loop_timer_new(fz.lp, on_deadline, NULL);
	if (!fz.client_ev || !fz.deadline || loop_timer_start(fz.deadline, FUZZ_INPUT_DEADLINE_MS, 0) < 0 ||
	    event_add(fz.client_ev, NULL) < 0)
		abort();
	loop_run(fz.lp);
	event_free(fz.client_ev);
	loop_timer_free(fz.deadline);
	close(fz.client_fd);
	if (fz.closed) {
		/* The client saw the close in the same loop that frees the server's side: the
		 * listener's release may still be a deferred callback away. Let it run (bounded). */
		uint64_t until = clock_mono_ms() + 1000;

		http_listener_stats(http_server_listener(fz.srv), &st);
		while ((st.connections != 0 || st.buffered_bytes != 0) && clock_mono_ms() < until) {
			event_base_loop(loop_base(fz.lp), EVLOOP_NONBLOCK);
			http_listener_stats(http_server_listener(fz.srv), &st);
		}
		if (st.connections != 0 || st.buffered_bytes != 0) {
			fprintf(stderr, "fuzz_http: the listener still counts %u connections, %zu bytes\n",
				st.connections, st.buffered_bytes);
			abort();
		}
	}
	return 0;
}
