/* script_dir.h - where the shipped Lua scripts (scripts/handoff, scripts/hubs) are.
 * A binary in its build tree uses the source tree's scripts, so tests see edits without
 * an install; any other binary uses ../share/handoffd/scripts next to its own bin/
 * directory, so an installed tree works wherever its prefix was moved and whether or not
 * the source tree still exists. When that directory does not exist (LuaRocks keeps share/
 * apart from bin/) or /proc/self/exe cannot be read, the configured prefix's is used. */
#ifndef HANDOFFD_SCRIPT_DIR_H
#define HANDOFFD_SCRIPT_DIR_H

#include <stddef.h>

/* Writes the directory into OUT (no trailing slash). Returns 0, or -ENAMETOOLONG. */
int script_dir_find(char *out, size_t outlen);

#endif
