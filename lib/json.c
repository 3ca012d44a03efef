// SPDX-License-Identifier: MIT
/*
 * lib/json.c - a small, strict JSON reader (see json.h).
 *
 * A recursive descent over the text, one function per kind of value,
 * that builds the tree as it goes: every value is linked into its parent
 * as soon as it is allocated, so that freeing the root on an error frees
 * everything read so far. The position (line, column) moves with every
 * byte consumed, through advance() alone, so that an error names the
 * character it stopped at.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/json.h"

/* The most values (of any type) in one document. */
#define JSON_VALUES_MAX		(1u << 18)

/**
 * struct json_parser - where a parse stands
 * @p:      the next byte
 * @end:    the end of the text
 * @line:   line of @p, from 1
 * @col:    column of @p, from 1, in characters
 * @values: values allocated so far
 * @err:    the caller's error buffer
 * @errlen: its size
 */
struct json_parser {
	const unsigned char *p;
	const unsigned char *end;
	unsigned int line;
	unsigned int col;
	unsigned int values;
	char *err;
	size_t errlen;
};

static int json_error_at(struct json_parser *ps, unsigned int line, unsigned int col,
			 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int json_error_at(struct json_parser *ps, unsigned int line, unsigned int col,
			 const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!ps->err || !ps->errlen)
		return -EINVAL;
	n = snprintf(ps->err, ps->errlen, "%u:%u: ", line, col);
	if (n < 0 || (size_t)n >= ps->errlen)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(ps->err + n, ps->errlen - n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

#define json_error(ps, ...)	json_error_at(ps, (ps)->line, (ps)->col, __VA_ARGS__)

static bool at_end(const struct json_parser *ps)
{
	return ps->p >= ps->end;
}

/* Consume one byte; a column is a character, so continuation bytes add none. */
static void advance(struct json_parser *ps)
{
	unsigned char c = *ps->p++;

	if (c == '\n') {
		ps->line++;
		ps->col = 1;
	} else if ((c & 0xc0) != 0x80) {
		ps->col++;
	}
}

static void skip_blanks(struct json_parser *ps)
{
	while (!at_end(ps) && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' ||
			       *ps->p == '\r'))
		advance(ps);
}

/* The next character, for a message: "'x'", "byte 0xNN" or "the end of the text". */
static const char *found(const struct json_parser *ps, char *buf, size_t len)
{
	if (at_end(ps))
		return "the end of the text";
	if (*ps->p >= 0x20 && *ps->p < 0x7f)
		snprintf(buf, len, "'%c'", *ps->p);
	else
		snprintf(buf, len, "byte 0x%02x", *ps->p);
	return buf;
}

/* A new value at the current position, linked after *@link. */
static struct kv_json *value_new(struct json_parser *ps, struct kv_json **link, int *ret)
{
	struct kv_json *v;

	if (ps->values == JSON_VALUES_MAX) {
		*ret = json_error(ps, "more than %u values", JSON_VALUES_MAX);
		return NULL;
	}
	v = calloc(1, sizeof(*v));
	if (!v) {
		*ret = -ENOMEM;
		return NULL;
	}
	ps->values++;
	v->line = ps->line;
	v->column = ps->col;
	*link = v;
	return v;
}

/* ---- strings ------------------------------------------------------------ */

static int hex4(struct json_parser *ps, unsigned int *out)
{
	unsigned int v = 0, i, d;
	unsigned char c;

	for (i = 0; i < 4; i++) {
		if (at_end(ps))
			return json_error(ps, "\\u needs four hex digits");
		c = *ps->p;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			d = (c | 0x20) - 'a' + 10;
		else
			return json_error(ps, "\\u needs four hex digits");
		v = v << 4 | d;
		advance(ps);
	}
	*out = v;
	return 0;
}

static size_t utf8_put(char *o, unsigned int cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* A \uXXXX escape, the backslash and 'u' consumed: its UTF-8 into @o. */
static int escape_u(struct json_parser *ps, unsigned int line, unsigned int col,
		    char *o, size_t *n)
{
	unsigned int cp, lo;
	int ret;

	ret = hex4(ps, &cp);
	if (ret)
		return ret;
	if (cp >= 0xdc00 && cp <= 0xdfff)
		return json_error_at(ps, line, col, "a lone UTF-16 surrogate \\u%04X", cp);
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
			return json_error_at(ps, line, col, "a lone UTF-16 surrogate \\u%04X", cp);
		advance(ps);
		advance(ps);
		ret = hex4(ps, &lo);
		if (ret)
			return ret;
		if (lo < 0xdc00 || lo > 0xdfff)
			return json_error_at(ps, line, col,
					     "\\u%04X is not followed by a low surrogate", cp);
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	}
	if (!cp)
		return json_error_at(ps, line, col, "\\u0000 (NUL) is not allowed in strings");
	*n += utf8_put(o + *n, cp);
	return 0;
}

static int escape(struct json_parser *ps, char *o, size_t *n)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	unsigned int line = ps->line, col = ps->col;
	const char *e;
	char buf[16];

	advance(ps);	/* the backslash */
	if (at_end(ps))
		return json_error(ps, "unterminated string");
	if (*ps->p == 'u') {
		advance(ps);
		return escape_u(ps, line, col, o, n);
	}
	e = *ps->p ? strchr(from, *ps->p) : NULL;
	if (!e)
		return json_error_at(ps, line, col, "invalid escape: backslash then %s",
				     found(ps, buf, sizeof(buf)));
	o[(*n)++] = to[e - from];
	advance(ps);
	return 0;
}

