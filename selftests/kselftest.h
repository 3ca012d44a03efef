/* SPDX-License-Identifier: MIT */
/*
 * kselftest.h - TAP 13 output helpers for kvmem selftests
 *
 * A test program prints a header, a plan, one result line per test and a
 * totals line, and exits with one of the KSFT_* codes:
 *
 *	ksft_print_header();
 *	ksft_set_plan(2);
 *	ksft_test_result_pass("alloc_free\n");
 *	ksft_test_result_skip("no device tier\n");
 *	ksft_finished();
 *
 * which prints
 *
 *	TAP version 13
 *	1..2
 *	ok 1 alloc_free
 *	ok 2 # SKIP no device tier
 *	# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:1 error:0
 *
 * As in the kernel's helpers, the format strings of the result functions
 * carry their own trailing newline. Everything here is static inline, so the
 * header can be included by any number of programs without a library.
 */
#ifndef _KSELFTEST_H
#define _KSELFTEST_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Exit codes, the same values as the kernel's selftests use. */
#define KSFT_PASS	0
#define KSFT_FAIL	1
#define KSFT_XFAIL	2
#define KSFT_XPASS	3
#define KSFT_SKIP	4

#define __ksft_printf(a, b)	__attribute__((format(printf, a, b)))

/**
 * struct ksft_count - results seen so far by this process
 * @pass:  tests that passed
 * @fail:  tests that failed
 * @xfail: tests that failed as expected
 * @xpass: tests that passed but were expected to fail
 * @skip:  tests that were skipped
 * @error: tests that could not be run
 */
struct ksft_count {
	unsigned int pass;
	unsigned int fail;
	unsigned int xfail;
	unsigned int xpass;
	unsigned int skip;
	unsigned int error;
};

static struct ksft_count ksft_cnt;
static unsigned int ksft_plan;

/**
 * ksft_test_num() - number of the next result line
 *
 * Return: the 1-based TAP number the next ksft_test_result_*() call uses.
 */
static inline unsigned int ksft_test_num(void)
{
	return ksft_cnt.pass + ksft_cnt.fail + ksft_cnt.xfail +
	       ksft_cnt.xpass + ksft_cnt.skip + ksft_cnt.error + 1;
}

/**
 * ksft_print_header() - print the TAP version line
 */
static inline void ksft_print_header(void)
{
	printf("TAP version 13\n");
	fflush(stdout);
}

/**
 * ksft_set_plan() - announce how many results will follow
 * @plan: number of tests
 */
static inline void ksft_set_plan(unsigned int plan)
{
	ksft_plan = plan;
	printf("1..%u\n", plan);
	fflush(stdout);
}

/**
 * ksft_print_msg() - print a TAP diagnostic line
 * @msg: printf format, usually ending in a newline
 *
 * The text is prefixed with "# ", so a TAP parser treats it as a comment.
 */
static inline __ksft_printf(1, 2) void ksft_print_msg(const char *msg, ...)
{
	va_list ap;

	va_start(ap, msg);
	printf("# ");
	vprintf(msg, ap);
	va_end(ap);
	fflush(stdout);
}

/**
 * ksft_print_cnts() - print the "# Totals:" line
 */
static inline void ksft_print_cnts(void)
{
	if (ksft_plan && ksft_plan != ksft_test_num() - 1)
		printf("# Planned tests != run tests (%u != %u)\n",
		       ksft_plan, ksft_test_num() - 1);
	printf("# Totals: pass:%u fail:%u xfail:%u xpass:%u skip:%u error:%u\n",
	       ksft_cnt.pass, ksft_cnt.fail, ksft_cnt.xfail,
	       ksft_cnt.xpass, ksft_cnt.skip, ksft_cnt.error);
	fflush(stdout);
}

static inline void __ksft_result(const char *prefix, const char *msg, va_list ap)
{
	printf("%s %u ", prefix, ksft_test_num());
	vprintf(msg, ap);
	fflush(stdout);
}

/**
 * ksft_test_result_pass() - report a passing test
 * @msg: printf format naming the test, ending in a newline
 */
