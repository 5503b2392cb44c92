/* watch.h - reload when a script changes (config key scripts.watch).
 * Watches the config's directory, the routes file's directory and the directories of
 * script_path with inotify; a burst of changes to *.lua files becomes one reload after
 * a short quiet period, so an editor's save-as-rename dance reloads once. */
#ifndef HANDOFFD_WATCH_H
#define HANDOFFD_WATCH_H

struct config;
struct log;
struct loop;
struct watch;

typedef void (*watch_fn)(void *arg);

/* Watches the directories CFG names and calls ON_CHANGE(ARG) once per burst of changes
 * (the daemon reloads). NULL on failure (logged); the daemon then runs without watching. */
struct watch *watch_new(const struct config *cfg, struct loop *lp, struct log *lg, watch_fn on_change,
			void *arg);
void watch_free(struct watch *w);

#endif