/* Bytes of the UTF-8 sequence at the parser, or 0 when it is not one. */
static size_t utf8_len(const struct json_parser *ps)
{
	const unsigned char *s = ps->p;
	size_t left = (size_t)(ps->end - s), n, i;
	unsigned char lo = 0x80, hi = 0xbf;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;	/* no overlong forms */
	else if (s[0] == 0xed)
		hi = 0x9f;	/* no surrogates */
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;	/* nothing past U+10FFFF */
	if (left < n || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < n; i++) {
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	}
	return n;
}

/* Where the string at the parser ends (its closing quote), or NULL. */
static const unsigned char *string_end(const struct json_parser *ps)
{
	const unsigned char *q = ps->p + 1;

	while (q < ps->end && *q != '"')
		q += *q == '\\' ? 2 : 1;
	return q < ps->end ? q : NULL;
}

/* A string, at its opening quote: its decoded text into *@out, *@len bytes. */
static int string_parse(struct json_parser *ps, char **out, size_t *len)
{
	unsigned int line = ps->line, col = ps->col;
	const unsigned char *end = string_end(ps);
	size_t n = 0, u, i;
	char *o;
	int ret;

	if (!end)
		return json_error(ps, "unterminated string");
	o = malloc((size_t)(end - ps->p));
	if (!o)
		return -ENOMEM;
	advance(ps);	/* the opening quote */
	while (ps->p < end) {
		if (*ps->p == '\\') {
			ret = escape(ps, o, &n);
			if (ret)
				goto out_free;
		} else if (*ps->p < 0x20) {
			ret = json_error(ps, "control character 0x%02x in a string (write it as an escape)",
					 *ps->p);
			goto out_free;
		} else if (*ps->p < 0x80) {
			o[n++] = (char)*ps->p;
			advance(ps);
		} else {
			u = utf8_len(ps);
			if (!u) {
				ret = json_error(ps, "invalid UTF-8 (byte 0x%02x) in a string", *ps->p);
				goto out_free;
			}
			for (i = 0; i < u; i++) {
				o[n++] = (char)*ps->p;
				advance(ps);
			}
		}
	}
	if (ps->p != end) {	/* an escape ran past the quote: "\" */
		ret = json_error_at(ps, line, col, "unterminated string");
		goto out_free;
	}
	advance(ps);	/* the closing quote */
	o[n] = '\0';
	*out = o;
	*len = n;
	return 0;

out_free:
	free(o);
	return ret;
}

/* ---- numbers and literals ----------------------------------------------- */

static bool is_digit(const struct json_parser *ps)
{
	return !at_end(ps) && *ps->p >= '0' && *ps->p <= '9';
}

static void digits(struct json_parser *ps)
{
	while (is_digit(ps))
		advance(ps);
}

static int number_parse(struct json_parser *ps, struct kv_json *v)
{
	const unsigned char *start = ps->p;
	char buf[16];

	if (*ps->p == '-')
		advance(ps);
	if (!is_digit(ps))
		return json_error(ps, "expected a digit, found %s", found(ps, buf, sizeof(buf)));
	if (*ps->p == '0') {
		advance(ps);
		if (is_digit(ps))
			return json_error(ps, "a number does not start with 0 (no leading zeros)");
	} else {
		digits(ps);
	}
	if (!at_end(ps) && *ps->p == '.') {
		advance(ps);
		if (!is_digit(ps))
			return json_error(ps, "expected a digit after '.', found %s",
					  found(ps, buf, sizeof(buf)));
		digits(ps);
	}
	if (!at_end(ps) && (*ps->p == 'e' || *ps->p == 'E')) {
		advance(ps);
		if (!at_end(ps) && (*ps->p == '+' || *ps->p == '-'))
			advance(ps);
		if (!is_digit(ps))
			return json_error(ps, "expected a digit in the exponent, found %s",
					  found(ps, buf, sizeof(buf)));
		digits(ps);
	}
	v->type = KV_JSON_NUMBER;
	v->len = (size_t)(ps->p - start);
	v->str = strndup((const char *)start, v->len);
	if (!v->str)
		return -ENOMEM;
	v->num = strtod(v->str, NULL);
	if (isinf(v->num))	/* at most 40 digits shown: the text may be megabytes */
		return json_error_at(ps, v->line, v->column, "number %.40s%s is out of range",
				     v->str, v->len > 40 ? "..." : "");
	return 0;
}

