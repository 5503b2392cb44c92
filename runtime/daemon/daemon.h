/* daemon.h - detaching from the terminal and the pidfile.
 * The parent of a detached daemon waits until the child reports that start-up
 * finished (or why it failed), so `handoffd -d` exits non-zero when the daemon could
 * not start and the message reaches the terminal. */
#ifndef HANDOFFD_DAEMON_H
#define HANDOFFD_DAEMON_H

#include <stddef.h>

struct daemon_handle;

/* Forks. In the parent: waits for the child's report, prints a failure to stderr and
 * exits the process with 0 or 1 (never returns). In the child: setsid, chdir /, and
 * returns a handle for daemon_ready(). Returns NULL when the fork itself failed. */
struct daemon_handle *daemon_detach(char *err, size_t errlen);
/* Child: tells the waiting parent that start-up succeeded (ERRMSG NULL) or failed, then
 * points stdin, stdout and stderr at /dev/null. Frees the handle. */
void daemon_ready(struct daemon_handle *h, const char *errmsg);

/* Takes the pidfile PATH: refuses (-EEXIST, message in ERR) while it names a live process
 * or another handoffd holds its lock, else writes our pid and keeps it locked.
 * Returns the open descriptor or a negative errno. */
int daemon_pidfile_acquire(const char *path, char *err, size_t errlen);
/* Removes PATH if it still names this process, and closes FD. */
void daemon_pidfile_release(const char *path, int fd);

#endif
