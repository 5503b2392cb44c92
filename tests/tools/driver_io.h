/* driver_io.h - what the test drivers (pg_driver, cluster_driver) share: JSON strings on
 * stdout and commands read from stdin a line at a time. Header-only: every .c file in tools/ is
 * a program of its own. */
#ifndef HANDOFFD_DRIVER_IO_H
#define HANDOFFD_DRIVER_IO_H

#include "base/json_text.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>

#define DRIVER_LINE_CAP 65536	/* a longer line is dropped */
#define DRIVER_STRING_CAP 8192	/* a longer string is cut */

/* S as a JSON string on stdout, or null. */
static inline void driver_json_str(const char *s)
{
	static char buf[DRIVER_STRING_CAP];

	if (!s)
		fputs("null", stdout);
	else if (json_text_string(buf, sizeof(buf), 0, s) > 0)
		fputs(buf, stdout);
}

/* Reads what FD has into INPUT and hands every complete line to FN (which may modify
 * it; freed afterwards). Returns -1 at end of input or on an error, else 0. */
static inline int driver_read_lines(struct evbuffer *input, int fd, void (*fn)(void *, char *), void *arg)
{
	char *line;

	if (evbuffer_read(input, fd, 4096) <= 0)
		return -1;
	while ((line = evbuffer_readln(input, NULL, EVBUFFER_EOL_LF))) {
		fn(arg, line);
		free(line);
	}
	if (evbuffer_get_length(input) > DRIVER_LINE_CAP)
		evbuffer_drain(input, evbuffer_get_length(input));	/* garbage */
	return 0;
}

#endif
