// SPDX-License-Identifier: MIT
/*
 * harness_test.c - the selftest harness, tested on itself
 *
 * The tests named xfail_* misbehave on purpose: they fail, crash, hang and
 * skip. They are hidden unless KSFT_HARNESS_SELFTEST_CHILD=1 is set; the
 * other tests run copies of this program with that variable and -t, and
 * check the copies' TAP output and exit code line by line. A broken harness
 * therefore fails here.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../kselftest_harness.h"

#define CHILD_ENV	"KSFT_HARNESS_SELFTEST_CHILD"

/* ---- tests that misbehave, run only in a child ------------------------- */

TEST(xfail_pass)
{
	EXPECT_EQ(1, 1);
}

TEST(xfail_expect_continues)
{
	EXPECT_EQ(1, 2);
	TH_LOG("still running");
	TH_LOG("two\nnot ok 99 fake");
	EXPECT_STREQ("abc", "abd");
}

TEST(xfail_assert_stops)
{
	ASSERT_EQ(3, 4);
	TH_LOG("not reached");
}

TEST(xfail_values)
{
	const char *none = NULL;
	double x = 2.0;

	EXPECT_EQ(-5, 3);
	EXPECT_EQ((unsigned long)-1, 0);
	EXPECT_NULL((void *)0x1000);
	EXPECT_GT(-1, 0u);
	EXPECT_EQ(1.5, x);
	EXPECT_STREQ("abc", none);
	EXPECT_TRUE(none);
}

FIXTURE(xfail_fix) {
	int value;
	char *buf;
};

FIXTURE_SETUP(xfail_fix)
{
	self->value = 42;
	self->buf = strdup("fixture");
	ASSERT_NE_NULL(self->buf);
	TH_LOG("setup");
}

FIXTURE_TEARDOWN(xfail_fix)
{
	TH_LOG("teardown value=%d buf=%s", self->value, self->buf);
	free(self->buf);
}

TEST_F(xfail_fix, assert_runs_teardown)
{
	TH_LOG("body value=%d", self->value);
	ASSERT_EQ(0, self->value);
	TH_LOG("not reached");
}

FIXTURE(xfail_skipfix) {
	int unused;
};

FIXTURE_SETUP(xfail_skipfix)
{
	SKIP(return, "no device tier");
}

FIXTURE_TEARDOWN(xfail_skipfix)
{
	TH_LOG("teardown after skip");
}

TEST_F(xfail_skipfix, body)
{
	TH_LOG("body not reached");
}

TEST(xfail_skip)
{
	SKIP(return, "not today: %d", 7);
	TH_LOG("not reached");
}

TEST(xfail_crash)
{
	/* Sanitizers catch SIGSEGV; take the default action, a core dump. */
	signal(SIGSEGV, SIG_DFL);
	raise(SIGSEGV);
}

TEST_TIMEOUT(xfail_timeout, 1)
{
	for (;;)
		pause();
}

TEST(xfail_hang)
{
	for (;;)
		pause();
}

TEST_SIGNAL(xfail_no_signal, SIGABRT)
{
}

TEST(xfail_expect_then_skip)
{
	EXPECT_EQ(1, 0);
	SKIP(return, "too late");
}

/* ---- running a copy of this program ------------------------------------ */

struct child_run {
	int status;	/* wait status */
	char *out;	/* stdout and stderr, NUL-terminated */
	size_t len;
};

static void exec_self(const char *ksft_timeout, const char *const *args)
{
	const char *argv[16] = { "harness_test" };
	int i;

	for (i = 0; args[i] && i < 14; i++)
		argv[i + 1] = args[i];
	setenv(CHILD_ENV, "1", 1);
	if (ksft_timeout)
		setenv("KSFT_TIMEOUT", ksft_timeout, 1);
	else
		unsetenv("KSFT_TIMEOUT");
	execv("/proc/self/exe", (char **)argv);
	_exit(127);
}

static void read_all(struct __test_metadata *_metadata, int fd, struct child_run *run)
{
	size_t cap = 4096;
	ssize_t n;

	run->out = malloc(cap);
	ASSERT_NE_NULL(run->out);
	run->len = 0;
	for (;;) {
		if (cap - run->len < 1024) {
			cap *= 2;
			run->out = realloc(run->out, cap);
			ASSERT_NE_NULL(run->out);
		}
		n = read(fd, run->out + run->len, cap - run->len - 1);
		if (n <= 0)
			break;
		run->len += n;
	}
	run->out[run->len] = '\0';
}

