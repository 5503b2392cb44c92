/* bindings.h - what the Lua modules of runtime/script/bindings/ share.
 * Each module is one file with one luaopen_ function; bindings.c registers them all in
 * package.preload, so scripts `require "handoff.http"` and no binding sets a global. */
#ifndef HANDOFFD_BINDINGS_H
#define HANDOFFD_BINDINGS_H

#include <lua.h>
#include <stdint.h>

struct hd_runtime;

/* Registers every runtime module (and lua-cjson) in package.preload of L. */
void bindings_preload(lua_State *L);

/* The runtime a state belongs to (stored in the state's extra space by script_host). */
struct hd_runtime *bind_runtime(lua_State *L);

/* Raises "bad argument" when the table at IDX has a key not in NAMES (NULL-terminated),
 * so a typo in an option table is an error instead of a silent default. */
void bind_reject_unknown_keys(lua_State *L, int idx, const char *const names[]);

/* Adds the header NAME: VALUE to the headers table on top of L (webhook requests,
 * http.request responses): the name lowercased (up to 255 bytes), and a name seen
 * before gets its values joined by ", " as HTTP allows. The name is hashed once and the
 * table set raw, since a request brings a dozen of them. */
void bind_header_add(lua_State *L, const char *name, const char *value);

/* Arms the wake-up of the task running L after MS milliseconds (handoff.timer's); the
 * caller then yields. 0, -EINVAL (L runs no task: not inside a hook) or -ENOMEM. */
int bind_task_pause(lua_State *L, uint64_t ms);

int luaopen_handoff(lua_State *L);
int luaopen_handoff_crypto(lua_State *L);
int luaopen_handoff_http(lua_State *L);
int luaopen_handoff_log(lua_State *L);
int luaopen_handoff_time(lua_State *L);
int luaopen_handoff_timer(lua_State *L);

#endif