static inline __ksft_printf(1, 2) void ksft_test_result_pass(const char *msg, ...)
{
	va_list ap;

	va_start(ap, msg);
	__ksft_result("ok", msg, ap);
	va_end(ap);
	ksft_cnt.pass++;
}

/**
 * ksft_test_result_fail() - report a failing test
 * @msg: printf format naming the test, ending in a newline
 */
static inline __ksft_printf(1, 2) void ksft_test_result_fail(const char *msg, ...)
{
	va_list ap;

	va_start(ap, msg);
	__ksft_result("not ok", msg, ap);
	va_end(ap);
	ksft_cnt.fail++;
}

/**
 * ksft_test_result_skip() - report a skipped test
 * @msg: printf format giving the reason, ending in a newline
 *
 * Prints "ok N # SKIP reason".
 */
static inline __ksft_printf(1, 2) void ksft_test_result_skip(const char *msg, ...)
{
	va_list ap;

	printf("ok %u # SKIP ", ksft_test_num());
	va_start(ap, msg);
	vprintf(msg, ap);
	va_end(ap);
	fflush(stdout);
	ksft_cnt.skip++;
}

/**
 * ksft_test_result_code() - report a named test from its exit code
 * @code: KSFT_PASS, KSFT_SKIP, KSFT_XFAIL, KSFT_XPASS; anything else fails
 * @name: test name
 * @msg:  printf format for a comment after the name (no newline), or NULL
 *
 * Prints "ok N name", "ok N name # SKIP msg", "not ok N name # msg" and so
 * on, with the newline added here. This is what the harness uses.
 */
static inline __ksft_printf(3, 4) void
ksft_test_result_code(int code, const char *name, const char *msg, ...)
{
	const char *status = "ok", *directive = " # ";
	unsigned int *cnt;
	va_list ap;

	switch (code) {
	case KSFT_PASS:
		cnt = &ksft_cnt.pass;
		break;
	case KSFT_SKIP:
		cnt = &ksft_cnt.skip;
		directive = " # SKIP ";
		break;
	case KSFT_XFAIL:
		cnt = &ksft_cnt.xfail;
		directive = " # XFAIL ";
		break;
	case KSFT_XPASS:
		cnt = &ksft_cnt.xpass;
		status = "not ok";
		directive = " # XPASS ";
		break;
	default:
		cnt = &ksft_cnt.fail;
		status = "not ok";
		break;
	}
	printf("%s %u %s", status, ksft_test_num(), name);
	if (msg && msg[0]) {
		printf("%s", directive);
		va_start(ap, msg);
		vprintf(msg, ap);
		va_end(ap);
	} else if (code == KSFT_SKIP) {
		printf(" # SKIP");
	}
	printf("\n");
	fflush(stdout);
	(*cnt)++;
}

/**
 * ksft_exit_pass() - print the totals and exit with KSFT_PASS
 */
static inline __attribute__((noreturn)) void ksft_exit_pass(void)
{
	ksft_print_cnts();
	exit(KSFT_PASS);
}

/**
 * ksft_exit_fail() - print the totals and exit with KSFT_FAIL
 */
static inline __attribute__((noreturn)) void ksft_exit_fail(void)
{
	ksft_print_cnts();
	exit(KSFT_FAIL);
}

/**
 * ksft_exit_skip() - print the totals and exit with KSFT_SKIP
 *
 * For a program that finds it cannot test anything at all.
 */
static inline __attribute__((noreturn)) void ksft_exit_skip(void)
{
	ksft_print_cnts();
	exit(KSFT_SKIP);
}

/**
 * ksft_finished() - exit with the code that sums up the results
 *
 * KSFT_FAIL if any test failed, passed unexpectedly or errored, or if the
 * number of results differs from the plan; KSFT_SKIP if every test was
 * skipped; KSFT_PASS otherwise.
 */
static inline __attribute__((noreturn)) void ksft_finished(void)
{
	unsigned int ran = ksft_test_num() - 1;

	if (ksft_cnt.fail || ksft_cnt.xpass || ksft_cnt.error ||
	    (ksft_plan && ksft_plan != ran))
		ksft_exit_fail();
	if (ran && ksft_cnt.skip == ran)
		ksft_exit_skip();
	ksft_exit_pass();
}

#endif /* _KSELFTEST_H */
