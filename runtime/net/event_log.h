/* event_log.h - libevent's own messages ("Error from accept() call", ...) through our log.
 * libevent takes one process-wide callback without an argument, so the log it writes to
 * is process-wide too. Rate limited: a failing syscall in a loop cannot flood the disk. */
#ifndef HANDOFFD_EVENT_LOG_H
#define HANDOFFD_EVENT_LOG_H

struct log;

/* Routes libevent's messages to LG until event_log_unroute(LG). */
void event_log_route(struct log *lg);
/* Back to libevent's default (stderr), if LG is the current target. */
void event_log_unroute(struct log *lg);

#endif
