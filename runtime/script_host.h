/* script_host.h - the Lua side of the runtime: states, loading and reload.
 * A generation is one lua_State with the hub module(s) and routing rules loaded into
 * it. Loading always builds a fresh generation and swaps it in only when everything
 * loaded and every hub's init accepted its settings; otherwise the old one stays. */
#ifndef HANDOFFD_SCRIPT_HOST_H
#define HANDOFFD_SCRIPT_HOST_H

#include <stddef.h>

struct hd_runtime;
struct script_host;
typedef struct lua_State lua_State;

struct script_host *script_host_new(struct hd_runtime *rt);
void script_host_free(struct script_host *sh);

/* Builds a new generation from the runtime's config and swaps it in. Returns 0, or a
 * negative errno with "file:line: reason" in ERR and the current generation untouched. */
int script_host_load(struct script_host *sh, char *err, size_t errlen);

/* How many generations have been swapped in (1 after the first load). */
unsigned long script_host_generation(const struct script_host *sh);

/* Runs the tests in FILE (a Lua chunk returning a table of name -> function) in a
 * fresh generation, printing one line per test to stdout. Adds to *PASSED and *FAILED.
 * Returns 0, or a negative errno when the file itself could not be loaded. */
int script_host_run_tests(struct script_host *sh, const char *file, unsigned *passed,
			  unsigned *failed);

#endif