/* Run this program with @args (NULL-terminated) and collect what it says. */
static void run_self(struct __test_metadata *_metadata, struct child_run *run,
		     const char *ksft_timeout, const char *const *args)
{
	int fds[2];
	pid_t pid;

	ASSERT_EQ(0, pipe(fds));
	fflush(NULL);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		dup2(fds[1], STDERR_FILENO);
		close(fds[0]);
		close(fds[1]);
		exec_self(ksft_timeout, args);
	}
	close(fds[1]);
	read_all(_metadata, fds[0], run);
	close(fds[0]);
	ASSERT_EQ(pid, waitpid(pid, &run->status, 0));
}

static int exit_code(const struct child_run *run)
{
	return WIFEXITED(run->status) ? WEXITSTATUS(run->status) : -1;
}

/* Where @line starts as a whole line of @out, or NULL. */
static const char *find_line(const char *out, const char *line)
{
	size_t len = strlen(line);
	const char *p;

	for (p = out; (p = strstr(p, line)); p++)
		if ((p == out || p[-1] == '\n') && (p[len] == '\n' || !p[len]))
			return p;
	return NULL;
}

/*
 * The result lines ("ok ...", "not ok ...") of @out, joined with '|', into
 * @buf of @size bytes.
 */
static void result_lines(const char *out, char *buf, size_t size)
{
	const char *p = out, *eol;
	size_t used = 0, len;

	buf[0] = '\0';
	while (*p) {
		eol = strchr(p, '\n');
		if (!eol)
			eol = p + strlen(p);
		len = eol - p;
		if ((!strncmp(p, "ok ", 3) || !strncmp(p, "not ok ", 7)) &&
		    used + len + 2 < size) {
			if (used)
				buf[used++] = '|';
			memcpy(buf + used, p, len);
			used += len;
			buf[used] = '\0';
		}
		p = *eol ? eol + 1 : eol;
	}
}

static void check_run(struct __test_metadata *_metadata, const struct child_run *run,
		      int code, const char *results, const char *totals)
{
	char got[2048];

	result_lines(run->out, got, sizeof(got));
	EXPECT_TRUE(!strncmp(run->out, "TAP version 13\n", 15));
	EXPECT_EQ(code, exit_code(run));
	EXPECT_STREQ(results, got);
	EXPECT_NE_NULL(find_line(run->out, totals));
}

static void free_run(struct __test_metadata *_metadata, struct child_run *run)
{
	if (!__atomic_load_n(&_metadata->passed, __ATOMIC_RELAXED))
		TH_LOG("child output:\n%s", run->out);
	free(run->out);
	run->out = NULL;
}

#define EXPECT_LINE(run, line)		EXPECT_NE_NULL(find_line((run)->out, line))
#define EXPECT_NO_TEXT(run, text)	EXPECT_NULL(strstr((run)->out, text))

/* ---- the tests --------------------------------------------------------- */

enum colour { RED, GREEN };

TEST(compare_values)
{
	int arr[2] = { 1, 2 };
	unsigned char uc = 200;
	enum colour c = GREEN;
	char *p = NULL;

	ASSERT_EQ(1, 1);
	ASSERT_NE(1, 2);
	ASSERT_LT(-1, 0u);
	ASSERT_LE(2u, 2);
	ASSERT_GT(UINT64_MAX, -1);
	ASSERT_GE(INT64_MIN + 1, INT64_MIN);
	ASSERT_EQ(200, uc);
	ASSERT_EQ(GREEN, c);
	ASSERT_EQ(&arr[0], arr);
	ASSERT_LT(&arr[0], &arr[1]);
	ASSERT_NULL(p);
	ASSERT_NE_NULL(arr);
	ASSERT_TRUE(true);
	ASSERT_FALSE(0.0);
	ASSERT_LT(0.5, 1);
	ASSERT_STREQ("kv", "kv");
	ASSERT_STRNE("kv", NULL);
	EXPECT_EQ(-1LL, -1);
	EXPECT_NE((size_t)-1, -1);
}

FIXTURE(fix) {
	int value;
	char *buf;
};

