/* daemon.c - the classic Unix daemon steps and the pidfile lock. */
#include "daemon/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define REPORT_MAX 1024

struct daemon_handle {
	int fd;		/* write end of the pipe to the waiting parent */
};

static void parent_wait(int fd, pid_t child)
{
	char msg[REPORT_MAX + 1];
	ssize_t n, total = 0;

	while ((n = read(fd, msg + total, (size_t)(REPORT_MAX - total))) > 0 || (n < 0 && errno == EINTR))
		total += n > 0 ? n : 0;
	msg[total] = '\0';
	if (total == 1 && msg[0] == '0')
		_exit(0);
	if (total > 1)
		fprintf(stderr, "handoffd: %s\n", msg + 1);
	else
		fprintf(stderr, "handoffd: the daemon exited during start-up\n");
	waitpid(child, NULL, WNOHANG);
	_exit(1);
}

struct daemon_handle *daemon_detach(char *err, size_t errlen)
{
	struct daemon_handle *h = calloc(1, sizeof(*h));
	int fds[2];
	pid_t pid;

	if (!h || pipe(fds) < 0) {
		snprintf(err, errlen, "cannot detach: %s", strerror(errno));
		free(h);
		return NULL;
	}
	pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "cannot fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		free(h);
		return NULL;
	}
	if (pid > 0) {
		close(fds[1]);
		parent_wait(fds[0], pid);
	}
	close(fds[0]);
	setsid();
	if (chdir("/") < 0) {
		/* "/" always exists; nothing sensible to do but carry on */
	}
	umask(027);
	h->fd = fds[1];
	return h;
}

void daemon_ready(struct daemon_handle *h, const char *errmsg)
{
	int null = open("/dev/null", O_RDWR);

	if (errmsg) {
		char buf[REPORT_MAX];
		int n = snprintf(buf, sizeof(buf), "1%s", errmsg);

		if (write(h->fd, buf, (size_t)(n < (int)sizeof(buf) ? n : (int)sizeof(buf) - 1)) < 0) {
			/* the parent is gone; nobody left to tell */
		}
	} else if (write(h->fd, "0", 1) < 0) {
		/* as above */
	}
	close(h->fd);
	free(h);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
}

static pid_t read_pid(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return (pid_t)strtol(buf, NULL, 10);
}

int daemon_pidfile_acquire(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	pid_t other;
	char buf[32];
	int n;

	if (fd < 0) {
		snprintf(err, errlen, "cannot open pidfile %s: %s", path, strerror(errno));
		return -errno;
	}
	other = read_pid(fd);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0 ||
	    (other > 0 && other != getpid() && (kill(other, 0) == 0 || errno == EPERM))) {
		snprintf(err, errlen, "already running: pidfile %s names live process %ld", path, (long)other);
		close(fd);
		return -EEXIST;
	}
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
		snprintf(err, errlen, "cannot write pidfile %s: %s", path, strerror(errno));
		close(fd);
		return -EIO;
	}
	return fd;
}

void daemon_pidfile_release(const char *path, int fd)
{
	if (fd < 0)
		return;
	if (read_pid(fd) == getpid())
		unlink(path);
	close(fd);
}
