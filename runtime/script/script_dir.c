/* script_dir.c - locates the shipped scripts from the running binary's own path.
 * The paths come from CMake: the build tree (HANDOFFD_BUILD_DIR), the source tree's
 * scripts (HANDOFFD_SCRIPT_DIR), the path from the installed bin/ to the installed
 * scripts (HANDOFFD_BIN_TO_SCRIPTS) and the configured install location
 * (HANDOFFD_INSTALL_SCRIPTS). */
#include "script/script_dir.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef HANDOFFD_INSTALL_SCRIPTS
#define HANDOFFD_INSTALL_SCRIPTS "/usr/local/share/handoffd/scripts"
#endif
#ifndef HANDOFFD_BIN_TO_SCRIPTS
#define HANDOFFD_BIN_TO_SCRIPTS "../share/handoffd/scripts"
#endif

static int put(char *out, size_t outlen, const char *a, const char *b)
{
	int n = snprintf(out, outlen, "%s%s", a, b);

	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

/* True when DIR (the binary's directory, resolved) is the build tree or below it. The
 * build tree is resolved too: /proc/self/exe names the real path, CMake may not. */
static bool in_build_tree(const char *dir)
{
#ifdef HANDOFFD_BUILD_DIR
	char build[PATH_MAX];
	size_t n;

	if (!realpath(HANDOFFD_BUILD_DIR, build))
		return false;
	n = strlen(build);
	return strncmp(dir, build, n) == 0 && (dir[n] == '\0' || dir[n] == '/');
#else
	(void)dir;
	return false;
#endif
}

int script_dir_find(char *out, size_t outlen)
{
	char exe[PATH_MAX], joined[PATH_MAX], real[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n <= 0)
		return put(out, outlen, HANDOFFD_INSTALL_SCRIPTS, "");
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	if (!slash || slash == exe)
		return put(out, outlen, HANDOFFD_INSTALL_SCRIPTS, "");
	*slash = '\0';
#ifdef HANDOFFD_SCRIPT_DIR
	if (in_build_tree(exe))
		return put(out, outlen, HANDOFFD_SCRIPT_DIR, "");
#endif
	/* Without the "..", error messages name the directory a user would look in. */
	if (put(joined, sizeof(joined), exe, "/" HANDOFFD_BIN_TO_SCRIPTS) == 0 && realpath(joined, real))
		return put(out, outlen, real, "");
	/* LuaRocks copies the binary to its tree's bin/ and leaves share/ in the rock's own
	 * directory, the configured prefix. */
	return put(out, outlen, HANDOFFD_INSTALL_SCRIPTS, "");
}