FIXTURE_SETUP(fix)
{
	self->value = 42;
	self->buf = strdup("fixture");
	ASSERT_NE_NULL(self->buf);
}

/* If this did not run, LeakSanitizer would fail the test in ASan builds. */
FIXTURE_TEARDOWN(fix)
{
	free(self->buf);
}

TEST_F(fix, sees_setup)
{
	ASSERT_EQ(42, self->value);
	ASSERT_STREQ("fixture", self->buf);
}

TEST_SIGNAL(dies_of_expected_signal, SIGABRT)
{
	abort();
}

TEST(expect_records_and_continues)
{
	static const char *const args[] = { "-t", "xfail_expect_continues", NULL };
	struct child_run run;

	run_self(_metadata, &run, NULL, args);
	check_run(_metadata, &run, KSFT_FAIL, "not ok 1 xfail_expect_continues",
		  "# Totals: pass:0 fail:1 xfail:0 xpass:0 skip:0 error:0");
	EXPECT_NE_NULL(strstr(run.out, ":xfail_expect_continues: Expected 1 (1) == 2 (2)\n"));
	EXPECT_NE_NULL(strstr(run.out, ":xfail_expect_continues: still running\n"));
	EXPECT_NE_NULL(strstr(run.out, ":xfail_expect_continues: two\n# not ok 99 fake\n"));
	EXPECT_NE_NULL(strstr(run.out, "Expected \"abc\" (\"abc\") == \"abd\" (\"abd\")\n"));
	free_run(_metadata, &run);
}

TEST(assert_stops_and_tears_down)
{
	static const char *const args[] = {
		"-t", "xfail_fix.assert_runs_teardown", "-t", "xfail_assert_stops", NULL
	};
	const char *setup, *body, *teardown;
	struct child_run run;

	run_self(_metadata, &run, NULL, args);
	check_run(_metadata, &run, KSFT_FAIL,
		  "not ok 1 xfail_assert_stops|not ok 2 xfail_fix.assert_runs_teardown",
		  "# Totals: pass:0 fail:2 xfail:0 xpass:0 skip:0 error:0");
	EXPECT_LINE(&run, "1..2");
	EXPECT_NE_NULL(strstr(run.out, "Expected 3 (3) == 4 (4)\n"));
	EXPECT_NE_NULL(strstr(run.out, "Expected 0 (0) == self->value (42)\n"));
	EXPECT_NO_TEXT(&run, "not reached");
	setup = strstr(run.out, ":xfail_fix.assert_runs_teardown: setup\n");
	body = strstr(run.out, ":xfail_fix.assert_runs_teardown: body value=42\n");
	teardown = strstr(run.out, ": teardown value=42 buf=fixture\n");
	ASSERT_NE_NULL(setup);
	ASSERT_NE_NULL(body);
	ASSERT_NE_NULL(teardown);
	EXPECT_LT(setup, body);
	EXPECT_LT(body, teardown);
	free_run(_metadata, &run);
}

TEST(values_are_printed)
{
	static const char *const args[] = { "-t", "xfail_values", NULL };
	static const char *const want[] = {
		"Expected -5 (-5) == 3 (3)",
		"Expected (unsigned long)-1 (18446744073709551615 (0xffffffffffffffff)) == 0 (0)",
		"Expected NULL (NULL) == (void *)0x1000 (0x1000)",
		"Expected -1 (-1) > 0u (0)",
		"Expected 1.5 (1.5) == x (2)",
		"Expected \"abc\" (\"abc\") == none (NULL)",
		"Expected 0 (0) != none (NULL)",
	};
	struct child_run run;
	char line[160];
	size_t i;

	run_self(_metadata, &run, NULL, args);
	check_run(_metadata, &run, KSFT_FAIL, "not ok 1 xfail_values",
		  "# Totals: pass:0 fail:1 xfail:0 xpass:0 skip:0 error:0");
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		snprintf(line, sizeof(line), ":xfail_values: %s\n", want[i]);
		EXPECT_NE_NULL(strstr(run.out, line));
	}
	free_run(_metadata, &run);
}

