/* script_task.c - tasks: coroutines that run script callbacks, in order per key.
 * Owns the coroutine lifecycle (start, resume, end), the per-key FIFO that keeps one
 * conversation's callbacks one at a time, and the CPU budget hook. It does not know
 * what a task does: the spawner pushes the function, a binding that yields is resumed
 * by its completion callback, and the spawner's done callback gets the results. */
#include "script/script_gen.h"

#include "base/config.h"
#include "base/log.h"
#include "net/loop.h"
#include "base/metrics.h"
#include "base/hd_runtime.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The budget hook runs every this many VM instructions: rare enough to cost nothing
 * measurable, often enough to stop a runaway loop within microseconds of its budget. */
#define HOOK_INTERVAL 10000
#define KEYQ_MIN_BUCKETS 64

struct script_task {
	struct script_ctx ctx;		/* the coroutine's extra space points here */
	struct script_host *sh;
	struct script_gen *gen;		/* set when started */
	struct script_gen *fixed_gen;	/* run on this one instead of the current */
	lua_State *co;
	int co_ref;
	char *key;
	char *what;
	struct keyq *q;
	struct script_task *qnext;
	script_push_fn push;
	script_done_fn done;
	void *arg;
	script_cancel_fn cancel;
	void *cancel_arg;
	bool started, waiting;
	unsigned long ticks;
	struct script_task *gprev, *gnext;	/* in the generation's list of started tasks */
};

/* The tasks of one key, head first; the head is the one running or waiting. */
struct keyq {
	char *key;
	struct script_task *head, *tail;
	struct keyq *next;		/* hash chain */
	bool draining;
};

struct keyq_table {
	struct keyq **buckets;
	size_t nbuckets, count;
};

/* ---- the key table ------------------------------------------------------------ */

