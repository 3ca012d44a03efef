// SPDX-License-Identifier: MIT
/*
 * lib/json.c: the strict JSON reader. Every kind of value and its tree;
 * string escapes (surrogate pairs included) and raw UTF-8; numbers as
 * doubles and as exact unsigned integers; malformed text of every kind,
 * each refused with its LINE:COLUMN (columns in characters); the limits
 * (nesting, size, values); files (missing, a directory, too large).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "lib/json.h"

static int parse(const char *text, struct kv_json **out, char *err)
{
	return kv_json_parse(text, strlen(text), out, err, KV_JSON_ERR_MAX);
}

TEST(every_kind_of_value)
{
	static const char text[] =
		"{\n"
		"  \"n\": null, \"t\": true, \"f\": false,\n"
		"  \"i\": 32, \"neg\": -0.5e-2, \"s\": \"bfloat16\",\n"
		"  \"a\": [1, [2, {}], \"x\", []],\n"
		"  \"o\": {\"k\": {\"deep\": 7}}\n"
		"}\n";
	const struct kv_json *v, *a;
	char err[KV_JSON_ERR_MAX] = "junk";
	struct kv_json *root;
	uint64_t n;

	ASSERT_EQ(0, parse(text, &root, err));
	EXPECT_STREQ("", err);
	ASSERT_EQ(KV_JSON_OBJECT, root->type);
	EXPECT_EQ(8, root->nr);
	EXPECT_EQ(1, root->line);
	EXPECT_EQ(1, root->column);
	EXPECT_EQ(KV_JSON_NULL, kv_json_get(root, "n")->type);
	EXPECT_EQ(KV_JSON_TRUE, kv_json_get(root, "t")->type);
	EXPECT_EQ(KV_JSON_FALSE, kv_json_get(root, "f")->type);
	v = kv_json_get(root, "i");
	ASSERT_NE_NULL(v);
	EXPECT_EQ(KV_JSON_NUMBER, v->type);
	EXPECT_STREQ("32", v->str);
	EXPECT_TRUE(v->num == 32.0);
	EXPECT_EQ(0, kv_json_uint(v, 1024, &n));
	EXPECT_EQ(32, n);
	/* A member's position is its name's. */
	EXPECT_EQ(3, v->line);
	EXPECT_EQ(3, v->column);
	v = kv_json_get(root, "neg");
	EXPECT_TRUE(v->num == -0.005);
	EXPECT_STREQ("-0.5e-2", v->str);
	EXPECT_EQ(-EINVAL, kv_json_uint(v, UINT64_MAX, &n));
	v = kv_json_get(root, "s");
	EXPECT_EQ(KV_JSON_STRING, v->type);
	EXPECT_STREQ("bfloat16", v->str);
	EXPECT_EQ(8, v->len);
	a = kv_json_get(root, "a");
	ASSERT_EQ(KV_JSON_ARRAY, a->type);
	EXPECT_EQ(4, a->nr);
	EXPECT_NULL(a->child->key);
	EXPECT_EQ(KV_JSON_ARRAY, a->child->next->type);
	EXPECT_EQ(KV_JSON_OBJECT, a->child->next->child->next->type);
	EXPECT_EQ(0, a->child->next->child->next->nr);
	EXPECT_STREQ("x", a->child->next->next->str);
	EXPECT_EQ(0, a->child->next->next->next->nr);
	v = kv_json_get(kv_json_get(kv_json_get(root, "o"), "k"), "deep");
	ASSERT_NE_NULL(v);
	EXPECT_STREQ("7", v->str);
	/* Lookups that find nothing. */
	EXPECT_NULL(kv_json_get(root, "missing"));
	EXPECT_NULL(kv_json_get(a, "n"));
	EXPECT_NULL(kv_json_get(NULL, "n"));
	EXPECT_EQ(-EINVAL, kv_json_uint(kv_json_get(root, "s"), 10, &n));
	EXPECT_EQ(-EINVAL, kv_json_uint(NULL, 10, &n));
	kv_json_free(root);
	kv_json_free(NULL);
}

