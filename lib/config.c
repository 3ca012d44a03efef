// SPDX-License-Identifier: MIT
/*
 * lib/config.c - `key = value' configuration files and value parsers.
 *
 * The parser reads one line at a time into a buffer on the stack, splits it
 * into a key and a value and hands them to the caller's callback; it knows
 * nothing of what the keys mean. The value parsers turn a value into a
 * number, a size, a file mode, a boolean or one of a list of names, and
 * accept nothing else: no trailing text, no sign, no overflow.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "lib/config.h"

/* A source of characters: a stdio stream, or a NUL-terminated string. */
struct config_reader {
	FILE *f;
	const char *s;
};

static int reader_getc(struct config_reader *r)
{
	if (r->f)
		return getc(r->f);
	if (!*r->s)
		return EOF;
	return (unsigned char)*r->s++;
}

static bool is_blank(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static char *skip_blank(char *s)
{
	while (is_blank(*s))
		s++;
	return s;
}

static void trim_right(char *s)
{
	size_t n = strlen(s);

	while (n && is_blank(s[n - 1]))
		s[--n] = '\0';
}

/**
 * kv_config_error() - report an error at a file position
 * @pos:   file, line and error buffer; a line of 0 names only the file
 * @error: the negative errno to return
 * @fmt:   printf format of the message, without file, line or newline
 *
 * Writes "FILE:LINE: message" (or "FILE: message") into @pos->err,
 * truncated to @pos->errlen. A NULL @pos->err is allowed.
 *
 * Return: @error, so that a caller can `return kv_config_error(...)'.
 */
int kv_config_error(const struct kv_config_pos *pos, int error,
		    const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!pos->err || !pos->errlen)
		return error;
	if (pos->line)
		n = snprintf(pos->err, pos->errlen, "%s:%u: ", pos->file, pos->line);
	else
		n = snprintf(pos->err, pos->errlen, "%s: ", pos->file);
	if (n < 0 || (size_t)n >= pos->errlen)
		return error;
	va_start(ap, fmt);
	vsnprintf(pos->err + n, pos->errlen - n, fmt, ap);
	va_end(ap);
	return error;
}

/*
 * Read one line without its newline into @buf. Return 1 for a line, 0 at
 * the end of input, -E2BIG for a line longer than KV_CONFIG_LINE_MAX, -EILSEQ
 * for a NUL byte, or -errno for a read error.
 */
static int config_read_line(struct config_reader *r, char *buf, size_t size)
{
	size_t n = 0;
	int c;

	errno = 0;
	while ((c = reader_getc(r)) != EOF && c != '\n') {
		if (!c)
			return -EILSEQ;
		if (n == size - 1)
			return -E2BIG;
		buf[n++] = (char)c;
	}
	buf[n] = '\0';
	if (r->f && ferror(r->f))
		return errno ? -errno : -EIO;
	return c == EOF && !n ? 0 : 1;
}

static int key_check(const struct kv_config_pos *pos, const char *key)
{
	const char *p;

	for (p = key; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')
			continue;
		if (*p == '.' && p != key && p[1] && p[1] != '.')
			continue;
		if (*p == '.')
			return kv_config_error(pos, -EINVAL,
					       "empty segment in key '%s'", key);
		if (*p >= 0x20 && *p < 0x7f)
			return kv_config_error(pos, -EINVAL,
					       "invalid character '%c' in key '%s'",
					       *p, key);
		return kv_config_error(pos, -EINVAL,
				       "invalid byte 0x%02x in key", (unsigned char)*p);
	}
	return 0;
}

/**
 * kv_config_key_valid() - check that a string is a dotted identifier
 * @key: the string
 *
 * Return: true when @key is one or more segments of [a-z0-9_] joined by '.'.
 */
bool kv_config_key_valid(const char *key)
{
	struct kv_config_pos pos = { .file = "" };

	return *key && !key_check(&pos, key);
}