static size_t hash_key(const char *s)
{
	size_t h = 1469598103934665603ull;	/* FNV-1a */

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

struct keyq_table *script_task_table_new(void)
{
	struct keyq_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->buckets = calloc(KEYQ_MIN_BUCKETS, sizeof(*t->buckets));
	if (!t->buckets) {
		free(t);
		return NULL;
	}
	t->nbuckets = KEYQ_MIN_BUCKETS;
	return t;
}

void script_task_table_free(struct keyq_table *t)
{
	if (!t)
		return;
	free(t->buckets);
	free(t);
}

static void grow(struct keyq_table *t)
{
	size_t n = t->nbuckets * 2;
	struct keyq **b = calloc(n, sizeof(*b));

	if (!b)
		return;	/* longer chains, still correct */
	for (size_t i = 0; i < t->nbuckets; i++) {
		for (struct keyq *q = t->buckets[i], *next; q; q = next) {
			next = q->next;
			q->next = b[hash_key(q->key) & (n - 1)];
			b[hash_key(q->key) & (n - 1)] = q;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
}

static struct keyq *keyq_get(struct keyq_table *t, const char *key, bool create)
{
	struct keyq **slot = &t->buckets[hash_key(key) & (t->nbuckets - 1)];
	struct keyq *q;

	for (q = *slot; q; q = q->next)
		if (strcmp(q->key, key) == 0)
			return q;
	if (!create)
		return NULL;
	q = calloc(1, sizeof(*q));
	if (!q || !(q->key = strdup(key))) {
		free(q);
		return NULL;
	}
	q->next = *slot;
	*slot = q;
	if (++t->count > t->nbuckets)
		grow(t);
	return q;
}

static void keyq_remove(struct keyq_table *t, struct keyq *q)
{
	struct keyq **p = &t->buckets[hash_key(q->key) & (t->nbuckets - 1)];

	while (*p != q)
		p = &(*p)->next;
	*p = q->next;
	t->count--;
	free(q->key);
	free(q);
}

/* ---- running a task ----------------------------------------------------------- */

static const struct config_scripts *limits(const struct script_host *sh)
{
	return &sh->rt->config->scripts;
}

/* Counts instructions for the running task, or for the generation's load when no task
 * runs (a hub init that never returns must not hang a reload either). */
static void budget_hook(lua_State *L, lua_Debug *ar)
{
	struct script_ctx *ctx = *(struct script_ctx **)lua_getextraspace(L);
	struct script_host *sh = ctx->gen->sh;
	unsigned long budget = limits(sh)->max_instructions;
	unsigned long *ticks = sh->running ? &sh->running->ticks : &ctx->gen->load_ticks;

	(void)ar;
	if (budget == 0)
		return;
	*ticks += HOOK_INTERVAL;
	if (*ticks <= budget)
		return;
	/* From now on every instruction raises, so a pcall loop cannot swallow the error. */
	lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
	luaL_error(L, "cpu budget exceeded (%I instructions)", (lua_Integer)budget);
}

static void task_free(struct script_task *t)
{
	free(t->key);
	free(t->what);
	free(t);
}

static void run_queue(struct script_host *sh, struct keyq *q);

static void unlink_from_gen(struct script_task *t)
{
	if (t->gprev)
		t->gprev->gnext = t->gnext;
	else
		t->gen->task_list = t->gnext;
	if (t->gnext)
		t->gnext->gprev = t->gprev;
}

/* Ends T: results or error are on CO (or CO is NULL: never started). */
static void finish(struct script_task *t, bool ok, int nres)
{
	struct script_host *sh = t->sh;
	struct script_gen *g = t->gen;
	struct keyq *q = t->q;

	if (t->done)
		t->done(t->co, ok, nres, t->arg);
	if (t->co) {
		lua_settop(t->co, 0);
		luaL_unref(g->L, LUA_REGISTRYINDEX, t->co_ref);
	}
	sh->tasks--;
	if (q) {
		q->head = t->qnext;
		if (!q->head)
			q->tail = NULL;
	}
	if (g) {
		unlink_from_gen(t);
		g->tasks--;
	}
	task_free(t);
	if (g)
		script_gen_task_ended(g);
	if (q)
		run_queue(sh, q);
}

static void fail_with(struct script_task *t, const char *msg)
{
	metrics_inc(t->sh->errors);
	lua_pushstring(t->co, msg);
	log_error(t->sh->rt->log, "script.error", "what=\"%s\" key=%s error=\"%s\"", t->what,
		  t->key ? t->key : "-", msg);
	finish(t, false, 1);
}

static void step(struct script_task *t, int nargs)
{
	struct script_host *sh = t->sh;
	struct script_task *outer = sh->running;
	int nres = 0, rc;

	t->waiting = false;
	sh->running = t;
	t->gen->in_script++;
	rc = lua_resume(t->co, t->gen->L, nargs, &nres);
	t->gen->in_script--;
	sh->running = outer;
	if (rc == LUA_YIELD && t->waiting)
		return;
	if (rc == LUA_YIELD) {
		lua_settop(t->co, 0);
		fail_with(t, "a hook yielded outside a runtime call (coroutine.yield at the top level?)");
		return;
	}
	if (rc == LUA_OK) {
		finish(t, true, nres);
		return;
	}
	/* The coroutine's stack is not unwound after an error: the traceback still sees it. */
	metrics_inc(sh->errors);
	luaL_traceback(t->co, t->co, lua_tostring(t->co, -1), 0);
	log_error(sh->rt->log, "script.error", "what=\"%s\" key=%s generation=%lu error=\"%s\"", t->what,
		  t->key ? t->key : "-", t->gen->id, lua_tostring(t->co, -1));
	lua_pop(t->co, 1);
	finish(t, false, 1);
}

static void start(struct script_task *t)
{
	struct script_gen *g = t->fixed_gen ? t->fixed_gen : t->sh->current;
	int nargs;

	t->started = true;
	t->gen = g;
	g->tasks++;
	t->gnext = g->task_list;
	if (g->task_list)
		g->task_list->gprev = t;
	g->task_list = t;
	t->co = lua_newthread(g->L);
	t->co_ref = luaL_ref(g->L, LUA_REGISTRYINDEX);
	t->ctx.rt = t->sh->rt;
	t->ctx.gen = g;
	t->ctx.task = t;
	*(struct script_ctx **)lua_getextraspace(t->co) = &t->ctx;
	script_task_set_budget_hook(t->co);
	nargs = t->push(t->co, t->arg);
	if (nargs == -ENOENT) {
		lua_settop(t->co, 0);
		lua_pushliteral(t->co, "its conversation is gone");
		log_info(t->sh->rt->log, "script.skipped", "what=\"%s\" key=%s reason=\"its conversation is gone\"",
			 t->what, t->key ? t->key : "-");
		finish(t, false, 1);
		return;
	}
	if (nargs < 0) {
		lua_settop(t->co, 0);
		fail_with(t, "could not prepare the call (out of memory?)");
		return;
	}
	step(t, nargs);
}

/* Starts queued tasks of Q until one waits. Iterative, so a long queue of tasks that
 * finish at once does not recurse. */
static void run_queue(struct script_host *sh, struct keyq *q)
{
	if (q->draining)
		return;
	q->draining = true;
	while (q->head && !q->head->started) {
		if (sh->closing)
			finish(q->head, false, 0);
		else
			start(q->head);
	}
	q->draining = false;
	if (!q->head)
		keyq_remove(sh->keys, q);
}

int script_task_spawn_on(struct script_host *sh, struct script_gen *g, const char *key,
			 const char *what, script_push_fn push, script_done_fn done, void *arg)
{
	struct script_task *t;

	if (sh->closing)
		return -ESHUTDOWN;
	if (!g && !sh->current)
		return -ENOENT;
	t = calloc(1, sizeof(*t));
	if (!t || (key && !(t->key = strdup(key))) || !(t->what = strdup(what))) {
		if (t)
			task_free(t);
		return -ENOMEM;
	}
	t->sh = sh;
	t->fixed_gen = g;
	t->push = push;
	t->done = done;
	t->arg = arg;
	sh->tasks++;
	if (!key) {
		start(t);
		return 0;
	}
	t->q = keyq_get(sh->keys, key, true);
	if (!t->q) {
		sh->tasks--;
		task_free(t);
		return -ENOMEM;
	}
	if (t->q->tail)
		t->q->tail->qnext = t;
	else
		t->q->head = t;
	t->q->tail = t;
	run_queue(sh, t->q);
	return 0;
}

int script_host_spawn(struct script_host *sh, const char *key, const char *what,
		      script_push_fn push, script_done_fn done, void *arg)
{
	return script_task_spawn_on(sh, NULL, key, what, push, done, arg);
}

void script_task_set_budget_hook(lua_State *L)
{
	struct script_ctx *ctx = *(struct script_ctx **)lua_getextraspace(L);

	/* A count hook makes Lua stop in its hook dispatch before every instruction, not
	 * only every HOOK_INTERVAL (a twentieth of the relay's instructions per message),
	 * so without a budget (max_instructions = 0) there is no hook. */
	if (limits(ctx->gen->sh)->max_instructions == 0)
		return;
	lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_INTERVAL);
}

/* ---- for bindings --------------------------------------------------------------- */

struct script_task *script_task_of(lua_State *L)
{
	struct script_ctx *ctx = *(struct script_ctx **)lua_getextraspace(L);

	return ctx ? ctx->task : NULL;
}

void script_task_wait(struct script_task *t, script_cancel_fn cancel, void *cancel_arg)
{
	t->waiting = true;
	t->cancel = cancel;
	t->cancel_arg = cancel_arg;
}

void script_task_resume(struct script_task *t, int nargs)
{
	t->cancel = NULL;
	t->cancel_arg = NULL;
	step(t, nargs);
}

lua_State *script_task_thread(struct script_task *t)
{
	return t->co;
}

/* ---- aborting ------------------------------------------------------------------- */

/* Ends a task that is waiting: its pending operation is cancelled first, so nothing
 * resumes it afterwards. */
static void abort_waiting(struct script_task *t, const char *why)
{
	if (t->cancel)
		t->cancel(t->cancel_arg);
	t->waiting = false;
	lua_settop(t->co, 0);
	lua_pushfstring(t->co, "aborted: %s", why);
	log_warn(t->sh->rt->log, "script.aborted", "what=\"%s\" key=%s reason=\"%s\"", t->what,
		 t->key ? t->key : "-", why);
	finish(t, false, 1);
}

void script_task_abort_gen(struct script_host *sh, struct script_gen *g)
{
	(void)sh;
	while (g->task_list)
		abort_waiting(g->task_list, "generation retired");
}

void script_task_abort_all(struct script_host *sh)
{
	sh->closing = true;
	if (sh->current)
		script_task_abort_gen(sh, sh->current);
	for (struct script_gen *g = sh->retired; g; g = g->next)
		script_task_abort_gen(sh, g);
	for (size_t i = 0; i < sh->keys->nbuckets; i++) {
		for (struct keyq *q = sh->keys->buckets[i], *next; q; q = next) {
			next = q->next;
			run_queue(sh, q);	/* closing: ends the queued tasks unstarted */
		}
	}
}