TEST(scalars_at_the_top_and_blanks)
{
	char err[KV_JSON_ERR_MAX];
	struct kv_json *root;

	ASSERT_EQ(0, parse(" \t\r\n 42 \n", &root, err));
	EXPECT_EQ(KV_JSON_NUMBER, root->type);
	EXPECT_EQ(2, root->line);
	EXPECT_EQ(2, root->column);
	kv_json_free(root);
	ASSERT_EQ(0, parse("\"\"", &root, err));
	EXPECT_EQ(KV_JSON_STRING, root->type);
	EXPECT_EQ(0, root->len);
	kv_json_free(root);
	/* A UTF-8 byte order mark is skipped. */
	ASSERT_EQ(0, parse("\xef\xbb\xbf{\"a\": null}", &root, err));
	EXPECT_EQ(KV_JSON_NULL, kv_json_get(root, "a")->type);
	kv_json_free(root);
}

TEST(string_escapes_and_utf8)
{
	static const char text[] =
		"[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\", \"\\u00e9\\u20AC\", \"\\ud83d\\ude00\","
		" \"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\", \"\\u0041b\"]";
	char err[KV_JSON_ERR_MAX];
	const struct kv_json *v;
	struct kv_json *root;

	ASSERT_EQ(0, parse(text, &root, err));
	v = root->child;
	EXPECT_STREQ("\"\\/\b\f\n\r\t", v->str);
	EXPECT_EQ(8, v->len);
	v = v->next;
	EXPECT_STREQ("\xc3\xa9\xe2\x82\xac", v->str);
	v = v->next;
	EXPECT_STREQ("\xf0\x9f\x98\x80", v->str);
	v = v->next;
	EXPECT_STREQ("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", v->str);
	v = v->next;
	EXPECT_STREQ("Ab", v->str);
	kv_json_free(root);
}

TEST(unsigned_integers)
{
	static const struct {
		const char *text;
		uint64_t max, want;
		int ret;
	} cases[] = {
		{ "0", 10, 0, 0 },
		{ "1024", 1024, 1024, 0 },
		{ "1025", 1024, 0, -ERANGE },
		{ "9", 5, 0, -ERANGE },
		{ "18446744073709551615", UINT64_MAX, UINT64_MAX, 0 },
		{ "18446744073709551616", UINT64_MAX, 0, -ERANGE },
		{ "99999999999999999999999", UINT64_MAX, 0, -ERANGE },
		{ "32.0", 100, 0, -EINVAL },
		{ "3.2e1", 100, 0, -EINVAL },
		{ "-1", 100, 0, -EINVAL },
		{ "1e2", 1000, 0, -EINVAL },
	};
	char err[KV_JSON_ERR_MAX];
	struct kv_json *root;
	uint64_t n;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ASSERT_EQ(0, parse(cases[i].text, &root, err));
		n = 12345;
		EXPECT_EQ(cases[i].ret, kv_json_uint(root, cases[i].max, &n));
		EXPECT_EQ(cases[i].ret ? 12345 : cases[i].want, n);
		if (cases[i].ret != (cases[i].ret ? kv_json_uint(root, cases[i].max, &n) : 0))
			TH_LOG("%s", cases[i].text);
		kv_json_free(root);
	}
}