/* The value of a quoted string: what lies between the quotes. */
static int value_unquote(const struct kv_config_pos *pos, const char *key,
			 char *p, char **value)
{
	char *close = strchr(p + 1, '"'), *rest;

	if (!close)
		return kv_config_error(pos, -EINVAL,
				       "unterminated quoted value for '%s'", key);
	*close = '\0';
	rest = skip_blank(close + 1);
	if (*rest && *rest != '#')
		return kv_config_error(pos, -EINVAL,
				       "unexpected text after the quoted value of '%s'",
				       key);
	*value = p + 1;
	return 0;
}

/*
 * The value of an unquoted string: up to a '#' that follows a blank. @p
 * starts after the '=' (blanks included), so "k = # x" has no value and
 * "k =#x" has the value "#x".
 */
static void value_strip_comment(char *p)
{
	char *h;

	for (h = strchr(p, '#'); h; h = strchr(h + 1, '#')) {
		if (h > p && is_blank(h[-1])) {
			*h = '\0';
			break;
		}
	}
	trim_right(p);
}

static int value_split(const struct kv_config_pos *pos, const char *key,
		       char *p, char **value)
{
	const char *c;
	int ret;

	if (*skip_blank(p) == '"') {
		ret = value_unquote(pos, key, skip_blank(p), value);
		if (ret)
			return ret;
	} else {
		value_strip_comment(p);
		*value = skip_blank(p);
	}
	if (!**value)
		return kv_config_error(pos, -EINVAL, "missing value for '%s'", key);
	for (c = *value; *c; c++) {
		if ((unsigned char)*c < 0x20 && *c != '\t')
			return kv_config_error(pos, -EINVAL,
					       "control character in the value of '%s'",
					       key);
	}
	return 0;
}

static int config_parse_line(const struct kv_config_pos *pos, char *line,
			     kv_config_fn fn, void *arg)
{
	char *key = skip_blank(line), *eq, *value = NULL;
	int ret;

	if (!*key || *key == '#')
		return 0;
	eq = strchr(key, '=');
	if (!eq)
		return kv_config_error(pos, -EINVAL, "expected 'key = value'");
	*eq = '\0';
	trim_right(key);
	if (!*key)
		return kv_config_error(pos, -EINVAL, "missing key before '='");
	ret = key_check(pos, key);
	if (ret)
		return ret;
	ret = value_split(pos, key, eq + 1, &value);
	if (ret)
		return ret;
	if (pos->err && pos->errlen)
		pos->err[0] = '\0';
	ret = fn(pos, key, value, arg);
	if (ret < 0 && pos->err && pos->errlen && !pos->err[0])
		kv_config_error(pos, ret, "%s: %s", key, strerror(-ret));
	return ret < 0 ? ret : 0;
}

static int config_read_error(struct kv_config_pos *pos, int ret)
{
	switch (ret) {
	case -E2BIG:
		return kv_config_error(pos, -EINVAL, "line longer than %d bytes",
				       KV_CONFIG_LINE_MAX);
	case -EILSEQ:
		return kv_config_error(pos, -EINVAL, "NUL byte in line");
	default:
		pos->line = 0;
		return kv_config_error(pos, ret, "read error: %s", strerror(-ret));
	}
}

static int config_parse(struct config_reader *r, const char *name,
			kv_config_fn fn, void *arg, char *err, size_t errlen)
{
	struct kv_config_pos pos = { .file = name, .err = err, .errlen = errlen };
	char line[KV_CONFIG_LINE_MAX + 1];
	int ret;

	if (err && errlen)
		err[0] = '\0';
	for (;;) {
		pos.line++;
		ret = config_read_line(r, line, sizeof(line));
		if (ret < 0)
			return config_read_error(&pos, ret);
		if (!ret)
			return 0;
		ret = config_parse_line(&pos, line, fn, arg);
		if (ret)
			return ret;
	}
}

