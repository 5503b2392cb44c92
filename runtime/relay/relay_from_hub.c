/* relay_from_hub.c - what hub scripts ask of the relay: a customer's message (opening the
 * conversation on first contact), a message for the bot, an agent's message, news of the
 * handoff, the end, the conversation's data, hub event ids, and views of conversations.
 * Each checks that the conversation's state allows it (the state machine is the relay's,
 * not the scripts'); a cluster member stores the event for the owner instead
 * (relay_cluster.c). What the relay sends to hub scripts is relay_hub.c's. */
#include "relay/relay_internal.h"

#include "base/config.h"
#include "base/hd_runtime.h"
#include "base/log.h"
#include "base/metrics.h"
#include "directline/directline.h"
#include "relay/conv_events.h"
#include "relay/convstore.h"
#include "relay/store.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define RELAY_KEY_MAX 512

/* The conversation's key: the front hub's name and the hub's id for it. */
static int make_key(struct relay *r, const char *id, char *key, size_t cap)
{
	int n = snprintf(key, cap, "%s:%s", r->front, id);

	return n > 0 && (size_t)n < cap && id[0] ? 0 : -EINVAL;
}

static struct conversation *find(struct relay *r, const char *id)
{
	char key[RELAY_KEY_MAX];

	return make_key(r, id, key, sizeof(key)) == 0 ? convstore_get(r->convs, key) : NULL;
}

static int find_or_add(struct relay *r, const char *id, struct conversation **out)
{
	char key[RELAY_KEY_MAX];
	int rc = make_key(r, id, key, sizeof(key));

	if (rc < 0)
		return rc;
	*out = convstore_get(r->convs, key);
	if (*out)
		return 0;
	/* limits.conversations counts open conversations; ending ones are on their way out. */
	if (relay_conversation_count(r) >= (size_t)r->rt->config->limits.conversations)
		return -ENOSPC;
	rc = convstore_add(r->convs, key, out);
	if (rc < 0)
		return rc;
	log_info(r->rt->log, "conv.open", "conv=%s", key);
	conv_events_add(&(*out)->events, CONV_EV_OPENED, "first message");
	relay_end_touch(*out);
	relay_save(r, *out);	/* with its first queued item: a restart finds both or neither */
	return 0;
}

/* The conversation a front message is for, opened on first contact. */
static int front_message(struct relay *r, const char *id, const char *activity, size_t len,
			 struct conversation **c)
{
	int rc = find_or_add(r, id, c);

	if (rc < 0)
		return rc;
	/* The previous conversation of this id is still draining: the front comes back in a
	 * moment and its message starts a new conversation. */
	if ((*c)->state == CONV_ENDING)
		return -EAGAIN;
	relay_end_touch(*c);
	return len < 2 || activity[0] != '{' ? -EINVAL : 0;
}

int relay_to_bot(struct relay *r, const char *id, const char *activity, size_t len)
{
	struct conversation *c;
	int rc;

	if (relay_cluster_forwards(r))
		return relay_cluster_forward(r, "to_bot", id, NULL, false, activity, len);
	rc = front_message(r, id, activity, len, &c);

	return rc < 0 ? rc : relay_enqueue_from(r, c, QUEUE_TO_BOT, activity, len, true);
}

int relay_customer(struct relay *r, const char *id, const char *user_json, const char *activity, size_t len)
{
	struct conversation *c;
	int rc;

	if (relay_cluster_forwards(r))
		return relay_cluster_forward(r, "customer", id, user_json, false, activity, len);
	rc = front_message(r, id, activity, len, &c);

	if (rc < 0)
		return rc;
	if (user_json && (!c->user_json || strcmp(c->user_json, user_json) != 0)) {
		conv_set_string(&c->user_json, user_json);
		relay_save(r, c);
	}
	if (c->state == CONV_BOT)
		return relay_enqueue_from(r, c, QUEUE_TO_BOT, activity, len, true);
	if (r->desk_only)	/* the desk is another system: relay to the agent */
		return relay_hub_enqueue(r, c, RELAY_DESK, "to_agent", activity, len, true);
	return 0;		/* a front+desk hub carries the chat with the agent itself */
}

