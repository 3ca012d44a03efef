// SPDX-License-Identifier: MIT
/*
 * lib/config.c: the `key = value' parser (comments, blanks, quotes, line
 * numbers, every syntax error with its FILE:LINE, files that cannot be
 * read, callbacks that fail) and the value parsers (numbers, sizes, modes,
 * booleans, choices: ranges, overflow, trailing text).
 */
#include <stdint.h>
#include <sys/stat.h>

#include "kselftest_harness.h"
#include "config_test.h"

#define MAX_PAIRS	16

/* What the callback saw. */
struct pairs {
	int n;
	char key[MAX_PAIRS][64];
	char value[MAX_PAIRS][KV_CONFIG_LINE_MAX + 1];
	unsigned int line[MAX_PAIRS];
	int fail_at;		/* pair number to fail on, from 1; 0: never */
	int fail_error;
	int fail_message;	/* fail with a message of its own */
};

static int pairs_collect(const struct kv_config_pos *pos, const char *key,
			 const char *value, void *arg)
{
	struct pairs *p = arg;

	if (p->n == MAX_PAIRS)
		return -ENOSPC;
	snprintf(p->key[p->n], sizeof(p->key[0]), "%s", key);
	snprintf(p->value[p->n], sizeof(p->value[0]), "%s", value);
	p->line[p->n] = pos->line;
	p->n++;
	if (p->n != p->fail_at)
		return 0;
	if (p->fail_message)
		return kv_config_error(pos, p->fail_error, "%s wants '%s'", key, "more");
	return p->fail_error;
}

TEST(comments_blanks_and_values)
{
	static const char text[] =
		"# a comment\n"
		"\n"
		"   \t\n"
		"  # an indented comment = with an equals sign\n"
		"a = 1\n"
		"\tpool.llama.layers\t=\t32\t# trailing comment\n"
		"b=two words  here   \n"
		"c = x#not-a-comment\n"
		"d = \"  quoted # kept  \"   # comment\n"
		"e = f = g\n"
		"crlf = yes\r\n"
		"h =#hash\n"
		"last = no newline at the end";
	struct pairs pairs = { 0 }, *p = &pairs;
	char err[KV_CONFIG_ERR_MAX] = "junk";

	ASSERT_EQ(0, kv_config_parse_string("t", text, pairs_collect, p, err, sizeof(err)));
	EXPECT_STREQ("", err);
	ASSERT_EQ(9, p->n);
	EXPECT_STREQ("a", p->key[0]);
	EXPECT_STREQ("1", p->value[0]);
	EXPECT_EQ(5, p->line[0]);
	EXPECT_STREQ("pool.llama.layers", p->key[1]);
	EXPECT_STREQ("32", p->value[1]);
	EXPECT_EQ(6, p->line[1]);
	EXPECT_STREQ("two words  here", p->value[2]);
	EXPECT_STREQ("x#not-a-comment", p->value[3]);
	EXPECT_STREQ("  quoted # kept  ", p->value[4]);
	EXPECT_STREQ("e", p->key[5]);
	EXPECT_STREQ("f = g", p->value[5]);
	EXPECT_STREQ("yes", p->value[6]);
	EXPECT_STREQ("#hash", p->value[7]);
	EXPECT_STREQ("no newline at the end", p->value[8]);
	EXPECT_EQ(13, p->line[8]);
}

TEST(empty_input)
{
	struct pairs pairs = { 0 }, *p = &pairs;
	char err[KV_CONFIG_ERR_MAX];

	EXPECT_EQ(0, kv_config_parse_string("t", "", pairs_collect, p, err, sizeof(err)));
	EXPECT_EQ(0, kv_config_parse_string("t", "\n\n# x\n", pairs_collect, p,
					    err, sizeof(err)));
	EXPECT_EQ(0, p->n);
}

/* Each bad line, on line 3 after two good ones, and what the message says. */
static const struct {
	const char *line;
	const char *what;
} syntax_errors[] = {
	{ "just some words", "expected 'key = value'" },
	{ "= value", "missing key" },
	{ "   = value", "missing key" },
	{ "key =", "missing value for 'key'" },
	{ "key =    # only a comment", "missing value for 'key'" },
	{ "key = \"\"", "missing value for 'key'" },
	{ "Key = 1", "invalid character 'K' in key 'Key'" },
	{ "a-b = 1", "invalid character '-' in key 'a-b'" },
	{ "a b = 1", "invalid character ' ' in key 'a b'" },
	{ "a..b = 1", "empty segment in key 'a..b'" },
	{ ".a = 1", "empty segment in key '.a'" },
	{ "a. = 1", "empty segment in key 'a.'" },
	{ "k = \"open", "unterminated quoted value for 'k'" },
	{ "k = \"a\" b", "unexpected text after the quoted value of 'k'" },
	{ "k = a\001b", "control character in the value of 'k'" },
	{ "k\xc3\xa9 = 1", "invalid byte 0xc3 in key" },
};

