/* handoff_object.h - the handoff object as Lua sees it (bindings/handoff_object.c). */
#ifndef HANDOFFD_HANDOFF_OBJECT_H
#define HANDOFFD_HANDOFF_OBJECT_H

#include <handoffd/handoff.h>

#include <lua.h>

/* Pushes the Lua handoff object of H onto L's stack. H is copied, so it (and the
 * parser and buffer it came from) may go away afterwards. Raises a Lua error when
 * memory runs out: call it where a raise is caught (inside a protected call, as
 * script_host does for every hook).
 *
 *   h.activity_id, h.conversation_id   strings (nil when not sent)
 *   h.reason                           va_AgentMessage, the private message to the agent
 *   h.user, h.bot                      { id =, name =, role = }
 *   h.context                          { scope =, last_topic =, topics =, last_phrase =,
 *                                        phrases =, agent_message =, bot_id =, bot_name =,
 *                                        language =, conversation_id =, vars = { ... } }
 *   h.context_error                    nil, or why there is no context ("missing", ...)
 *   h.transcript                       { { id =, type =, role =, name =, text =,
 *                                          timestamp = }, ... } in the order sent
 *   h.transcript_error, h.transcript_url   nil, or what is wrong / where it is
 *   h.raw                              raw JSON on demand: h.raw:activity(),
 *                                      h.raw:context(), h.raw:transcript(), h.raw:entry(i)
 *
 * vars holds every key of the context as sent, values as their JSON types; a JSON
 * null there is the light userdata NULL, which equals cjson.null.
 *
 * h.context, h.transcript, h.user and h.bot are built on their first read (a handoff
 * whose rules read only h.context.language never builds its transcript) and are plain
 * tables from then on. h itself has a protected metatable for that: getmetatable(h) is
 * false, pairs(h) lists every field, and rawget(h, "transcript") and next(h) see only
 * what was read. A field built by a script that is out of memory raises there; the
 * next read builds it again. */
void handoff_object_push(lua_State *L, const struct hd_handoff *h);

/* require "handoff.payload": handoff(json) parses a Direct Line payload and returns the
 * handoff object of its first handoff.initiate event, or nil and a reason. */
int luaopen_handoff_payload(lua_State *L);

#endif
