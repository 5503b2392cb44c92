/* script_gen.h - the insides of script_host shared by its files (script_host.c,
 * script_task.c, webhooks.c) and the bindings that keep per-generation state (timers).
 * Nothing outside the scripting part includes this. */
#ifndef HANDOFFD_SCRIPT_GEN_H
#define HANDOFFD_SCRIPT_GEN_H

#include "script/script_host.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Registry keys of a generation's loaded pieces. */
#define SCRIPT_REG_HUB "handoffd.hub"
#define SCRIPT_REG_FRONT "handoffd.front"
#define SCRIPT_REG_DESK "handoffd.desk"
#define SCRIPT_REG_ROUTES "handoffd.routes"
#define SCRIPT_REG_EVALUATE "handoffd.route_evaluate"	/* handoff.route's evaluate */
#define SCRIPT_REG_RELAY_RUN "handoffd.relay_run"	/* handoff.relay's run */
#define SCRIPT_REG_RELAY_ESCALATE "handoffd.relay_escalate"	/* handoff.relay's escalate */
#define SCRIPT_REG_RELAY_ROUTE "handoffd.relay_route"	/* handoff.relay's route */

struct loop_timer;
struct json_table;
struct keyq_table;
struct webhook;

/* Something that must happen when a generation is retired (a timer firing early). */
struct script_retire_hook {
	void (*fn)(struct script_retire_hook *hook);
	struct script_retire_hook *prev, *next;
};

struct script_gen {
	struct script_ctx ctx;		/* the main thread's extra space points here */
	struct script_host *sh;
	lua_State *L;
	unsigned long id;
	unsigned tasks;			/* unfinished tasks started on this generation */
	struct script_task *task_list;	/* those tasks (script_task.c links them) */
	bool retired;
	int in_script;			/* > 0 while Lua code runs: the memory cap applies */
	unsigned long load_ticks;	/* instructions spent loading (the budget applies) */
	size_t mem_used, mem_limit;
	struct loop_timer *retire_timer;	/* forces the close after retire_after */
	struct script_retire_hook retire_hooks;	/* list head (sentinel) */
	const char *stage;		/* what loading does now: names a failure for /healthz */
	const char *failure;		/* set by the step that failed: "syntax", "init", ... */
	struct webhook *webhooks;	/* routes this generation serves */
	size_t nwebhooks;
	struct script_gen *next;	/* in the host's list of retired generations */
};

struct script_host {
	struct hd_runtime *rt;
	struct script_gen *current;
	struct script_gen *retired;	/* still running tasks */
	unsigned long generations;
	unsigned tasks;			/* over all generations, queued ones included */
	struct keyq_table *keys;	/* per-key task order (script_task.c) */
	struct script_task *running;	/* the task whose coroutine runs now */
	struct json_table *json;	/* decodes the hub calls' arguments (desk.c) */
	bool closing;			/* shutting down: queued tasks end unstarted */
	uint64_t *errors;		/* counter: callbacks that ended in an error */
	const char *failure;		/* category of the last failed load, or NULL */
};

void script_gen_add_retire_hook(struct script_gen *g, struct script_retire_hook *hook);
void script_gen_remove_retire_hook(struct script_retire_hook *hook);
/* The generation of a state (main thread or any coroutine). */
struct script_gen *script_gen_of(lua_State *L);
/* Called by script_task.c when a task of G ended: a retired G may close now. */
void script_gen_task_ended(struct script_gen *g);

/* script_task.c */
struct keyq_table *script_task_table_new(void);
/* Aborts every task: queued ones end with done(NULL...), waiting ones are cancelled. */
void script_task_abort_all(struct script_host *sh);
/* Aborts the waiting and queued tasks of G (a retired generation whose time is up). */
void script_task_abort_gen(struct script_host *sh, struct script_gen *g);
void script_task_table_free(struct keyq_table *t);
/* Installs the CPU budget hook on L (a task's coroutine, or a state being loaded). */
void script_task_set_budget_hook(lua_State *L);
/* Spawns on a given generation (the test runner uses its own). */
int script_task_spawn_on(struct script_host *sh, struct script_gen *g, const char *key,
			 const char *what, script_push_fn push, script_done_fn done, void *arg);

/* Message handler for lua_pcall: the error plus a traceback naming file and line. */
int script_traceback(lua_State *L);

#endif