TEST(syntax_errors_name_file_and_line)
{
	char path[TMP_PATH_MAX], text[256], err[KV_CONFIG_ERR_MAX];
	struct pairs pairs = { 0 }, *p = &pairs;
	size_t i;
	int ret;

	for (i = 0; i < sizeof(syntax_errors) / sizeof(syntax_errors[0]); i++) {
		snprintf(text, sizeof(text), "# header\nok = 1\n%s\nnever = 1\n",
			 syntax_errors[i].line);
		ASSERT_EQ(0, tmp_write(path, text));
		p->n = 0;
		ret = kv_config_parse_file(path, pairs_collect, p, err, sizeof(err));
		unlink(path);
		EXPECT_EQ(-EINVAL, ret);
		EXPECT_TRUE(err_is(err, path, 3, syntax_errors[i].what));
		/* The good line before was seen, nothing after. */
		EXPECT_EQ(1, p->n);
	}
}

TEST(line_length_limit)
{
	static char text[2 * KV_CONFIG_LINE_MAX + 64];
	struct pairs pairs = { 0 }, *p = &pairs;
	char err[KV_CONFIG_ERR_MAX];
	size_t n;

	/* A line of exactly KV_CONFIG_LINE_MAX bytes is fine. */
	n = (size_t)snprintf(text, sizeof(text), "a = 1\nk = ");
	memset(text + n, 'v', KV_CONFIG_LINE_MAX - 4);
	strcpy(text + n + KV_CONFIG_LINE_MAX - 4, "\nz = 2\n");
	ASSERT_EQ(0, kv_config_parse_string("big", text, pairs_collect, p, err, sizeof(err)));
	ASSERT_EQ(3, p->n);
	EXPECT_EQ(KV_CONFIG_LINE_MAX - 4, strlen(p->value[1]));
	EXPECT_EQ(3, p->line[2]);

	/* One byte more is an error on that line. */
	n = (size_t)snprintf(text, sizeof(text), "a = 1\nk = ");
	memset(text + n, 'v', KV_CONFIG_LINE_MAX - 3);
	strcpy(text + n + KV_CONFIG_LINE_MAX - 3, "\nz = 2\n");
	p->n = 0;
	EXPECT_EQ(-EINVAL, kv_config_parse_string("big", text, pairs_collect, p,
						  err, sizeof(err)));
	EXPECT_TRUE(err_is(err, "big", 2, "line longer than 4096 bytes"));
	EXPECT_EQ(1, p->n);
}

TEST(nul_byte)
{
	static const char text[] = "a = 1\nb = x\0y\n";
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX];
	struct pairs pairs = { 0 }, *p = &pairs;
	FILE *f;
	int ret;

	ASSERT_EQ(0, tmp_write(path, ""));
	f = fopen(path, "w");
	ASSERT_NE_NULL(f);
	ASSERT_EQ(1, fwrite(text, sizeof(text) - 1, 1, f));
	fclose(f);
	ret = kv_config_parse_file(path, pairs_collect, p, err, sizeof(err));
	unlink(path);
	EXPECT_EQ(-EINVAL, ret);
	EXPECT_TRUE(err_is(err, path, 2, "NUL byte"));
}

TEST(unreadable_files)
{
	char err[KV_CONFIG_ERR_MAX], dir[] = "/tmp/kvmem-config-dir-XXXXXX";
	struct pairs pairs = { 0 }, *p = &pairs;

	EXPECT_EQ(-ENOENT, kv_config_parse_file("/nonexistent/kvmemd.conf",
						pairs_collect, p, err, sizeof(err)));
	EXPECT_STREQ("/nonexistent/kvmemd.conf: No such file or directory", err);
	ASSERT_NE_NULL(mkdtemp(dir));
	EXPECT_EQ(-EISDIR, kv_config_parse_file(dir, pairs_collect, p, err, sizeof(err)));
	rmdir(dir);
	EXPECT_TRUE(err_is(err, dir, 0, "Is a directory"));
	/* A NULL error buffer is allowed. */
	EXPECT_EQ(-ENOENT, kv_config_parse_file("/nonexistent", pairs_collect, p, NULL, 0));
}