int relay_agent(struct relay *r, const char *id, const char *activity, size_t len)
{
	struct conversation *c;

	if (relay_cluster_forwards(r))
		return relay_cluster_forward(r, "agent", id, NULL, false, activity, len);
	c = find(r, id);

	if (!c || c->state == CONV_ENDING)
		return -ENOENT;
	/* Agents speak only while the desk has the conversation: a desk's late message after
	 * the handoff ended (or one for a conversation it never had) must not reach the
	 * customer, whom the bot has again. */
	if (c->state != CONV_ROUTING && c->state != CONV_AGENT)
		return -EPERM;
	if (len < 2 || activity[0] != '{')
		return -EINVAL;
	relay_end_touch(c);
	return relay_hub_enqueue(r, c, RELAY_FRONT, "to_user", activity, len, true);
}

int relay_handoff_event(struct relay *r, const char *id, const char *state, bool to_bot)
{
	struct conversation *c;

	if (relay_cluster_forwards(r))
		return relay_cluster_forward(r, "handoff_event", id, state, to_bot, NULL, 0);
	c = find(r, id);

	if (!c)
		return -ENOENT;
	if (c->state == CONV_ENDING)
		return 0;	/* news of a handoff in a conversation that is over */
	relay_end_touch(c);
	if (strcmp(state, "accepted") == 0) {
		relay_hub_accepted(r, c, "the hub accepted");
	} else if (strcmp(state, "failed") == 0) {
		if (c->state == CONV_ROUTING || c->state == CONV_AGENT)
			relay_hub_failed(r, c, "the hub reported a failure");
	} else if (strcmp(state, "completed") == 0) {
		/* Only a handoff under way completes: a late or repeated word of the hub must not
		 * tell the bot "completed" again or end a conversation the bot has back. */
		if (c->state != CONV_ROUTING && c->state != CONV_AGENT)
			return 0;
		metrics_inc(r->m_handoffs_completed);
		conv_events_add(&c->events, CONV_EV_COMPLETED, "the hub completed the handoff");
		relay_report_status(r, c, "completed", NULL);
		if (to_bot)
			relay_set_state(r, c, CONV_BOT, "handoff completed");
		else
			relay_end_begin(r, c, END_BY_HANDOFF);	/* the status reaches the bot first */
	} else {
		return -EINVAL;
	}
	return 0;
}

int relay_end(struct relay *r, const char *id)
{
	struct conversation *c;

	if (relay_cluster_forwards(r))
		return relay_cluster_forward(r, "end", id, NULL, false, NULL, 0);
	c = find(r, id);

	if (!c || c->state == CONV_ENDING)
		return 1;	/* ended already, or never seen: a hub retrying its end */
	relay_end_begin(r, c, END_BY_FRONT);
	return 0;
}

int relay_set_data(struct relay *r, const char *id, const char *data_json)
{
	struct conversation *c;

	if (relay_cluster_forwards(r))
		return relay_cluster_forward(r, "set_data", id, data_json, false, NULL, 0);
	c = find(r, id);

	if (!c)
		return -ENOENT;
	if (data_json[0] != '{')
		return -EINVAL;
	if (conv_set_string(&c->hub_data, data_json) < 0)
		return -ENOMEM;
	relay_save(r, c);
	return 0;
}

int relay_event_seen(struct relay *r, const char *event_id)
{
	return store_event_add(r->store, event_id);
}

int relay_event_seen_async(struct relay *r, const char *event_id, void (*fn)(void *arg, int rc), void *arg)
{
	return store_event_add_async(r->store, event_id, fn, arg);
}

int relay_event_forget(struct relay *r, const char *event_id)
{
	return store_event_delete(r->store, event_id);
}

int relay_conversation_of(struct relay *r, const char *id, struct relay_conv_view *out)
{
	struct conversation *c = find(r, id);

	if (!c)
		return -ENOENT;
	relay_view(c, out);
	return 0;
}

size_t relay_conversation_count(const struct relay *r)
{
	return convstore_count(r->convs) - relay_end_ending(r);
}

void relay_conversation_counts(const struct relay *r, struct relay_counts *out)
{
	size_t n[CONV_STATE_COUNT];

	convstore_count_states(r->convs, n);
	out->bot = n[CONV_BOT];
	out->routing = n[CONV_ROUTING];
	out->agent = n[CONV_AGENT];
	out->ending = n[CONV_ENDING];
}

void relay_stream_counts(const struct relay *r, size_t *streaming, size_t *parked)
{
	struct directline_stats st;

	directline_get_stats(r->dl, &st);
	*parked = st.parked;
	*streaming = st.conversations - st.parked;
}

bool relay_write_pending(const struct relay *r)
{
	return store_write_pending(r->store);
}

int relay_after_commit(struct relay *r, void (*fn)(void *arg), void *arg)
{
	return store_after_commit(r->store, fn, arg);
}

int relay_commit_error(const struct relay *r)
{
	return store_commit_error(r->store);
}