/**
 * kv_config_parse_file() - parse a configuration file
 * @path:   file to read; also the name used in messages
 * @fn:     called for each key/value pair, in file order
 * @arg:    passed to @fn
 * @err:    receives "FILE:LINE: message" on error, "" on success; may be NULL
 * @errlen: size of @err
 *
 * Return: 0; -EINVAL for a syntax error; the error @fn returned; or -errno
 * when the file cannot be opened or read (the message is "FILE: reason").
 */
int kv_config_parse_file(const char *path, kv_config_fn fn, void *arg,
			 char *err, size_t errlen)
{
	struct kv_config_pos pos = { .file = path, .err = err, .errlen = errlen };
	struct config_reader r = { 0 };
	int ret;

	r.f = fopen(path, "re");
	if (!r.f) {
		ret = -errno;
		return kv_config_error(&pos, ret, "%s", strerror(-ret));
	}
	ret = config_parse(&r, path, fn, arg, err, errlen);
	fclose(r.f);
	return ret;
}

/**
 * kv_config_parse_string() - parse configuration text held in memory
 * @name:   name used for the text in messages (e.g. "<cmdline>")
 * @text:   the text, lines separated by '\n'
 * @fn:     called for each key/value pair, in order
 * @arg:    passed to @fn
 * @err:    receives "NAME:LINE: message" on error, "" on success; may be NULL
 * @errlen: size of @err
 *
 * Return: 0; -EINVAL for a syntax error; or the error @fn returned.
 */
int kv_config_parse_string(const char *name, const char *text, kv_config_fn fn,
			   void *arg, char *err, size_t errlen)
{
	struct config_reader r = { .s = text };

	return config_parse(&r, name, fn, arg, err, errlen);
}

/* ---- values -------------------------------------------------------- */

static int digit_value(char c, unsigned int base)
{
	int d;

	if (c >= '0' && c <= '9')
		d = c - '0';
	else if (c >= 'a' && c <= 'f')
		d = c - 'a' + 10;
	else if (c >= 'A' && c <= 'F')
		d = c - 'A' + 10;
	else
		return -1;
	return d < (int)base ? d : -1;
}

/*
 * Parse a decimal or 0x-prefixed hexadecimal number at the head of @s and
 * point *@end past it. Return 0, -EINVAL without digits, or -ERANGE when
 * it does not fit in 64 bits (all its digits are still consumed).
 */
static int parse_number(const char *s, const char **end, uint64_t *out)
{
	unsigned int base = 10;
	bool overflow = false;
	uint64_t v = 0;
	int d;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (digit_value(*s, base) < 0)
		return -EINVAL;
	for (; (d = digit_value(*s, base)) >= 0; s++) {
		if (v > (UINT64_MAX - d) / base)
			overflow = true;
		v = v * base + d;
	}
	*end = s;
	*out = v;
	return overflow ? -ERANGE : 0;
}

/**
 * kv_parse_uint() - parse an unsigned integer within a range
 * @s:   decimal ("4096") or hexadecimal ("0x1000") digits, nothing else;
 *       leading zeros do not make a number octal
 * @min: smallest value accepted
 * @max: largest value accepted
 * @out: receives the value; untouched on error
 *
 * Return: 0; -EINVAL for anything but digits (a sign, blanks, trailing
 * text, no digits); -ERANGE outside [@min, @max] or beyond 64 bits.
 */