TEST(callback_errors_stop_the_parse)
{
	static const char text[] = "a = 1\n\nb = 2\nc = 3\n";
	struct pairs pairs = { 0 }, *p = &pairs;
	char err[KV_CONFIG_ERR_MAX];

	/* No message of its own: the parser names the key and the error. */
	p->fail_at = 2;
	p->fail_error = -ERANGE;
	EXPECT_EQ(-ERANGE, kv_config_parse_string("f", text, pairs_collect, p,
						  err, sizeof(err)));
	EXPECT_STREQ("f:3: b: Numerical result out of range", err);
	EXPECT_EQ(2, p->n);

	/* Its own message is kept. */
	memset(p, 0, sizeof(*p));
	p->fail_at = 1;
	p->fail_error = -EINVAL;
	p->fail_message = 1;
	EXPECT_EQ(-EINVAL, kv_config_parse_string("f", text, pairs_collect, p,
						  err, sizeof(err)));
	EXPECT_STREQ("f:1: a wants 'more'", err);
	EXPECT_EQ(1, p->n);
}

TEST(small_error_buffer)
{
	struct pairs pairs = { 0 }, *p = &pairs;
	char err[12];

	memset(err, 'x', sizeof(err));
	EXPECT_EQ(-EINVAL, kv_config_parse_string("a-long-file-name", "oops\n",
						  pairs_collect, p, err, sizeof(err)));
	EXPECT_EQ(sizeof(err) - 1, strlen(err));
	EXPECT_EQ(-EINVAL, kv_config_parse_string("f", "oops\n", pairs_collect, p,
						  err, sizeof(err)));
	EXPECT_STREQ("f:1: expect", err);
}

TEST(key_valid)
{
	EXPECT_TRUE(kv_config_key_valid("a"));
	EXPECT_TRUE(kv_config_key_valid("vm.min_free_kbytes"));
	EXPECT_TRUE(kv_config_key_valid("pool.x9_.layers"));
	EXPECT_FALSE(kv_config_key_valid(""));
	EXPECT_FALSE(kv_config_key_valid("a."));
	EXPECT_FALSE(kv_config_key_valid("A"));
	EXPECT_FALSE(kv_config_key_valid("a.b-c"));
}

TEST(parse_uint)
{
	uint64_t v;

	EXPECT_EQ(0, kv_parse_uint("0", 0, 10, &v));
	EXPECT_EQ(0, v);
	EXPECT_EQ(0, kv_parse_uint("4096", 0, UINT64_MAX, &v));
	EXPECT_EQ(4096, v);
	EXPECT_EQ(0, kv_parse_uint("010", 0, UINT64_MAX, &v));
	EXPECT_EQ(10, v);
	EXPECT_EQ(0, kv_parse_uint("0x1F", 0, UINT64_MAX, &v));
	EXPECT_EQ(31, v);
	EXPECT_EQ(0, kv_parse_uint("0Xff", 0, UINT64_MAX, &v));
	EXPECT_EQ(255, v);
	EXPECT_EQ(0, kv_parse_uint("18446744073709551615", 0, UINT64_MAX, &v));
	EXPECT_EQ(UINT64_MAX, v);
	EXPECT_EQ(0, kv_parse_uint("0xffffffffffffffff", 0, UINT64_MAX, &v));
	EXPECT_EQ(UINT64_MAX, v);

	v = 7;
	EXPECT_EQ(-ERANGE, kv_parse_uint("18446744073709551616", 0, UINT64_MAX, &v));
	EXPECT_EQ(-ERANGE, kv_parse_uint("99999999999999999999999", 0, UINT64_MAX, &v));
	EXPECT_EQ(-ERANGE, kv_parse_uint("0x10000000000000000", 0, UINT64_MAX, &v));
	EXPECT_EQ(-ERANGE, kv_parse_uint("0", 1, 256, &v));
	EXPECT_EQ(-ERANGE, kv_parse_uint("257", 1, 256, &v));
	EXPECT_EQ(0, kv_parse_uint("256", 1, 256, &v));
	EXPECT_EQ(256, v);

	v = 7;
	EXPECT_EQ(-EINVAL, kv_parse_uint("", 0, 10, &v));
	EXPECT_EQ(-EINVAL, kv_parse_uint("-1", 0, 10, &v));
	EXPECT_EQ(-EINVAL, kv_parse_uint("+1", 0, 10, &v));
	EXPECT_EQ(-EINVAL, kv_parse_uint(" 1", 0, 10, &v));
	EXPECT_EQ(-EINVAL, kv_parse_uint("1 ", 0, 10, &v));
	EXPECT_EQ(-EINVAL, kv_parse_uint("1x", 0, 10, &v));
	EXPECT_EQ(-EINVAL, kv_parse_uint("0x", 0, 10, &v));
	EXPECT_EQ(-EINVAL, kv_parse_uint("0xg", 0, 10, &v));
	EXPECT_EQ(-EINVAL, kv_parse_uint("1.0", 0, 10, &v));
	EXPECT_EQ(-EINVAL, kv_parse_uint("1e3", 0, 10000, &v));
	EXPECT_EQ(-EINVAL, kv_parse_uint("99999999999999999999999x", 0, 10, &v));
	EXPECT_EQ(7, v);
}