TEST(skips_are_reported)
{
	static const char *const args[] = { "-t", "xfail_skip", "-t", "xfail_skipfix.body", NULL };
	struct child_run run;

	run_self(_metadata, &run, NULL, args);
	check_run(_metadata, &run, KSFT_SKIP,
		  "ok 1 xfail_skipfix.body # SKIP no device tier|"
		  "ok 2 xfail_skip # SKIP not today: 7",
		  "# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:2 error:0");
	EXPECT_NE_NULL(strstr(run.out, ":xfail_skipfix.body: teardown after skip\n"));
	EXPECT_NO_TEXT(&run, "not reached");
	free_run(_metadata, &run);
}

TEST(run_survives_crash_and_timeout)
{
	static const char *const args[] = {
		"-t", "xfail_expect_then_skip", "-t", "xfail_no_signal", "-t", "xfail_timeout",
		"-t", "xfail_crash", "-t", "xfail_skip", "-t", "xfail_pass", NULL
	};
	struct child_run run;

	run_self(_metadata, &run, NULL, args);
	check_run(_metadata, &run, KSFT_FAIL,
		  "ok 1 xfail_pass|"
		  "ok 2 xfail_skip # SKIP not today: 7|"
		  "not ok 3 xfail_crash # crashed by signal 11|"
		  "not ok 4 xfail_timeout # timeout after 1s|"
		  "not ok 5 xfail_no_signal # exit=0, expected signal 6|"
		  "not ok 6 xfail_expect_then_skip",
		  "# Totals: pass:1 fail:4 xfail:0 xpass:0 skip:1 error:0");
	EXPECT_LINE(&run, "1..6");
	free_run(_metadata, &run);
}

TEST(ksft_timeout_sets_default)
{
	static const char *const args[] = { "-t", "xfail_hang", NULL };
	struct child_run run;

	run_self(_metadata, &run, "1", args);
	check_run(_metadata, &run, KSFT_FAIL, "not ok 1 xfail_hang # timeout after 1s",
		  "# Totals: pass:0 fail:1 xfail:0 xpass:0 skip:0 error:0");
	free_run(_metadata, &run);
}

TEST(list_and_select)
{
	static const char *const list[] = { "-l", NULL };
	static const char *const unknown[] = { "-t", "no_such_test", NULL };
	static const char *const one[] = { "-t", "xfail_pass", NULL };
	struct child_run run;

	run_self(_metadata, &run, NULL, list);
	EXPECT_EQ(KSFT_PASS, exit_code(&run));
	EXPECT_STREQ("xfail_pass\nxfail_expect_continues\nxfail_assert_stops\n"
		     "xfail_values\nxfail_fix.assert_runs_teardown\nxfail_skipfix.body\n"
		     "xfail_skip\nxfail_crash\nxfail_timeout\nxfail_hang\nxfail_no_signal\n"
		     "xfail_expect_then_skip\ncompare_values\nfix.sees_setup\n"
		     "dies_of_expected_signal\nexpect_records_and_continues\n"
		     "assert_stops_and_tears_down\nvalues_are_printed\nskips_are_reported\n"
		     "run_survives_crash_and_timeout\nksft_timeout_sets_default\n"
		     "list_and_select\n", run.out);
	free_run(_metadata, &run);

	run_self(_metadata, &run, NULL, unknown);
	EXPECT_EQ(KSFT_FAIL, exit_code(&run));
	EXPECT_NE_NULL(strstr(run.out, "no test named 'no_such_test'"));
	EXPECT_NO_TEXT(&run, "TAP version");
	free_run(_metadata, &run);

	run_self(_metadata, &run, NULL, one);
	check_run(_metadata, &run, KSFT_PASS, "ok 1 xfail_pass",
		  "# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0");
	EXPECT_LINE(&run, "1..1");
	free_run(_metadata, &run);
}

/* Drop the xfail_ tests from the list, unless this is a child run. */
static void hide_xfail_tests(void)
{
	struct __test_metadata **link = &__th_registry.head;

	while (*link) {
		if (!strncmp((*link)->name, "xfail_", 6)) {
			*link = (*link)->next;
			__th_registry.count--;
		} else {
			link = &(*link)->next;
		}
	}
	__th_registry.tail = link;
}

int main(int argc, char **argv)
{
	const char *child = getenv(CHILD_ENV);

	if (!child || strcmp(child, "1"))
		hide_xfail_tests();
	return test_harness_run(argc, argv);
}