/* Malformed text: the error and where it points. */
static const struct {
	const char *text;
	const char *err;
} bad[] = {
	{ "", "1:1: expected a value, found the end of the text" },
	{ "   \n  ", "2:3: expected a value, found the end of the text" },
	{ "{", "1:2: expected a member name (a string in double quotes) or '}', found the end of the text" },
	{ "{\"a\":1,}", "1:8: a comma before '}' (no trailing commas in JSON)" },
	{ "[1,2,]", "1:6: a comma before ']' (no trailing commas in JSON)" },
	{ "[,1]", "1:2: expected a value, found ','" },
	{ "{\"a\":1,,\"b\":2}", "1:8: expected a member name (a string in double quotes), found ','" },
	{ "[1 2]", "1:4: expected ',' or ']' after an element, found '2' (the array opened at 1:1)" },
	{ "[1,\n[2,\n3", "3:2: expected ',' or ']' after an element, found the end of the text (the array opened at 2:1)" },
	{ "{\"a\" 1}", "1:6: expected ':' after the member name \"a\", found '1'" },
	{ "{\n  \"a\": 1,\n  \"b\" 2\n}", "3:7: expected ':' after the member name \"b\", found '2'" },
	{ "{\"a\": 1 \"b\": 2}", "1:9: expected ',' or '}' after a member, found '\"' (the object opened at 1:1)" },
	{ "{'a': 1}", "1:2: expected a member name (a string in double quotes) or '}', found '''" },
	{ "'a'", "1:1: strings are written in double quotes" },
	{ "{a: 1}", "1:2: expected a member name" },
	{ "// comment\n{}", "1:1: comments are not allowed in JSON" },
	{ "{} /* c */", "1:4: '/' after the value (a text holds one value)" },
	{ "{\"a\": NaN}", "1:7: NaN and Infinity are not JSON numbers" },
	{ "[Infinity]", "1:2: NaN and Infinity are not JSON numbers" },
	{ "[-Infinity]", "1:3: expected a digit, found 'I'" },
	{ "[True]", "1:2: expected a value, found 'T' (the words of JSON are true, false and null)" },
	{ "[nul]", "1:2: expected a value, found 'n'" },
	{ "[01]", "1:3: a number does not start with 0 (no leading zeros)" },
	{ "[-01]", "1:4: a number does not start with 0" },
	{ "[1.]", "1:4: expected a digit after '.', found ']'" },
	{ "[1.e5]", "1:4: expected a digit after '.', found 'e'" },
	{ "[1e]", "1:4: expected a digit in the exponent, found ']'" },
	{ "[1e+]", "1:5: expected a digit in the exponent, found ']'" },
	{ "[-]", "1:3: expected a digit, found ']'" },
	{ "[+1]", "1:2: a number starts with '-' or a digit" },
	{ "[.5]", "1:2: a number starts with '-' or a digit" },
	{ "[0x10]", "1:3: expected ',' or ']' after an element, found 'x'" },
	{ "[1e999]", "1:2: number 1e999 is out of range" },
	{ "[" "12345678901234567890123456789012345678901234567890e999]",
	  "1:2: number 1234567890123456789012345678901234567890... is out of range" },
	{ "\"abc", "1:1: unterminated string" },
	{ "[\"abc\\\"]", "1:2: unterminated string" },
	{ "\"a\\x\"", "1:3: invalid escape: backslash then 'x'" },
	{ "\"a\\'\"", "1:3: invalid escape: backslash then '''" },
	{ "\"\\u12G4\"", "1:6: \\u needs four hex digits" },
	{ "\"\\u12\"", "1:6: \\u needs four hex digits" },
	{ "\"\\ud800\"", "1:2: a lone UTF-16 surrogate \\uD800" },
	{ "\"\\udc00x\"", "1:2: a lone UTF-16 surrogate \\uDC00" },
	{ "\"\\ud800\\u0041\"", "1:2: \\uD800 is not followed by a low surrogate" },
	{ "\"\\u0000\"", "1:2: \\u0000 (NUL) is not allowed in strings" },
	{ "\"a\tb\"", "1:3: control character 0x09 in a string (write it as an escape)" },
	{ "\"a\nb\"", "1:3: control character 0x0a in a string" },
	{ "\"\xc3\x28\"", "1:2: invalid UTF-8 (byte 0xc3) in a string" },
	{ "\"\xc0\xaf\"", "1:2: invalid UTF-8 (byte 0xc0) in a string" },
	{ "\"\xe0\x80\xaf\"", "1:2: invalid UTF-8 (byte 0xe0) in a string" },
	{ "\"\xed\xa0\x80\"", "1:2: invalid UTF-8 (byte 0xed) in a string" },
	{ "\"\xf4\x90\x80\x80\"", "1:2: invalid UTF-8 (byte 0xf4) in a string" },
	{ "\"\xe2\x82\"", "1:2: invalid UTF-8 (byte 0xe2) in a string" },
	{ "\"\x80\"", "1:2: invalid UTF-8 (byte 0x80) in a string" },
	{ "[\"\xc3\xa9\", x]", "1:7: expected a value, found 'x'" },
	{ "\xc3\xa9", "1:1: expected a value, found byte 0xc3" },
	{ "{\"a\": 1, \"b\": 2, \"a\": 3}",
	  "1:18: member \"a\" appears twice in an object (first at 1:2)" },
	{ "{\"x\": {\"a\": 1}, \"y\": {\"a\": 1, \"a\": {}}}",
	  "1:31: member \"a\" appears twice in an object (first at 1:23)" },
	{ "{} x", "1:4: 'x' after the value (a text holds one value)" },
	{ "[1]\n\n  ]", "3:3: ']' after the value (a text holds one value)" },
	{ "1 2", "1:3: '2' after the value" },
};