static int literal_parse(struct json_parser *ps, struct kv_json *v)
{
	static const struct { const char *word; int type; } lit[] = {
		{ "true", KV_JSON_TRUE }, { "false", KV_JSON_FALSE }, { "null", KV_JSON_NULL },
	};
	size_t i, n, left = (size_t)(ps->end - ps->p);

	for (i = 0; i < sizeof(lit) / sizeof(lit[0]); i++) {
		n = strlen(lit[i].word);
		if (left >= n && !memcmp(ps->p, lit[i].word, n)) {
			while (n--)
				advance(ps);
			v->type = lit[i].type;
			return 0;
		}
	}
	if ((left >= 3 && !memcmp(ps->p, "NaN", 3)) || (left >= 8 && !memcmp(ps->p, "Infinity", 8)))
		return json_error(ps, "NaN and Infinity are not JSON numbers");
	return json_error(ps, "expected a value, found '%c' (the words of JSON are true, false and null)",
			  *ps->p);
}

/* ---- arrays and objects ------------------------------------------------- */

static int value_parse(struct json_parser *ps, struct kv_json **link, unsigned int depth);

static int member_cmp(const void *a, const void *b)
{
	const struct kv_json *x = *(const struct kv_json *const *)a;
	const struct kv_json *y = *(const struct kv_json *const *)b;
	int c = strcmp(x->key, y->key);

	if (c)
		return c;
	return x->line != y->line ? (x->line < y->line ? -1 : 1) :
	       (x->column < y->column ? -1 : x->column > y->column);
}

/* Refuse a member name that appears twice in object @obj. */
static int members_unique(struct json_parser *ps, const struct kv_json *obj)
{
	struct kv_json **m, *c;
	size_t i = 0;
	int ret = 0;

	if (obj->nr < 2)
		return 0;
	m = malloc(obj->nr * sizeof(*m));
	if (!m)
		return -ENOMEM;
	for (c = obj->child; c; c = c->next)
		m[i++] = c;
	qsort(m, obj->nr, sizeof(*m), member_cmp);
	for (i = 1; i < obj->nr && !ret; i++) {
		if (!strcmp(m[i - 1]->key, m[i]->key))
			ret = json_error_at(ps, m[i]->line, m[i]->column,
					    "member \"%s\" appears twice in an object (first at %u:%u)",
					    m[i]->key, m[i - 1]->line, m[i - 1]->column);
	}
	free(m);
	return ret;
}

/* One "name": value of an object, at its name, linked at *@link. */
static int member_parse(struct json_parser *ps, struct kv_json **link, unsigned int depth)
{
	unsigned int line = ps->line, col = ps->col;
	char buf[16], *key;
	size_t len;
	int ret;

	ret = string_parse(ps, &key, &len);
	if (ret)
		return ret;
	skip_blanks(ps);
	if (at_end(ps) || *ps->p != ':') {
		ret = json_error(ps, "expected ':' after the member name \"%s\", found %s", key,
				 found(ps, buf, sizeof(buf)));
		free(key);
		return ret;
	}
	advance(ps);
	ret = value_parse(ps, link, depth);
	if (*link) {
		(*link)->key = key;
		(*link)->line = line;
		(*link)->column = col;
	} else {
		free(key);
	}
	return ret;
}

/*
 * The elements of an array or the members of an object @v, at its opening
 * bracket; @close is ']' or '}'.
 */
