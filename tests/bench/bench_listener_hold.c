/* bench_listener_hold.c - the connection holder of bench_listener.py, in C.
 *
 * Holds IDLE keep-alive connections (one GET /healthz answered, then silence) and TRICKLE
 * connections that send one byte every INTERVAL_MS (default 1000; headers for even ones, a
 * body after complete headers for odd ones), reconnecting whenever handoffd cuts one off.
 * A Python holder cost more CPU than handoffd itself, on the core the relay's harness
 * needed, so the round trips measured its cost as much as handoffd's; this one stays out
 * of the figures.
 *
 *   bench_listener_hold [IPV4:]PORT IDLE TRICKLE [INTERVAL_MS]
 * (127.0.0.1 unless an address is given: run from another machine, the holder takes no CPU
 * from the daemon's host, which is how the listener benchmark's p99 is best measured)
 * prints {"ready": {...}} once all are open, waits for a line on stdin, prints
 * {"done": {"idle": N, "trickle": N, "cut": N}} and exits. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

struct holder {
	struct event_base *base;
	struct sockaddr_in target;
	struct timeval interval;
	unsigned long idle_open, trickle_open, cut;
	int idle_target, trickle_target;
	int stopping;
};

struct trickler {
	struct holder *h;
	int i, fd;
	size_t sent;
	struct event *io, *tick;
};

static const char SLOW_BODY_HEAD[] = "POST /hubs/webhook/events HTTP/1.1\r\nHost: bench\r\nContent-Length: 100000\r\n\r\n";
static const char SLOW_HEADER_HEAD[] = "GET /healthz HTTP/1.1\r\nX-Slow: ";

static int connect_to(const struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0) {
		perror("connect");
		exit(1);
	}
	return fd;
}

/* Blocking at start-up is fine: nothing is measured while the connections open. */
static void open_idle(struct holder *h)
{
	static const char req[] = "GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n";
	char buf[4096];
	int fd = connect_to(&h->target);
	ssize_t n;

	if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1 || (n = read(fd, buf, sizeof(buf))) <= 0) {
		fprintf(stderr, "idle connection %lu: no answer\n", h->idle_open);
		exit(1);
	}
	h->idle_open++;	/* the fd stays open until exit */
}

static void trickle_start(struct trickler *t);

/* "PORT" (on 127.0.0.1) or "IPV4:PORT". */
static int parse_target(const char *arg, struct sockaddr_in *sa)
{
	const char *colon = strrchr(arg, ':');
	char host[INET_ADDRSTRLEN] = "127.0.0.1";
	long port = atol(colon ? colon + 1 : arg);

	*sa = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (colon && (size_t)(colon - arg) < sizeof(host))
		snprintf(host, sizeof(host), "%.*s", (int)(colon - arg), arg);
	else if (colon)
		return -1;
	return port > 0 && port < 65536 && inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static void on_trickle_io(evutil_socket_t fd, short what, void *arg)
{
	struct trickler *t = arg;
	char buf[512];

	(void)what;
	if (read(fd, buf, sizeof(buf)) > 0)
		return;	/* the 408 or 503 before the close */
	t->h->cut++;
	event_free(t->io);
	event_free(t->tick);
	close(t->fd);
	if (!t->h->stopping)
		trickle_start(t);
}

static void on_trickle_tick(evutil_socket_t fd, short what, void *arg)
{
	struct trickler *t = arg;
	char c = t->i % 2 ? 'x' : 'a';

	(void)fd;
	(void)what;
	if (send(t->fd, &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1)
		t->sent++;
}

static void trickle_start(struct trickler *t)
{
	const char *head = t->i % 2 ? SLOW_BODY_HEAD : SLOW_HEADER_HEAD;

	t->fd = connect_to(&t->h->target);
	evutil_make_socket_nonblocking(t->fd);
	if (write(t->fd, head, strlen(head)) < 0) {
		perror("write");
		exit(1);
	}
	t->sent = 0;
	t->io = event_new(t->h->base, t->fd, EV_READ | EV_PERSIST, on_trickle_io, t);
	t->tick = event_new(t->h->base, -1, EV_PERSIST, on_trickle_tick, t);
	event_add(t->io, NULL);
	event_add(t->tick, &t->h->interval);
	t->h->trickle_open++;
}

static void on_stdin(evutil_socket_t fd, short what, void *arg)
{
	struct holder *h = arg;
	char buf[64];

	(void)what;
	(void)!read(fd, buf, sizeof(buf));
	h->stopping = 1;
	event_base_loopbreak(h->base);
}

int main(int argc, char **argv)
{
	struct holder h = { 0 };
	struct rlimit rl;
	struct trickler *ts;
	struct event *in;
	long interval_ms = argc > 4 ? atol(argv[4]) : 1000;

	if (argc < 4 || argc > 5 || interval_ms <= 0) {
		fprintf(stderr, "usage: %s [IPV4:]PORT IDLE TRICKLE [INTERVAL_MS]\n", argv[0]);
		return 2;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (parse_target(argv[1], &h.target) < 0) {
		fprintf(stderr, "%s: not [IPV4:]PORT: %s\n", argv[0], argv[1]);
		return 2;
	}
	h.idle_target = atoi(argv[2]);
	h.trickle_target = atoi(argv[3]);
	h.interval = (struct timeval){ interval_ms / 1000, (interval_ms % 1000) * 1000 };
	h.base = event_base_new();
	ts = calloc((size_t)h.trickle_target + 1, sizeof(*ts));
	if (!h.base || !ts)
		return 1;
	for (int i = 0; i < h.idle_target; i++)
		open_idle(&h);
	/* Spread the tricklers evenly over one interval so that their bytes do not arrive in
	 * bursts (each one's tick repeats an interval after it started): groups started together
	 * would send together, and the bursts delay the relay load on the same CPU. */
	for (int i = 0; i < h.trickle_target; i++) {
		ts[i] = (struct trickler){ .h = &h, .i = i };
		trickle_start(&ts[i]);
		usleep((useconds_t)(interval_ms * 1000 / h.trickle_target));
	}
	printf("{\"ready\": {\"idle\": %lu, \"trickle\": %lu, \"cut\": %lu}}\n", h.idle_open, h.trickle_open, h.cut);
	fflush(stdout);
	in = event_new(h.base, 0, EV_READ, on_stdin, &h);
	event_add(in, NULL);
	event_base_dispatch(h.base);
	printf("{\"done\": {\"idle\": %lu, \"trickle\": %lu, \"cut\": %lu}}\n", h.idle_open, h.trickle_open, h.cut);
	fflush(stdout);
	return 0;
}