TEST(malformed_text_names_line_and_column)
{
	char err[KV_JSON_ERR_MAX];
	struct kv_json *root;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		root = (struct kv_json *)0x1;
		EXPECT_EQ(-EINVAL, parse(bad[i].text, &root, err));
		EXPECT_TRUE(root == (struct kv_json *)0x1);
		if (strncmp(err, bad[i].err, strlen(bad[i].err))) {
			TH_LOG("text %zu: '%s'\n#   expected \"%s\"\n#        got \"%s\"", i,
			       bad[i].text, bad[i].err, err);
			EXPECT_TRUE(0);
		}
	}
}

TEST(nul_bytes_and_no_error_buffer)
{
	static const char text[] = "[1,\0]";
	char err[KV_JSON_ERR_MAX];
	struct kv_json *root;

	EXPECT_EQ(-EINVAL, kv_json_parse(text, sizeof(text) - 1, &root, err, sizeof(err)));
	EXPECT_STREQ("1:4: expected a value, found byte 0x00", err);
	EXPECT_EQ(-EINVAL, kv_json_parse(text, sizeof(text) - 1, &root, NULL, 0));
	/* Only @len bytes are read: the same text cut before the NUL is one too short. */
	EXPECT_EQ(-EINVAL, kv_json_parse("[1]junk", 3 + 1, &root, err, sizeof(err)));
	EXPECT_EQ(0, kv_json_parse("[1]junk", 3, &root, err, sizeof(err)));
	kv_json_free(root);
	/* A short error buffer holds the start of the message. */
	EXPECT_EQ(-EINVAL, kv_json_parse("[1,]", 4, &root, err, 8));
	EXPECT_STREQ("1:4: a ", err);
}

TEST(nesting_limit)
{
	char text[2 * KV_JSON_DEPTH_MAX + 8], err[KV_JSON_ERR_MAX];
	struct kv_json *root;
	int i;

	for (i = 0; i < KV_JSON_DEPTH_MAX; i++) {
		text[i] = '[';
		text[KV_JSON_DEPTH_MAX + i] = ']';
	}
	text[2 * KV_JSON_DEPTH_MAX] = '\0';
	ASSERT_EQ(0, parse(text, &root, err));
	kv_json_free(root);
	/* One more level: the same arrays in an object. */
	snprintf(text, sizeof(text), "{\"a\":");
	for (i = 0; i < KV_JSON_DEPTH_MAX; i++) {
		text[5 + i] = '[';
		text[5 + KV_JSON_DEPTH_MAX + i] = ']';
	}
	strcpy(text + 5 + 2 * KV_JSON_DEPTH_MAX, "}");
	EXPECT_EQ(-EINVAL, parse(text, &root, err));
	EXPECT_STREQ("1:69: nested deeper than 64 levels", err);
}