TEST(parse_size)
{
	uint64_t v;

	EXPECT_EQ(0, kv_parse_size("0", 0, UINT64_MAX, &v));
	EXPECT_EQ(0, v);
	EXPECT_EQ(0, kv_parse_size("4096", 0, UINT64_MAX, &v));
	EXPECT_EQ(4096, v);
	EXPECT_EQ(0, kv_parse_size("1k", 0, UINT64_MAX, &v));
	EXPECT_EQ(1024, v);
	EXPECT_EQ(0, kv_parse_size("64M", 0, UINT64_MAX, &v));
	EXPECT_EQ(64ull << 20, v);
	EXPECT_EQ(0, kv_parse_size("3g", 0, UINT64_MAX, &v));
	EXPECT_EQ(3ull << 30, v);
	EXPECT_EQ(0, kv_parse_size("2T", 0, UINT64_MAX, &v));
	EXPECT_EQ(2ull << 40, v);
	EXPECT_EQ(0, kv_parse_size("0x10K", 0, UINT64_MAX, &v));
	EXPECT_EQ(16384, v);
	EXPECT_EQ(0, kv_parse_size("16777215T", 0, UINT64_MAX, &v));
	EXPECT_EQ(16777215ull << 40, v);

	v = 7;
	EXPECT_EQ(-ERANGE, kv_parse_size("16777216T", 0, UINT64_MAX, &v));
	EXPECT_EQ(-ERANGE, kv_parse_size("99999999999T", 0, UINT64_MAX, &v));
	EXPECT_EQ(-ERANGE, kv_parse_size("17179869184G", 0, UINT64_MAX, &v));
	EXPECT_EQ(-ERANGE, kv_parse_size("99999999999999999999", 0, UINT64_MAX, &v));
	EXPECT_EQ(-ERANGE, kv_parse_size("99999999999999999999K", 0, UINT64_MAX, &v));
	EXPECT_EQ(-ERANGE, kv_parse_size("1M", 0, 1023 * 1024, &v));
	EXPECT_EQ(-ERANGE, kv_parse_size("1K", 2048, UINT64_MAX, &v));
	EXPECT_EQ(-EINVAL, kv_parse_size("", 0, UINT64_MAX, &v));
	EXPECT_EQ(-EINVAL, kv_parse_size("M", 0, UINT64_MAX, &v));
	EXPECT_EQ(-EINVAL, kv_parse_size("1P", 0, UINT64_MAX, &v));
	EXPECT_EQ(-EINVAL, kv_parse_size("1KB", 0, UINT64_MAX, &v));
	EXPECT_EQ(-EINVAL, kv_parse_size("1 M", 0, UINT64_MAX, &v));
	EXPECT_EQ(-EINVAL, kv_parse_size("1.5G", 0, UINT64_MAX, &v));
	EXPECT_EQ(-EINVAL, kv_parse_size("-1M", 0, UINT64_MAX, &v));
	EXPECT_EQ(-EINVAL, kv_parse_size("99999999999999999999Q", 0, UINT64_MAX, &v));
	EXPECT_EQ(7, v);
}

