/* json_table.h - JSON as Lua tables without cjson: the text the runtime stored, pushed as
 * the table lua-cjson would decode it to (the arguments of hub calls, desk.c), and the
 * values json_simd captured (the handoff object's variables). */
#ifndef HANDOFFD_JSON_TABLE_H
#define HANDOFFD_JSON_TABLE_H

#include <handoffd/parse.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

struct json_table;

/* A reusable decoder (its buffers grow to the largest document seen); NULL on failure. */
struct json_table *json_table_new(void);
void json_table_free(struct json_table *jt);

/* Pushes the table the JSON object at TEXT (LEN bytes) decodes to and returns 0; or
 * returns -EINVAL and pushes nothing when the text is one to leave to cjson (see
 * json_table.c), -ENOMEM likewise. */
int json_table_push(struct json_table *jt, lua_State *L, const char *text, size_t len);

/* Pushes the JSON value N (its descendants follow it, as json_simd captures them) as its
 * Lua type: a JSON null is the light userdata NULL that lua-cjson calls cjson.null, so a
 * key sent with null stays in the table. Numbers are floats read by strtod from the text
 * (which must go on to a delimiter or NUL) when CJSON_NUMBERS, as cjson has them; else
 * integers where JSON wrote one that fits. */
void json_node_push(lua_State *L, const struct hd_node *n, bool cjson_numbers);

#endif