TEST(size_and_value_limits)
{
	char err[KV_JSON_ERR_MAX], *text;
	struct kv_json *root;
	size_t i, n = 1u << 18;

	text = malloc(KV_JSON_SIZE_MAX + 1);
	ASSERT_NE_NULL(text);
	memset(text, ' ', KV_JSON_SIZE_MAX + 1);
	text[0] = '0';
	EXPECT_EQ(0, kv_json_parse(text, KV_JSON_SIZE_MAX, &root, err, sizeof(err)));
	kv_json_free(root);
	EXPECT_EQ(-EFBIG, kv_json_parse(text, KV_JSON_SIZE_MAX + 1, &root, err, sizeof(err)));
	EXPECT_STREQ("longer than 4194304 bytes", err);
	/* 2^18 values in all: an array of 2^18 - 1 zeros; one more is too many. */
	text[0] = '[';
	for (i = 0; i < n - 1; i++)
		memcpy(text + 1 + 2 * i, "0,", 2);
	text[2 * (n - 1)] = ']';
	EXPECT_EQ(0, kv_json_parse(text, 2 * (n - 1) + 1, &root, err, sizeof(err)));
	if (root)
		EXPECT_EQ(n - 1, root->nr);
	kv_json_free(root);
	text[2 * (n - 1)] = ',';
	memcpy(text + 1 + 2 * (n - 1), "0]", 2);
	EXPECT_EQ(-EINVAL, kv_json_parse(text, 2 * n + 1, &root, err, sizeof(err)));
	EXPECT_STREQ("1:524288: more than 262144 values", err);
	free(text);
}

TEST(files)
{
	char path[] = "/tmp/kvmem-json-XXXXXX", dir[] = "/tmp/kvmem-json-dir-XXXXXX";
	char err[KV_JSON_ERR_MAX + 64], want[KV_JSON_ERR_MAX + 64];
	struct kv_json *root;
	FILE *f;
	int fd;

	fd = mkstemp(path);
	ASSERT_LE(0, fd);
	f = fdopen(fd, "w");
	fputs("{\n  \"num_hidden_layers\": 32,\n  \"x\": [1, 2,]\n}\n", f);
	fclose(f);
	EXPECT_EQ(-EINVAL, kv_json_load_file(path, &root, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s:3:14: a comma before ']' (no trailing commas in JSON)",
		 path);
	EXPECT_STREQ(want, err);
	f = fopen(path, "w");
	fputs("{\"num_hidden_layers\": 32}", f);
	fclose(f);
	ASSERT_EQ(0, kv_json_load_file(path, &root, err, sizeof(err)));
	EXPECT_STREQ("", err);
	EXPECT_STREQ("32", kv_json_get(root, "num_hidden_layers")->str);
	kv_json_free(root);
	/* One byte over the limit. */
	ASSERT_EQ(0, truncate(path, KV_JSON_SIZE_MAX + 1));
	EXPECT_EQ(-EFBIG, kv_json_load_file(path, &root, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: larger than 4194304 bytes", path);
	EXPECT_STREQ(want, err);
	unlink(path);
	EXPECT_EQ(-ENOENT, kv_json_load_file(path, &root, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	EXPECT_STREQ(want, err);
	ASSERT_NE_NULL(mkdtemp(dir));
	EXPECT_EQ(-EISDIR, kv_json_load_file(dir, &root, err, sizeof(err)));
	rmdir(dir);
}

TEST_HARNESS_MAIN
