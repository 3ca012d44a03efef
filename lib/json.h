/* SPDX-License-Identifier: MIT */
/*
 * A small, strict JSON reader (RFC 8259), enough for a Hugging Face
 * config.json: objects, arrays, strings with every escape (surrogate pairs
 * included), numbers, true, false and null, parsed into a tree.
 *
 * Strict means: no comments, no trailing commas, no single quotes, no NaN
 * or Infinity, no leading zeros or '+', no control characters or invalid
 * UTF-8 in strings, no "\u0000", no member name twice in one object, and
 * nothing but blanks after the value. A UTF-8 byte order mark at the start
 * is skipped. Limits: KV_JSON_SIZE_MAX bytes of text, KV_JSON_DEPTH_MAX
 * levels of nesting.
 *
 * Errors are negative errno values; a parse error also writes
 * "LINE:COLUMN: message" into the caller's buffer (columns count
 * characters, from 1), which kv_json_load_file() prefixes with the path,
 * as compilers do. Nothing here keeps state between calls.
 */
#ifndef _KV_LIB_JSON_H
#define _KV_LIB_JSON_H

#include <stddef.h>
#include <stdint.h>

/* Internal to kvmem's binaries: not exported by libkvclient.so. */
#define KV_JSON_HIDDEN	__attribute__((visibility("hidden")))

/* Value types (struct kv_json.type). */
#define KV_JSON_NULL	0
#define KV_JSON_FALSE	1
#define KV_JSON_TRUE	2
#define KV_JSON_NUMBER	3
#define KV_JSON_STRING	4
#define KV_JSON_ARRAY	5
#define KV_JSON_OBJECT	6

/* Limits: the largest text, the deepest nesting of arrays and objects. */
#define KV_JSON_SIZE_MAX	(4u << 20)
#define KV_JSON_DEPTH_MAX	64

/* A good size for the error buffers passed to the functions below. */
#define KV_JSON_ERR_MAX		320

/**
 * struct kv_json - one value of a parsed document
 * @type:   KV_JSON_*
 * @line:   line of its first character, from 1
 * @column: column of its first character, from 1
 * @key:    its member name when it is a member of an object, else NULL
 * @str:    KV_JSON_STRING: the decoded text (UTF-8, NUL-terminated, no NUL
 *          inside); KV_JSON_NUMBER: the number as written
 * @len:    bytes of @str
 * @num:    KV_JSON_NUMBER: its value as a double
 * @nr:     KV_JSON_ARRAY, KV_JSON_OBJECT: elements or members
 * @child:  KV_JSON_ARRAY, KV_JSON_OBJECT: the first of them, in text order
 * @next:   the next element or member of the same parent
 *
 * A document is a tree of these, owned by its root; kv_json_free() frees
 * it whole.
 */
struct kv_json {
	int type;
	unsigned int line;
	unsigned int column;
	char *key;
	char *str;
	size_t len;
	double num;
	size_t nr;
	struct kv_json *child;
	struct kv_json *next;
};

KV_JSON_HIDDEN int kv_json_parse(const char *text, size_t len, struct kv_json **out,
				 char *err, size_t errlen);
KV_JSON_HIDDEN int kv_json_load_file(const char *path, struct kv_json **out,
				     char *err, size_t errlen);
KV_JSON_HIDDEN void kv_json_free(struct kv_json *v);
KV_JSON_HIDDEN const struct kv_json *kv_json_get(const struct kv_json *obj,
						 const char *key);
KV_JSON_HIDDEN int kv_json_uint(const struct kv_json *v, uint64_t max, uint64_t *out);
KV_JSON_HIDDEN const char *kv_json_type_name(int type);

#endif /* _KV_LIB_JSON_H */