TEST(format_size_round_trip)
{
	static const uint64_t sizes[] = {
		0, 1, 1000, 1024, 1536, 64ull << 20, (1ull << 30) + 4096,
		5ull << 40, UINT64_MAX, 16777215ull << 40,
	};
	char buf[32];
	uint64_t v;
	size_t i;

	EXPECT_EQ(0, kv_format_size(64ull << 20, buf, sizeof(buf)));
	EXPECT_STREQ("64M", buf);
	EXPECT_EQ(0, kv_format_size(1536, buf, sizeof(buf)));
	EXPECT_STREQ("1536", buf);
	EXPECT_EQ(0, kv_format_size((1ull << 30) + 4096, buf, sizeof(buf)));
	EXPECT_STREQ("1048580K", buf);
	EXPECT_EQ(0, kv_format_size(1000, buf, sizeof(buf)));
	EXPECT_STREQ("1000", buf);
	EXPECT_EQ(0, kv_format_size(0, buf, sizeof(buf)));
	EXPECT_STREQ("0", buf);
	EXPECT_EQ(-ERANGE, kv_format_size(64ull << 20, buf, 3));
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		ASSERT_EQ(0, kv_format_size(sizes[i], buf, sizeof(buf)));
		ASSERT_EQ(0, kv_parse_size(buf, 0, UINT64_MAX, &v));
		EXPECT_EQ(sizes[i], v);
	}
}

TEST(parse_mode)
{
	unsigned int m;

	EXPECT_EQ(0, kv_parse_mode("0660", &m));
	EXPECT_EQ(0660, m);
	EXPECT_EQ(0, kv_parse_mode("660", &m));
	EXPECT_EQ(0660, m);
	EXPECT_EQ(0, kv_parse_mode("0", &m));
	EXPECT_EQ(0, m);
	EXPECT_EQ(0, kv_parse_mode("07777", &m));
	EXPECT_EQ(07777, m);
	EXPECT_EQ(0, kv_parse_mode("0000000000000000000000000000000640", &m));
	EXPECT_EQ(0640, m);

	m = 1;
	EXPECT_EQ(-ERANGE, kv_parse_mode("10000", &m));
	EXPECT_EQ(-ERANGE, kv_parse_mode("7777777777777777777777777", &m));
	EXPECT_EQ(-EINVAL, kv_parse_mode("", &m));
	EXPECT_EQ(-EINVAL, kv_parse_mode("0668", &m));
	EXPECT_EQ(-EINVAL, kv_parse_mode("0x1ff", &m));
	EXPECT_EQ(-EINVAL, kv_parse_mode("-660", &m));
	EXPECT_EQ(-EINVAL, kv_parse_mode("660 ", &m));
	EXPECT_EQ(-EINVAL, kv_parse_mode("rw-rw----", &m));
	EXPECT_EQ(-EINVAL, kv_parse_mode("7777777777777777777777779", &m));
	EXPECT_EQ(1, m);
}

TEST(parse_bool)
{
	static const char *const yes[] = { "1", "yes", "true", "on", "YES", "True", "ON" };
	static const char *const no[] = { "0", "no", "false", "off", "No", "FALSE", "Off" };
	static const char *const bad[] = { "", "2", "y", "n", "yess", "on ", "enabled", "01" };
	bool b;
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		b = false;
		EXPECT_EQ(0, kv_parse_bool(yes[i], &b));
		EXPECT_TRUE(b);
		EXPECT_EQ(0, kv_parse_bool(no[i], &b));
		EXPECT_FALSE(b);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b = true;
		EXPECT_EQ(-EINVAL, kv_parse_bool(bad[i], &b));
		EXPECT_TRUE(b);
	}
}

TEST(parse_choice)
{
	static const char *const names[] = { "error", "warn", "info", "debug", NULL };
	static const char *const none[] = { NULL };
	unsigned int i = 99;

	EXPECT_EQ(0, kv_parse_choice("error", names, &i));
	EXPECT_EQ(0, i);
	EXPECT_EQ(0, kv_parse_choice("debug", names, &i));
	EXPECT_EQ(3, i);
	EXPECT_EQ(-EINVAL, kv_parse_choice("DEBUG", names, &i));
	EXPECT_EQ(-EINVAL, kv_parse_choice("debu", names, &i));
	EXPECT_EQ(-EINVAL, kv_parse_choice("debugx", names, &i));
	EXPECT_EQ(-EINVAL, kv_parse_choice("", names, &i));
	EXPECT_EQ(-EINVAL, kv_parse_choice("info", none, &i));
	EXPECT_EQ(3, i);
}

TEST_HARNESS_MAIN
