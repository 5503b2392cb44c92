/* script_host.h - the Lua side of the runtime: generations, tasks, reload.
 *
 * A generation is one lua_State with the hub module(s) and routing rules loaded into
 * it. Loading builds a fresh generation and swaps it in only when everything loaded
 * and every hub's init accepted its settings; otherwise the old one stays. A swapped-out
 * generation is retired: it serves no new work, the work it started finishes on it, and
 * it is closed when its last task ends (or after scripts.retire_after seconds).
 *
 * Every entry into Lua is a task: a coroutine of a generation, started by the host and
 * resumed by the bindings when what it waits for (HTTP, a timer) completes. Tasks with
 * the same key (a conversation) run one at a time in spawn order, even while one waits;
 * tasks of different keys never wait for each other. A task has a CPU budget (counted in
 * VM instructions) and its state a memory cap; a script error ends only its task. */
#ifndef HANDOFFD_SCRIPT_HOST_H
#define HANDOFFD_SCRIPT_HOST_H

#include <stdbool.h>
#include <stddef.h>

struct hd_runtime;
struct script_gen;
struct script_host;
struct script_task;
typedef struct lua_State lua_State;

/* What a Lua state's extra space points at: its generation, and for a task's coroutine
 * the task. Bindings reach the runtime through it (bindings.h). */
struct script_ctx {
	struct hd_runtime *rt;
	struct script_gen *gen;
	struct script_task *task;	/* NULL on the main thread and in script-made coroutines */
};

struct script_host *script_host_new(struct hd_runtime *rt);
/* Aborts every task (their pending operations are cancelled) and closes every state. */
void script_host_free(struct script_host *sh);

/* Builds a new generation from the runtime's config and swaps it in. Returns 0, or a
 * negative errno with "file:line: reason" in ERR and the current generation untouched. */
int script_host_load(struct script_host *sh, char *err, size_t errlen);

/* A graceful stop begins: the current generation's timers fire with premature = true,
 * while its tasks may still finish. */
void script_host_shutdown(struct script_host *sh);

/* The category of the last failed load ("syntax", "config", "runtime", "init", "rules",
 * "examples", "webhooks", "internal"): what /healthz may say without the message, which
 * can quote the source next to a secret. */
const char *script_host_failure(const struct script_host *sh);

/* How many generations have been swapped in (1 after the first load). */
unsigned long script_host_generation(const struct script_host *sh);
/* Tasks not finished yet, over all generations (the graceful stop waits on it). */
unsigned script_host_tasks(const struct script_host *sh);

/* Runs the tests in FILE (a Lua chunk returning a table of name -> function) in a
 * fresh generation, each test as a task, printing one line per test to stdout. Adds to
 * *PASSED and *FAILED. Returns 0, or a negative errno when the file could not load. */
int script_host_run_tests(struct script_host *sh, const char *file, unsigned *passed,
			  unsigned *failed);

/* ---- tasks (script_task.c) ---------------------------------------------------- */

/* Pushes the function to run and its arguments onto CO; returns the argument count or
 * a negative errno (the task then ends with an error without running; -ENOENT: what it
 * was for is gone, e.g. its conversation ended or was taken over, which is no error). */
typedef int (*script_push_fn)(lua_State *co, void *arg);
/* Called once when a task ends. OK: the function returned and its NRES results are on
 * top of CO's stack; otherwise the error message is on top. Results are valid only
 * during the call. CO is NULL when the task never started (aborted while queued). */
typedef void (*script_done_fn)(lua_State *co, bool ok, int nres, void *arg);
/* Cancels whatever a yielded task waits for; the task is being aborted. */
typedef void (*script_cancel_fn)(void *arg);

/* Runs PUSH's function as a task of the current generation. KEY (copied; NULL for none)
 * orders it after the unfinished tasks of the same key. WHAT names it in logs ("hub
 * escalate"). DONE may be NULL. Returns 0 or a negative errno (no generation loaded,
 * out of memory), in which case DONE is not called. */
int script_host_spawn(struct script_host *sh, const char *key, const char *what,
		      script_push_fn push, script_done_fn done, void *arg);

/* The task whose coroutine is L, or NULL (main thread, script-made coroutine). */
struct script_task *script_task_of(lua_State *L);
/* Marks T as waiting on an operation that CANCEL can abort, before the binding yields. */
void script_task_wait(struct script_task *t, script_cancel_fn cancel, void *cancel_arg);
/* Resumes a waiting task with the NARGS values the caller pushed onto its coroutine. */
void script_task_resume(struct script_task *t, int nargs);
/* The task's coroutine, to push results onto before script_task_resume. */
lua_State *script_task_thread(struct script_task *t);

#endif