static int container_parse(struct json_parser *ps, struct kv_json *v, char close,
			   unsigned int depth)
{
	const char *what = close == '}' ? "a member" : "an element";
	struct kv_json **link = &v->child;
	bool comma = false;
	char buf[16];
	int ret;

	if (depth >= KV_JSON_DEPTH_MAX)
		return json_error(ps, "nested deeper than %d levels", KV_JSON_DEPTH_MAX);
	advance(ps);
	for (;;) {
		skip_blanks(ps);
		if (!at_end(ps) && *ps->p == close && !comma)
			break;
		if (!at_end(ps) && *ps->p == close)
			return json_error(ps, "a comma before '%c' (no trailing commas in JSON)",
					  close);
		if (close == '}' && (at_end(ps) || *ps->p != '"'))
			return json_error(ps, "expected a member name (a string in double quotes)%s, found %s",
					  comma ? "" : " or '}'", found(ps, buf, sizeof(buf)));
		ret = close == '}' ? member_parse(ps, link, depth + 1) :
				     value_parse(ps, link, depth + 1);
		if (ret)
			return ret;
		v->nr++;
		link = &(*link)->next;
		skip_blanks(ps);
		if (at_end(ps) || (*ps->p != ',' && *ps->p != close))
			return json_error(ps, "expected ',' or '%c' after %s, found %s (the %s opened at %u:%u)",
					  close, what, found(ps, buf, sizeof(buf)),
					  close == '}' ? "object" : "array", v->line, v->column);
		comma = *ps->p == ',';
		if (!comma)
			break;
		advance(ps);
	}
	advance(ps);	/* the closing bracket */
	return close == '}' ? members_unique(ps, v) : 0;
}

/* Any value, after blanks, allocated and linked at *@link. */
static int value_parse(struct json_parser *ps, struct kv_json **link, unsigned int depth)
{
	struct kv_json *v;
	char buf[16];
	int ret = 0;

	skip_blanks(ps);
	if (at_end(ps))
		return json_error(ps, "expected a value, found the end of the text");
	v = value_new(ps, link, &ret);
	if (!v)
		return ret;
	switch (*ps->p) {
	case '{':
		v->type = KV_JSON_OBJECT;
		return container_parse(ps, v, '}', depth);
	case '[':
		v->type = KV_JSON_ARRAY;
		return container_parse(ps, v, ']', depth);
	case '"':
		v->type = KV_JSON_STRING;
		return string_parse(ps, &v->str, &v->len);
	case '-':
	case '0' ... '9':
		return number_parse(ps, v);
	case 'a' ... 'z':
	case 'A' ... 'Z':
		return literal_parse(ps, v);
	case '\'':
		return json_error(ps, "strings are written in double quotes");
	case '/':
		return json_error(ps, "comments are not allowed in JSON");
	case '+':
	case '.':
		return json_error(ps, "a number starts with '-' or a digit");
	default:
		return json_error(ps, "expected a value, found %s", found(ps, buf, sizeof(buf)));
	}
}

/**
 * kv_json_parse() - parse a JSON text into a tree
 * @text:   the text; need not be NUL-terminated
 * @len:    its bytes, at most KV_JSON_SIZE_MAX
 * @out:    receives the root value; free it with kv_json_free()
 * @err:    on error, "LINE:COLUMN: message"; "" on success; may be NULL
 * @errlen: size of @err; KV_JSON_ERR_MAX is enough
 *
 * The text is one value, with blanks (space, tab, CR, LF) around it and
 * nothing else; see json.h for what else is refused.
 *
 * Return: 0; -EINVAL for a text that is not strict JSON; -EFBIG for one
 * longer than KV_JSON_SIZE_MAX; -ENOMEM.
 */
int kv_json_parse(const char *text, size_t len, struct kv_json **out, char *err,
		  size_t errlen)
{
	struct json_parser ps = {
		.p = (const unsigned char *)text, .end = (const unsigned char *)text + len,
		.line = 1, .col = 1, .err = err, .errlen = errlen,
	};
	struct kv_json *root = NULL;
	char buf[16];
	int ret;

	if (err && errlen)
		err[0] = '\0';
	if (len > KV_JSON_SIZE_MAX) {
		if (err && errlen)
			snprintf(err, errlen, "longer than %u bytes", KV_JSON_SIZE_MAX);
		return -EFBIG;
	}
	if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
		ps.p += 3;	/* a byte order mark */
	ret = value_parse(&ps, &root, 0);
	if (!ret) {
		skip_blanks(&ps);
		if (!at_end(&ps))
			ret = json_error(&ps, "%s after the value (a text holds one value)",
					 found(&ps, buf, sizeof(buf)));
	}
	if (ret) {
		kv_json_free(root);
		return ret;
	}
	*out = root;
	return 0;
}

