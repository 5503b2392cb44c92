/* desk.h - the scripting part's side of the relay seam (relay/relay_desk.h): hub calls
 * and the handoff's escalation run as tasks through scripts/handoff/relay.lua. */
#ifndef HANDOFFD_DESK_H
#define HANDOFFD_DESK_H

#include "relay/relay_desk.h"

#include <lua.h>

struct hd_runtime;

/* The ops the relay calls, working on RT's scripts (daemon/runtime.c hands them to
 * relay_new). */
struct relay_desk_ops desk_ops(struct hd_runtime *rt);

/* Pushes V as scripts see a conversation: {key, id, state, user, data, handoff_id,
 * dl_conversation_id}, with user and data as JSON text. */
void desk_push_conversation(lua_State *L, const struct relay_conv_view *v);

#endif
