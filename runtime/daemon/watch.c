/* watch.c - inotify on the script directories, debounced into one call of the owner's
 * on_change (runtime.c reloads). */
#include "daemon/watch.h"

#include "base/config.h"
#include "base/log.h"
#include "net/loop.h"

#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#define WATCH_QUIET_MS 300
#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_CREATE)

struct watch {
	struct log *lg;
	watch_fn on_change;
	void *arg;
	int fd;
	struct event *ev;
	struct loop_timer *quiet;
};

static int is_lua(const char *name)
{
	size_t n = strlen(name);

	return n > 4 && strcmp(name + n - 4, ".lua") == 0;
}

static void on_quiet(void *arg)
{
	struct watch *w = arg;

	log_info(w->lg, "watch.changed", "action=reload");
	w->on_change(w->arg);
}

static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
	struct watch *w = arg;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;
	int relevant = 0;

	(void)what;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;

			if (ev->len && is_lua(ev->name))
				relevant = 1;
			p += sizeof(*ev) + ev->len;
		}
	}
	if (relevant)	/* restart the quiet period: one reload per burst */
		loop_timer_start(w->quiet, WATCH_QUIET_MS, 0);
}

static void add_dir(struct watch *w, const char *dir)
{
	if (inotify_add_watch(w->fd, dir, WATCH_MASK) < 0)
		log_warn(w->lg, "watch.skip", "dir=%s error=\"%s\"", dir, strerror(errno));
	else
		log_debug(w->lg, "watch.dir", "dir=%s", dir);
}

/* The directory part of each "dir/?.lua" pattern of a Lua search path. */
static void add_search_path(struct watch *w, const char *path)
{
	char dir[PATH_MAX];

	while (path && *path) {
		const char *end = strchr(path, ';');
		size_t len = end ? (size_t)(end - path) : strlen(path);
		const char *q = memchr(path, '?', len);

		if (q && q > path && (size_t)(q - path) < sizeof(dir)) {
			memcpy(dir, path, (size_t)(q - path));
			dir[q - path - 1] = '\0';	/* drop the slash before '?' */
			add_dir(w, dir);
		}
		path = end ? end + 1 : NULL;
	}
}

struct watch *watch_new(const struct config *cfg, struct loop *lp, struct log *lg, watch_fn on_change,
			void *arg)
{
	struct watch *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->lg = lg;
	w->on_change = on_change;
	w->arg = arg;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	w->quiet = loop_timer_new(lp, on_quiet, w);
	if (w->fd >= 0 && w->quiet)
		w->ev = event_new(loop_base(lp), w->fd, EV_READ | EV_PERSIST, on_inotify, w);
	if (!w->ev || event_add(w->ev, NULL) < 0) {
		log_error(lg, "watch.failed", "error=\"%s\"", strerror(errno));
		watch_free(w);
		return NULL;
	}
	add_dir(w, cfg->dir);
	if (cfg->routes) {
		char *d = strdup(cfg->routes);

		if (d && strrchr(d, '/')) {
			*strrchr(d, '/') = '\0';
			if (strcmp(d, cfg->dir) != 0)
				add_dir(w, d);
		}
		free(d);
	}
	add_search_path(w, cfg->script_path);
	return w;
}

void watch_free(struct watch *w)
{
	if (!w)
		return;
	if (w->ev)
		event_free(w->ev);
	if (w->fd >= 0)
		close(w->fd);
	loop_timer_free(w->quiet);
	free(w);
}