int kv_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	const char *end = s;
	uint64_t v;
	int ret;

	ret = parse_number(s, &end, &v);
	if (ret == -EINVAL || *end)
		return -EINVAL;
	if (ret || v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

/**
 * kv_parse_size() - parse a size in bytes, with an optional binary suffix
 * @s:   a number as for kv_parse_uint(), then optionally one of K, M, G, T
 *       (or k, m, g, t) for 2^10, 2^20, 2^30, 2^40: "64M", "0x100000", "1T"
 * @min: smallest value accepted, in bytes
 * @max: largest value accepted, in bytes
 * @out: receives the size in bytes; untouched on error
 *
 * Return: 0; -EINVAL for a malformed size or an unknown suffix; -ERANGE
 * outside [@min, @max] or beyond 64 bits once scaled.
 */
int kv_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	static const char suffixes[] = "kmgt";
	const char *end = s, *sfx;
	unsigned int shift = 0;
	uint64_t v;
	int ret;

	ret = parse_number(s, &end, &v);
	if (ret == -EINVAL)
		return ret;
	if (*end) {
		sfx = strchr(suffixes, *end | 0x20);
		if (!sfx || !*sfx || end[1])
			return -EINVAL;
		shift = 10 * (unsigned int)(sfx - suffixes + 1);
	}
	if (ret || v > (UINT64_MAX >> shift))
		return -ERANGE;
	v <<= shift;
	if (v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

/**
 * kv_parse_mode() - parse a file mode in octal
 * @s:   octal digits, as chmod(1) takes them: "0660", "660", "2770"
 * @out: receives the mode; untouched on error
 *
 * Return: 0; -EINVAL for anything but octal digits; -ERANGE above 07777.
 */
int kv_parse_mode(const char *s, unsigned int *out)
{
	unsigned int v = 0;
	bool big = false;
	const char *p;

	if (!*s)
		return -EINVAL;
	for (p = s; *p; p++) {
		if (*p < '0' || *p > '7')
			return -EINVAL;
		if (v > 07777)
			big = true;
		else
			v = v * 8 + (unsigned int)(*p - '0');
	}
	if (big || v > 07777)
		return -ERANGE;
	*out = v;
	return 0;
}

/**
 * kv_parse_bool() - parse a boolean
 * @s:   1, yes, true or on; 0, no, false or off (in any case)
 * @out: receives the value; untouched on error
 *
 * Return: 0, or -EINVAL for anything else.
 */
int kv_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "yes", "true", "on" };
	static const char *const no[] = { "0", "no", "false", "off" };
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!strcasecmp(s, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

/**
 * kv_parse_choice() - parse one of a list of names
 * @s:     the value; compared exactly, case included
 * @names: the accepted names, ending with NULL
 * @out:   receives the index of the name in @names; untouched on error
 *
 * Return: 0, or -EINVAL when @s is none of @names.
 */
int kv_parse_choice(const char *s, const char *const *names, unsigned int *out)
{
	unsigned int i;

	for (i = 0; names[i]; i++) {
		if (!strcmp(s, names[i])) {
			*out = i;
			return 0;
		}
	}
	return -EINVAL;
}

/**
 * kv_format_size() - write a size the way kv_parse_size() reads it
 * @bytes: the size
 * @buf:   receives the text: the largest exact suffix ("64M", "1536K"), or
 *         plain bytes when no suffix divides the size
 * @len:   size of @buf
 *
 * Return: 0, or -ERANGE when @buf is too small (it then holds a truncated,
 * NUL-terminated text if @len > 0).
 */
int kv_format_size(uint64_t bytes, char *buf, size_t len)
{
	static const char suffixes[] = "KMGT";
	int i, n;

	for (i = 3; i >= 0; i--) {
		unsigned int shift = 10 * (unsigned int)(i + 1);

		if (bytes && !(bytes & ((1ull << shift) - 1)))
			break;
	}
	if (i >= 0)
		n = snprintf(buf, len, "%llu%c",
			     (unsigned long long)(bytes >> (10 * (i + 1))), suffixes[i]);
	else
		n = snprintf(buf, len, "%llu", (unsigned long long)bytes);
	return n < 0 || (size_t)n >= len ? -ERANGE : 0;
}

/**
 * kv_errorf() - format a message into a caller's error buffer
 * @err:    the buffer, or NULL
 * @errlen: its size (0: nothing is written)
 * @fmt:    printf format
 *
 * Return: -EINVAL, so that a check can end with "return kv_errorf(...)".
 */
int kv_errorf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}
