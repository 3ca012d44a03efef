/* SPDX-License-Identifier: MIT */
/*
 * Configuration files of `key = value' lines, and parsers for their values.
 *
 * The format (Documentation/admin-guide/kvmemd.conf.md has the whole story):
 *
 *	# a comment
 *	vm.watermark_scale_factor = 10		# a trailing comment
 *	socket.path = "/run/kvmemd/kvmemd.sock"
 *
 * Blank lines and lines whose first non-blank character is '#' are skipped;
 * '#' after a blank starts a trailing comment. A key is one or more segments
 * of [a-z0-9_] joined by '.'; a value is the rest of the line with its
 * surrounding blanks trimmed, or the text between double quotes (no escapes;
 * a quoted value may hold blanks and '#'). Lines are at most
 * KV_CONFIG_LINE_MAX bytes, newline excluded.
 *
 * Errors are negative errno values. A parse error also writes a message of
 * the form "FILE:LINE: message" into the caller's buffer (see
 * KV_CONFIG_ERR_MAX), as compilers do, so that it can be logged as is.
 *
 * Nothing here keeps state between calls: every function is safe to call
 * from any thread on its own arguments.
 */
#ifndef _KV_LIB_CONFIG_H
#define _KV_LIB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest line accepted, in bytes, not counting the newline. */
#define KV_CONFIG_LINE_MAX	4096

/* A good size for the error buffers passed to the functions below. */
#define KV_CONFIG_ERR_MAX	256

/**
 * struct kv_config_pos - where a key/value pair was read, and where to report
 * @file:   file name as given to the parser (used in messages)
 * @line:   line number, from 1
 * @err:    the caller's error buffer
 * @errlen: its size in bytes
 *
 * Passed to a kv_config_fn so that it can report a bad value with
 * kv_config_error() at the right place.
 */
struct kv_config_pos {
	const char *file;
	unsigned int line;
	char *err;
	size_t errlen;
};

/**
 * typedef kv_config_fn - called for each `key = value' line, in file order
 * @pos:   file and line of the pair; the error buffer
 * @key:   the key, a valid dotted identifier
 * @value: the value, trimmed and unquoted, never empty
 * @arg:   the caller's argument
 *
 * Both strings live only for the call. Return 0 to go on, or a negative
 * errno to stop the parse, which then returns it. A callback that fails
 * should describe the failure with kv_config_error(); if it leaves the
 * error buffer empty, the parser writes "FILE:LINE: KEY: strerror".
 */
typedef int (*kv_config_fn)(const struct kv_config_pos *pos, const char *key,
			    const char *value, void *arg);

int kv_config_parse_file(const char *path, kv_config_fn fn, void *arg,
			 char *err, size_t errlen);
int kv_config_parse_string(const char *name, const char *text, kv_config_fn fn,
			   void *arg, char *err, size_t errlen);

int kv_config_error(const struct kv_config_pos *pos, int error,
		    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
bool kv_config_key_valid(const char *key);

int kv_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);
int kv_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out);
int kv_parse_mode(const char *s, unsigned int *out);
int kv_parse_bool(const char *s, bool *out);
int kv_parse_choice(const char *s, const char *const *names, unsigned int *out);
int kv_format_size(uint64_t bytes, char *buf, size_t len);
int kv_errorf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif /* _KV_LIB_CONFIG_H */
