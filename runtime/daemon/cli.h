/* cli.h - the subcommands of the handoffd binary (`handoffd parse`, `handoffd test`).
 * Each lives in its own cmd_<name>.c, takes argv starting at its own name and returns
 * the process exit code. */
#ifndef HANDOFFD_CLI_H
#define HANDOFFD_CLI_H

#include <stddef.h>

/* Exit codes shared by the binary and its subcommands (sysexits.h where one fits). */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,		/* runtime or configuration error */
	EXIT_USAGE = 2,		/* bad command line */
	EXIT_DATAERR = 65,	/* malformed input data */
};

/* `handoffd test [-c CONFIG] FILE...`: runs Lua test files inside the runtime. */
int cmd_test(int argc, char **argv);

/* `handoffd parse FILE|-`: parses a Direct Line payload, prints it as JSON (cmd_parse.c). */
int cmd_parse(int argc, char **argv);

/* `handoffd route -c CONFIG PAYLOAD|-`: runs the routing rules on a recorded payload
 * and prints the destination as JSON (cmd_route.c). */
int cmd_route(int argc, char **argv);

/* `handoffd ctl -c CONFIG [--url URL] COMMAND`: the running daemon's admin API
 * (conversations, show, end, return-to-bot, reload; cmd_ctl.c). */
int cmd_ctl(int argc, char **argv);

/* Reads the payload file PATH ("-": stdin), at most one byte over the parser's size
 * limit, padded so it parses in place. NULL after printing "handoffd: PATH: reason" to
 * stderr. The caller frees. */
char *cli_read_payload(const char *path, size_t *len);

#endif