/**
 * kv_json_load_file() - read a JSON file and parse it
 * @path:   the file
 * @out:    receives the root value; free it with kv_json_free()
 * @err:    on error, "PATH:LINE:COLUMN: message" for the contents, or
 *          "PATH: reason" when it cannot be read; may be NULL
 * @errlen: size of @err; KV_JSON_ERR_MAX plus the path's length is enough
 *
 * Return: 0; -errno when the file cannot be opened or read (-ENOENT,
 * -EACCES, -EISDIR...); -EFBIG when it is larger than KV_JSON_SIZE_MAX;
 * -EINVAL for contents that are not strict JSON; -ENOMEM.
 */
int kv_json_load_file(const char *path, struct kv_json **out, char *err, size_t errlen)
{
	char msg[KV_JSON_ERR_MAX], *text;
	size_t len = 0;
	ssize_t n;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		goto out_err;
	}
	text = malloc(KV_JSON_SIZE_MAX + 1);
	if (!text) {
		ret = -ENOMEM;
		goto out_close;
	}
	do {
		n = read(fd, text + len, KV_JSON_SIZE_MAX + 1 - len);
		if (n > 0)
			len += (size_t)n;
	} while ((n > 0 && len <= KV_JSON_SIZE_MAX) || (n < 0 && errno == EINTR));
	ret = n < 0 ? -errno : len > KV_JSON_SIZE_MAX ? -EFBIG : 0;
	if (!ret)
		ret = kv_json_parse(text, len, out, msg, sizeof(msg));
	free(text);
	close(fd);
	if (ret == -EINVAL) {
		if (err && errlen)
			snprintf(err, errlen, "%s:%s", path, msg);
		return ret;
	}
	if (!ret) {
		if (err && errlen)
			err[0] = '\0';
		return 0;
	}
	goto out_err;

out_close:
	close(fd);
out_err:
	if (err && errlen) {
		if (ret == -EFBIG)
			snprintf(err, errlen, "%s: larger than %u bytes", path, KV_JSON_SIZE_MAX);
		else
			snprintf(err, errlen, "%s: %s", path, strerror(-ret));
	}
	return ret;
}

/**
 * kv_json_free() - free a value and everything in it
 * @v: a root from kv_json_parse() or kv_json_load_file(); NULL is allowed
 */
void kv_json_free(struct kv_json *v)
{
	struct kv_json *next;

	for (; v; v = next) {
		next = v->next;
		kv_json_free(v->child);
		free(v->key);
		free(v->str);
		free(v);
	}
}

/**
 * kv_json_get() - a member of an object by name
 * @obj: a value; NULL is allowed
 * @key: the member name
 *
 * Return: the member's value, or NULL when @obj is not an object or has
 * no such member.
 */
const struct kv_json *kv_json_get(const struct kv_json *obj, const char *key)
{
	const struct kv_json *m;

	if (!obj || obj->type != KV_JSON_OBJECT)
		return NULL;
	for (m = obj->child; m; m = m->next) {
		if (!strcmp(m->key, key))
			return m;
	}
	return NULL;
}

/**
 * kv_json_uint() - a number as an unsigned integer
 * @v:   a value
 * @max: the largest value accepted
 * @out: receives it
 *
 * Only a number written as an integer (digits alone: no sign, fraction or
 * exponent) is an unsigned integer here: 32, not 32.0 or 3.2e1.
 *
 * Return: 0; -EINVAL when @v is not such a number; -ERANGE when it is
 * larger than @max.
 */
int kv_json_uint(const struct kv_json *v, uint64_t max, uint64_t *out)
{
	uint64_t n = 0, d;
	size_t i;

	if (!v || v->type != KV_JSON_NUMBER || !v->len)
		return -EINVAL;
	for (i = 0; i < v->len; i++) {
		if (v->str[i] < '0' || v->str[i] > '9')
			return -EINVAL;
	}
	for (i = 0; i < v->len; i++) {
		d = (uint64_t)(v->str[i] - '0');
		if (d > max || n > (max - d) / 10)
			return -ERANGE;
		n = n * 10 + d;
	}
	*out = n;
	return 0;
}

/**
 * kv_json_type_name() - a value type, for messages
 * @type: KV_JSON_*
 *
 * Return: "null", "false", "true", "a number", "a string", "an array",
 * "an object", or "?".
 */
const char *kv_json_type_name(int type)
{
	static const char *const names[] = {
		[KV_JSON_NULL] = "null", [KV_JSON_FALSE] = "false", [KV_JSON_TRUE] = "true",
		[KV_JSON_NUMBER] = "a number", [KV_JSON_STRING] = "a string",
		[KV_JSON_ARRAY] = "an array", [KV_JSON_OBJECT] = "an object",
	};

	return type >= 0 && type <= KV_JSON_OBJECT ? names[type] : "?";
}
