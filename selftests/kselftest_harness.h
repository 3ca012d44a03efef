/* SPDX-License-Identifier: MIT */
/*
 * kselftest_harness.h - test cases, fixtures and assertions for kvmem
 *
 * A test program is a list of tests and one TEST_HARNESS_MAIN:
 *
 *	#include "kselftest_harness.h"
 *
 *	TEST(block_size) {
 *		ASSERT_EQ(4096, kv_block_bytes(16, 256));
 *	}
 *
 *	FIXTURE(pool) {
 *		struct kv_pool *pool;
 *	};
 *
 *	FIXTURE_SETUP(pool) {
 *		self->pool = kv_pool_create(...);
 *		ASSERT_NE_NULL(self->pool);
 *	}
 *
 *	FIXTURE_TEARDOWN(pool) {
 *		kv_pool_destroy(self->pool);
 *	}
 *
 *	TEST_F(pool, alloc_free) {
 *		EXPECT_EQ(0, kv_pool_nr_used(self->pool));
 *	}
 *
 *	TEST_HARNESS_MAIN
 *
 * Tests run in definition order, each in its own fork()ed process, so a
 * crash or a hang is one failed test and the others still run. The output is
 * TAP 13 (see kselftest.h) and the exit code KSFT_PASS, KSFT_FAIL, or
 * KSFT_SKIP when every test was skipped.
 *
 * ASSERT_*() end the test at once (after running the fixture's teardown);
 * EXPECT_*() mark it failed and let it go on. Both print the file, line,
 * both expressions and both values. They, SKIP() and the fixture macros
 * need the `_metadata' pointer that every test body and fixture function
 * has, so a helper that asserts takes `struct __test_metadata *_metadata'.
 *
 * A test ends with exit(), not _exit(), so atexit handlers and, in
 * sanitizer builds, LeakSanitizer run at the end of every test: a test that
 * leaks fails on its own.
 *
 * Options: -l lists the tests, -t NAME runs only NAME (repeatable; a
 * fixture test is named "fixture.test"), -h prints the usage. KSFT_TIMEOUT
 * in the environment replaces the default timeout of 30 seconds; a
 * TEST_TIMEOUT() or TEST_F_TIMEOUT() test keeps its own.
 *
 * The runner needs POSIX and Linux calls (fork, sigtimedwait, prctl): build
 * with -std=gnu11, or with -std=c11 and -D_GNU_SOURCE.
 */
#ifndef _KSELFTEST_HARNESS_H
#define _KSELFTEST_HARNESS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest.h"

#define TH_DEFAULT_TIMEOUT	30	/* seconds */
#define TH_REASON_MAX		256

/* Filled in by a test process, read by the runner once it has exited. */
struct __th_shared {
	char reason[TH_REASON_MAX];	/* SKIP() message */
};

/**
 * struct __test_metadata - one registered test and, in its process, its state
 * @name:        test name, "fixture.test" for TEST_F()
 * @fn:          body, or for TEST_F() the wrapper that runs setup and teardown
 * @termsig:     signal the test must die of (TEST_SIGNAL()), else 0
 * @timeout:     seconds (TEST_TIMEOUT()), else 0 for the default
 * @next:        next test in definition order
 * @passed:      cleared by a failed ASSERT or EXPECT
 * @skip:        set by SKIP()
 * @setup_done:  the fixture setup returned
 * @in_teardown: the fixture teardown has started
 * @self:        the fixture data of a TEST_F()
 * @teardown:    runs the fixture teardown on @self
 * @shared:      page shared with the runner
 */
struct __test_metadata {
	const char *name;
	void (*fn)(struct __test_metadata *);
	int termsig;
	int timeout;
	struct __test_metadata *next;
	int passed;
	int skip;
	bool setup_done;
	bool in_teardown;
	void *self;
	void (*teardown)(struct __test_metadata *, void *);
	struct __th_shared *shared;
};

/* Tests in definition order; see __th_order_probe(). */
static struct {
	struct __test_metadata *head;
	struct __test_metadata **tail;
	unsigned int count;
	bool forward;
} __th_registry = { .tail = &__th_registry.head };

/* The test running in this process, for TH_LOG(). */
static struct __test_metadata *__th_current;

/*
 * Constructors run in definition order with .init_array and in reverse with
 * the older .ctors. This one comes before every test's, so if it runs
 * before any test has registered, the order is forward and tests are
 * appended; otherwise they are prepended. Either way the list ends up in
 * definition order.
 */
static void __attribute__((constructor)) __th_order_probe(void)
{
	if (!__th_registry.count)
		__th_registry.forward = true;
}

static inline void __register_test(struct __test_metadata *t)
{
	if (__th_registry.forward) {
		*__th_registry.tail = t;
		__th_registry.tail = &t->next;
	} else {
		t->next = __th_registry.head;
		__th_registry.head = t;
		if (!t->next)
			__th_registry.tail = &t->next;
	}
	__th_registry.count++;
}

#define __TH_REGISTER(object)						\
	static void __attribute__((constructor)) __th_register_##object(void) \
	{								\
		__register_test(&object);				\
	}

#define __TEST_IMPL(test_name, signo, secs)				\
	static void __th_test_##test_name(struct __test_metadata *_metadata); \
	static struct __test_metadata __th_obj_##test_name = {		\
		.name = #test_name,					\
		.fn = __th_test_##test_name,				\
		.termsig = (signo),					\
		.timeout = (secs),					\
	};								\
	__TH_REGISTER(__th_obj_##test_name)				\
	static void __th_test_##test_name(				\
		struct __test_metadata __attribute__((unused)) *_metadata)

/**
 * TEST() - define a test
 * @test_name: name of the test, a C identifier
 *
 * Followed by the body in braces: TEST(name) { ... }
 */
#define TEST(test_name)			__TEST_IMPL(test_name, 0, 0)

/**
 * TEST_SIGNAL() - define a test that passes only if it dies of @signo
 * @test_name: name of the test
 * @signo:     the signal, e.g. SIGABRT
 */
#define TEST_SIGNAL(test_name, signo)	__TEST_IMPL(test_name, signo, 0)

/**
 * TEST_TIMEOUT() - define a test with its own timeout
 * @test_name: name of the test
 * @secs:      seconds before the test is killed and counted as failed
 */
#define TEST_TIMEOUT(test_name, secs)	__TEST_IMPL(test_name, 0, secs)

/**
 * FIXTURE_DATA() - the type of a fixture's data, as `self' points to it
 * @fixture_name: name of the fixture
 */
#define FIXTURE_DATA(fixture_name)	struct __th_fixture_##fixture_name

/**
 * FIXTURE() - declare the data shared by a fixture's setup, tests and teardown
 * @fixture_name: name of the fixture
 *
 * Followed by the fields: FIXTURE(name) { int fd; };
 * A fixture needs a FIXTURE_SETUP() and a FIXTURE_TEARDOWN().
 */
#define FIXTURE(fixture_name)						\
	FIXTURE_DATA(fixture_name);					\
	static void __th_setup_##fixture_name(struct __test_metadata *,	\
					      FIXTURE_DATA(fixture_name) *); \
	static void __th_teardown_##fixture_name(struct __test_metadata *, \
						 FIXTURE_DATA(fixture_name) *); \
	static void __attribute__((unused))				\
	__th_teardown_any_##fixture_name(struct __test_metadata *m, void *data) \
	{								\
		__th_teardown_##fixture_name(m, data);			\
	}								\
	FIXTURE_DATA(fixture_name)

/**
 * FIXTURE_SETUP() - define the setup of a fixture
 * @fixture_name: name of the fixture
 *
 * The body sees `self', a pointer to the zeroed fixture data, and runs
 * before each TEST_F() of the fixture. If it fails an ASSERT, the test body
 * and the teardown do not run. If it calls SKIP(), the test body does not
 * run but the teardown does.
 */
#define FIXTURE_SETUP(fixture_name)					\
	static void __th_setup_##fixture_name(				\
		struct __test_metadata __attribute__((unused)) *_metadata, \
		FIXTURE_DATA(fixture_name) __attribute__((unused)) *self)

/**
 * FIXTURE_TEARDOWN() - define the teardown of a fixture
 * @fixture_name: name of the fixture
 *
 * Runs after each TEST_F() of the fixture whose setup returned, also when
 * the test failed an ASSERT; fields the setup did not reach are still zero.
 */
#define FIXTURE_TEARDOWN(fixture_name)					\
	static void __th_teardown_##fixture_name(			\
		struct __test_metadata __attribute__((unused)) *_metadata, \
		FIXTURE_DATA(fixture_name) __attribute__((unused)) *self)

#define __TEST_F_IMPL(fixture_name, test_name, signo, secs)		\
	static void __th_body_##fixture_name##_##test_name(		\
		struct __test_metadata *, FIXTURE_DATA(fixture_name) *); \
	static void __th_wrap_##fixture_name##_##test_name(		\
		struct __test_metadata *_metadata)			\
	{								\
		FIXTURE_DATA(fixture_name) self;			\
									\
		memset(&self, 0, sizeof(self));				\
		_metadata->self = &self;				\
		_metadata->teardown = __th_teardown_any_##fixture_name; \
		__th_setup_##fixture_name(_metadata, &self);		\
		_metadata->setup_done = true;				\
		if (__th_still_running(_metadata))			\
			__th_body_##fixture_name##_##test_name(_metadata, &self); \
		__th_run_teardown(_metadata);				\
	}								\
	static struct __test_metadata __th_obj_##fixture_name##_##test_name = { \
		.name = #fixture_name "." #test_name,			\
		.fn = __th_wrap_##fixture_name##_##test_name,		\
		.termsig = (signo),					\
		.timeout = (secs),					\
	};								\
	__TH_REGISTER(__th_obj_##fixture_name##_##test_name)		\
	static void __th_body_##fixture_name##_##test_name(		\
		struct __test_metadata __attribute__((unused)) *_metadata, \
		FIXTURE_DATA(fixture_name) __attribute__((unused)) *self)

/**
 * TEST_F() - define a test that uses a fixture
 * @fixture_name: name of the fixture
 * @test_name:    name of the test; the full name is "fixture_name.test_name"
 *
 * The body sees `self', set up by FIXTURE_SETUP().
 */
#define TEST_F(fixture_name, test_name)					\
	__TEST_F_IMPL(fixture_name, test_name, 0, 0)

/**
 * TEST_F_SIGNAL() - TEST_F() that passes only if it dies of @signo
 * @fixture_name: name of the fixture
 * @test_name:    name of the test
 * @signo:        the signal
 */
#define TEST_F_SIGNAL(fixture_name, test_name, signo)			\
	__TEST_F_IMPL(fixture_name, test_name, signo, 0)

/**
 * TEST_F_TIMEOUT() - TEST_F() with its own timeout
 * @fixture_name: name of the fixture
 * @test_name:    name of the test
 * @secs:         seconds before the test is killed and counted as failed
 */
#define TEST_F_TIMEOUT(fixture_name, test_name, secs)			\
	__TEST_F_IMPL(fixture_name, test_name, 0, secs)

/* ---- assertions -------------------------------------------------------- */

enum __th_kind { __TH_SIGNED, __TH_UNSIGNED, __TH_PTR, __TH_FLOAT };
enum __th_op { __TH_EQ, __TH_NE, __TH_LT, __TH_LE, __TH_GT, __TH_GE };

/* A compared value, kept in the widest type of its kind. */
struct __th_val {
	enum __th_kind kind;
	long long s;
	unsigned long long u;
	long double f;
};

#if CHAR_MIN < 0
#define __TH_CHAR_KIND	__TH_SIGNED
#else
#define __TH_CHAR_KIND	__TH_UNSIGNED
#endif

/* Enums match their compatible integer type; pointers fall to default. */
#define __th_kind_of(x) _Generic((x),					\
	_Bool: __TH_UNSIGNED, char: __TH_CHAR_KIND,			\
	signed char: __TH_SIGNED, short: __TH_SIGNED, int: __TH_SIGNED,	\
	long: __TH_SIGNED, long long: __TH_SIGNED,			\
	unsigned char: __TH_UNSIGNED, unsigned short: __TH_UNSIGNED,	\
	unsigned int: __TH_UNSIGNED, unsigned long: __TH_UNSIGNED,	\
	unsigned long long: __TH_UNSIGNED,				\
	float: __TH_FLOAT, double: __TH_FLOAT, long double: __TH_FLOAT,	\
	default: __TH_PTR)

#define __th_not_float(x, e)						\
	_Generic((x), float: 0, double: 0, long double: 0, default: (e))

#define __th_val_of(x) ((struct __th_val){				\
	.kind = __th_kind_of(x),					\
	.s = __th_not_float(x, (long long)(x)),				\
	.u = __th_not_float(x, (unsigned long long)(x)),		\
	.f = _Generic((x), float: (x), double: (x), long double: (x),	\
		      default: 0),					\
})

static inline long double __th_ld(const struct __th_val *v)
{
	if (v->kind == __TH_FLOAT)
		return v->f;
	return v->kind == __TH_SIGNED ? (long double)v->s : (long double)v->u;
}

/* Exact order of two integers or addresses, whatever their signedness. */
static inline int __th_cmp_int(const struct __th_val *a, const struct __th_val *b)
{
	bool aneg = a->kind == __TH_SIGNED && a->s < 0;
	bool bneg = b->kind == __TH_SIGNED && b->s < 0;

	if (aneg != bneg)
		return aneg ? -1 : 1;
	if (aneg)
		return (a->s > b->s) - (a->s < b->s);
	return (a->u > b->u) - (a->u < b->u);
}

static inline bool __th_check_float(enum __th_op op, long double a, long double b)
{
	switch (op) {
	case __TH_EQ:
		return a == b;
	case __TH_NE:
		return a != b;
	case __TH_LT:
		return a < b;
	case __TH_LE:
		return a <= b;
	case __TH_GT:
		return a > b;
	default:
		return a >= b;
	}
}

/*
 * Compare as mathematics would: -1 < 0u holds here, unlike in C, so a
 * signed/unsigned mix neither warns nor surprises.
 */
static inline bool __th_check(enum __th_op op, const struct __th_val *a,
			      const struct __th_val *b)
{
	int c;

	if (a->kind == __TH_FLOAT || b->kind == __TH_FLOAT)
		return __th_check_float(op, __th_ld(a), __th_ld(b));
	c = __th_cmp_int(a, b);
	switch (op) {
	case __TH_EQ:
		return c == 0;
	case __TH_NE:
		return c != 0;
	case __TH_LT:
		return c < 0;
	case __TH_LE:
		return c <= 0;
	case __TH_GT:
		return c > 0;
	default:
		return c >= 0;
	}
}

static inline void __th_format(char *buf, size_t len, const struct __th_val *v)
{
	switch (v->kind) {
	case __TH_SIGNED:
		snprintf(buf, len, "%lld", v->s);
		break;
	case __TH_UNSIGNED:
		if (v->u > 0xffff)
			snprintf(buf, len, "%llu (0x%llx)", v->u, v->u);
		else
			snprintf(buf, len, "%llu", v->u);
		break;
	case __TH_PTR:
		if (v->u)
			snprintf(buf, len, "0x%llx", v->u);
		else
			snprintf(buf, len, "NULL");
		break;
	default:
		snprintf(buf, len, "%Lg", v->f);
		break;
	}
}

static inline void __th_mark_failed(struct __test_metadata *m)
{
	__atomic_store_n(&m->passed, 0, __ATOMIC_RELAXED);
}

static inline bool __th_still_running(struct __test_metadata *m)
{
	return __atomic_load_n(&m->passed, __ATOMIC_RELAXED) && !m->skip;
}

static inline void __th_fail_cmp(struct __test_metadata *m, const char *file, int line,
				 const char *a_str, const char *op, const char *b_str,
				 const struct __th_val *a, const struct __th_val *b)
{
	char as[64], bs[64];

	__th_format(as, sizeof(as), a);
	__th_format(bs, sizeof(bs), b);
	ksft_print_msg("%s:%d:%s: Expected %s (%s) %s %s (%s)\n",
		       file, line, m->name, a_str, as, op, b_str, bs);
	__th_mark_failed(m);
}

static inline void __th_fail_str(struct __test_metadata *m, const char *file, int line,
				 const char *a_str, const char *op, const char *b_str,
				 const char *a, const char *b)
{
	ksft_print_msg("%s:%d:%s: Expected %s (%s%s%s) %s %s (%s%s%s)\n",
		       file, line, m->name,
		       a_str, a ? "\"" : "", a ? a : "NULL", a ? "\"" : "", op,
		       b_str, b ? "\"" : "", b ? b : "NULL", b ? "\"" : "");
	__th_mark_failed(m);
}

static inline bool __th_streq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return !strcmp(a, b);
}

static inline void __th_run_teardown(struct __test_metadata *m)
{
	if (!m->teardown || !m->setup_done || m->in_teardown)
		return;
	m->in_teardown = true;
	m->teardown(m, m->self);
}

static inline __attribute__((noreturn)) void __th_exit(struct __test_metadata *m)
{
	int code = KSFT_PASS;

	if (!__atomic_load_n(&m->passed, __ATOMIC_RELAXED))
		code = KSFT_FAIL;
	else if (m->skip)
		code = KSFT_SKIP;
	fflush(NULL);
	exit(code);
}

/* A failed ASSERT: tear the fixture down and end the test process. */
static inline __attribute__((noreturn)) void __th_bail(struct __test_metadata *m)
{
	__th_run_teardown(m);
	__th_exit(m);
}

#define __TH_EXPECT(_exp, _exp_str, _seen, _seen_str, _op, _op_str, _fatal) do { \
	__auto_type __th_e = (_exp);					\
	__auto_type __th_s = (_seen);					\
	struct __th_val __th_ev = __th_val_of(__th_e);			\
	struct __th_val __th_sv = __th_val_of(__th_s);			\
									\
	if (!__th_check(_op, &__th_ev, &__th_sv)) {			\
		__th_fail_cmp(_metadata, __FILE__, __LINE__, _exp_str,	\
			      _op_str, _seen_str, &__th_ev, &__th_sv);	\
		if (_fatal)						\
			__th_bail(_metadata);				\
	}								\
} while (0)

#define __TH_EXPECT_STR(_exp, _seen, _equal, _fatal) do {		\
	const char *__th_e = (_exp);					\
	const char *__th_s = (_seen);					\
									\
	if (__th_streq(__th_e, __th_s) != (_equal)) {			\
		__th_fail_str(_metadata, __FILE__, __LINE__, #_exp,	\
			      (_equal) ? "==" : "!=", #_seen, __th_e, __th_s); \
		if (_fatal)						\
			__th_bail(_metadata);				\
	}								\
} while (0)

/**
 * ASSERT_EQ() - end the test unless @expected == @seen
 * @expected: the value the test wants
 * @seen:     the value the code under test produced
 *
 * Integers of any signedness compare by value (-1 < 0u), pointers by
 * address, floating point as long double. On failure both expressions and
 * both values are printed, then the fixture teardown runs and the test ends.
 * ASSERT_NE(), _LT(), _LE(), _GT() and _GE() compare @expected OP @seen.
 */
#define ASSERT_EQ(expected, seen)					\
	__TH_EXPECT(expected, #expected, seen, #seen, __TH_EQ, "==", 1)
#define ASSERT_NE(expected, seen)					\
	__TH_EXPECT(expected, #expected, seen, #seen, __TH_NE, "!=", 1)
#define ASSERT_LT(expected, seen)					\
	__TH_EXPECT(expected, #expected, seen, #seen, __TH_LT, "<", 1)
#define ASSERT_LE(expected, seen)					\
	__TH_EXPECT(expected, #expected, seen, #seen, __TH_LE, "<=", 1)
#define ASSERT_GT(expected, seen)					\
	__TH_EXPECT(expected, #expected, seen, #seen, __TH_GT, ">", 1)
#define ASSERT_GE(expected, seen)					\
	__TH_EXPECT(expected, #expected, seen, #seen, __TH_GE, ">=", 1)

/**
 * ASSERT_TRUE() - end the test unless @seen is non-zero
 * @seen: an integer, pointer or floating expression
 *
 * ASSERT_FALSE() is the opposite; ASSERT_NULL() and ASSERT_NE_NULL() test a
 * pointer against NULL.
 */
#define ASSERT_TRUE(seen)						\
	__TH_EXPECT(0, "0", seen, #seen, __TH_NE, "!=", 1)
#define ASSERT_FALSE(seen)						\
	__TH_EXPECT(0, "0", seen, #seen, __TH_EQ, "==", 1)
#define ASSERT_NULL(seen)						\
	__TH_EXPECT(NULL, "NULL", seen, #seen, __TH_EQ, "==", 1)
#define ASSERT_NE_NULL(seen)						\
	__TH_EXPECT(NULL, "NULL", seen, #seen, __TH_NE, "!=", 1)

/**
 * ASSERT_STREQ() - end the test unless two C strings are equal
 * @expected: the string the test wants (NULL equals only NULL)
 * @seen:     the string produced
 *
 * ASSERT_STRNE() ends the test if they are equal.
 */
#define ASSERT_STREQ(expected, seen)	__TH_EXPECT_STR(expected, seen, true, 1)
#define ASSERT_STRNE(expected, seen)	__TH_EXPECT_STR(expected, seen, false, 1)

/**
 * EXPECT_EQ() - mark the test failed unless @expected == @seen, and go on
 * @expected: the value the test wants
 * @seen:     the value the code under test produced
 *
 * Each ASSERT_*() has an EXPECT_*() twin that prints the same message and
 * marks the test failed, but lets it run to its end.
 */
#define EXPECT_EQ(expected, seen)					\
	__TH_EXPECT(expected, #expected, seen, #seen, __TH_EQ, "==", 0)
#define EXPECT_NE(expected, seen)					\
	__TH_EXPECT(expected, #expected, seen, #seen, __TH_NE, "!=", 0)
#define EXPECT_LT(expected, seen)					\
	__TH_EXPECT(expected, #expected, seen, #seen, __TH_LT, "<", 0)
#define EXPECT_LE(expected, seen)					\
	__TH_EXPECT(expected, #expected, seen, #seen, __TH_LE, "<=", 0)
#define EXPECT_GT(expected, seen)					\
	__TH_EXPECT(expected, #expected, seen, #seen, __TH_GT, ">", 0)
#define EXPECT_GE(expected, seen)					\
	__TH_EXPECT(expected, #expected, seen, #seen, __TH_GE, ">=", 0)
#define EXPECT_TRUE(seen)						\
	__TH_EXPECT(0, "0", seen, #seen, __TH_NE, "!=", 0)
#define EXPECT_FALSE(seen)						\
	__TH_EXPECT(0, "0", seen, #seen, __TH_EQ, "==", 0)
#define EXPECT_NULL(seen)						\
	__TH_EXPECT(NULL, "NULL", seen, #seen, __TH_EQ, "==", 0)
#define EXPECT_NE_NULL(seen)						\
	__TH_EXPECT(NULL, "NULL", seen, #seen, __TH_NE, "!=", 0)
#define EXPECT_STREQ(expected, seen)	__TH_EXPECT_STR(expected, seen, true, 0)
#define EXPECT_STRNE(expected, seen)	__TH_EXPECT_STR(expected, seen, false, 0)

static inline __ksft_printf(2, 3) void
__th_skip(struct __test_metadata *m, const char *fmt, ...)
{
	char *reason = m->shared->reason, *nl;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, TH_REASON_MAX, fmt, ap);
	va_end(ap);
	/* The reason goes on the result line: keep it to one line. */
	while ((nl = strchr(reason, '\n')))
		*nl = nl[1] ? ' ' : '\0';
	m->skip = 1;
}

/**
 * SKIP() - mark the test skipped, then run @statement
 * @statement: what to do next, usually `return'
 * @...:       printf format and arguments of the reason
 *
 * The reason appears on the result line: "ok N name # SKIP reason". A test
 * that failed an EXPECT before it skipped is still reported as failed.
 */
#define SKIP(statement, ...) do {					\
	__th_skip(_metadata, __VA_ARGS__);				\
	statement;							\
} while (0)

static inline __ksft_printf(3, 4) void
__th_log(const char *file, int line, const char *fmt, ...)
{
	char small[256], *msg = small, *p, *nl;
	va_list ap;
	int len;

	va_start(ap, fmt);
	len = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (len >= (int)sizeof(small) && (msg = malloc(len + 1))) {
		va_start(ap, fmt);
		vsnprintf(msg, len + 1, fmt, ap);
		va_end(ap);
	} else if (!msg) {
		msg = small;
	}
	/* Every line a TAP comment, so the message cannot fake a result. */
	printf("# %s:%d:%s: ", file, line, __th_current ? __th_current->name : "-");
	for (p = msg; (nl = strchr(p, '\n')) && nl[1]; p = nl + 1)
		printf("%.*s\n# ", (int)(nl - p), p);
	printf("%.*s\n", (int)(nl ? nl - p : (long)strlen(p)), p);
	if (msg != small)
		free(msg);
	fflush(stdout);
}

/**
 * TH_LOG() - print a diagnostic line from a test
 * @...: printf format (without the newline) and arguments
 *
 * Printed as "# file:line:test: message", a TAP comment; a message of
 * several lines gets "# " at the head of each.
 */
#define TH_LOG(...)	__th_log(__FILE__, __LINE__, __VA_ARGS__)

/* ---- the runner -------------------------------------------------------- */

static inline int __th_default_timeout(void)
{
	const char *env = getenv("KSFT_TIMEOUT");
	char *end;
	long secs;

	if (!env || !*env)
		return TH_DEFAULT_TIMEOUT;
	errno = 0;
	secs = strtol(env, &end, 10);
	if (errno || *end || secs <= 0 || secs > INT_MAX) {
		ksft_print_msg("ignoring KSFT_TIMEOUT=%s: not a positive number\n", env);
		return TH_DEFAULT_TIMEOUT;
	}
	return secs;
}

/*
 * In the test process: run the test and exit with its result. The test gets
 * its own process group, so a timeout kills whatever it started too, and
 * dies with the runner, so a runner killed from outside leaves nothing.
 */
static inline __attribute__((noreturn)) void
__th_child(struct __test_metadata *t, pid_t runner, const sigset_t *oldmask)
{
	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != runner)
		_exit(KSFT_FAIL);
	sigprocmask(SIG_SETMASK, oldmask, NULL);
	t->passed = 1;
	__th_current = t;
	t->fn(t);
	__th_exit(t);
}

/*
 * Wait for @pid for at most @timeout seconds, taking the signals of @set,
 * which are blocked. Return 0 once it has exited (*status holds how),
 * -ETIMEDOUT, or the number of a signal that told the runner to stop.
 */
static inline int __th_wait(pid_t pid, int timeout, const sigset_t *set, int *status)
{
	struct timespec now, end, left;
	int sig;

	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += timeout;
	for (;;) {
		if (waitpid(pid, status, WNOHANG) == pid)
			return 0;
		clock_gettime(CLOCK_MONOTONIC, &now);
		left.tv_sec = end.tv_sec - now.tv_sec;
		left.tv_nsec = end.tv_nsec - now.tv_nsec;
		if (left.tv_nsec < 0) {
			left.tv_sec--;
			left.tv_nsec += 1000000000L;
		}
		if (left.tv_sec < 0)
			return -ETIMEDOUT;
		/* Poll now and then, in case a SIGCHLD is ever missed. */
		if (left.tv_sec > 0) {
			left.tv_sec = 0;
			left.tv_nsec = 200000000L;
		}
		sig = sigtimedwait(set, NULL, &left);
		if (sig > 0 && sig != SIGCHLD)
			return sig;
	}
}

/* The runner was told to stop: report, then die of the same signal. */
static inline __attribute__((noreturn)) void
__th_die(struct __test_metadata *t, int sig)
{
	sigset_t set;

	ksft_test_result_code(KSFT_FAIL, t->name, "interrupted by signal %d", sig);
	ksft_print_cnts();
	fflush(NULL);
	signal(sig, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(sig);
	exit(KSFT_FAIL);
}

static inline void __th_report(struct __test_metadata *t, int status)
{
	const char *reason = t->shared->reason;
	int code, sig;

	if (WIFSIGNALED(status)) {
		sig = WTERMSIG(status);
		if (sig == t->termsig)
			ksft_test_result_code(KSFT_PASS, t->name, NULL);
		else
			ksft_test_result_code(KSFT_FAIL, t->name,
					      "crashed by signal %d", sig);
		return;
	}
	code = WEXITSTATUS(status);
	if (t->termsig && code != KSFT_SKIP)
		ksft_test_result_code(KSFT_FAIL, t->name, "exit=%d, expected signal %d",
				      code, t->termsig);
	else if (code == KSFT_PASS)
		ksft_test_result_code(KSFT_PASS, t->name, NULL);
	else if (code == KSFT_SKIP)
		ksft_test_result_code(KSFT_SKIP, t->name, reason[0] ? "%s" : NULL, reason);
	else if (code == KSFT_FAIL)
		ksft_test_result_code(KSFT_FAIL, t->name, NULL);
	else
		ksft_test_result_code(KSFT_FAIL, t->name, "exit=%d", code);
}

/* Run one test in a child process and print its result line. */
static inline void __th_run_one(struct __test_metadata *t, struct __th_shared *shared,
				int timeout, const sigset_t *stop, const sigset_t *oldmask)
{
	pid_t pid, runner = getpid();
	int status = 0, ret;

	if (t->timeout > 0)
		timeout = t->timeout;
	memset(shared, 0, sizeof(*shared));
	t->shared = shared;
	ksft_print_msg(" RUN  %s\n", t->name);
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		ksft_test_result_code(KSFT_FAIL, t->name, "fork: %s", strerror(errno));
		return;
	}
	if (pid == 0)
		__th_child(t, runner, oldmask);
	setpgid(pid, pid);
	ret = __th_wait(pid, timeout, stop, &status);
	if (ret) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	if (ret == -ETIMEDOUT)
		ksft_test_result_code(KSFT_FAIL, t->name, "timeout after %ds", timeout);
	else if (ret > 0)
		__th_die(t, ret);
	else
		__th_report(t, status);
}

static inline void __th_usage(FILE *f, const char *prog)
{
	fprintf(f, "Usage: %s [-l] [-t NAME]... [-h]\n"
		"  -l       list the tests, one per line\n"
		"  -t NAME  run only the test NAME (fixture tests: fixture.test);"
		" repeatable\n"
		"  -h       show this help\n"
		"KSFT_TIMEOUT=SECS replaces the default timeout of %d s.\n",
		prog, TH_DEFAULT_TIMEOUT);
}

static inline bool __th_selected(const struct __test_metadata *t,
				 char **names, int nr_names)
{
	int i;

	if (!nr_names)
		return true;
	for (i = 0; i < nr_names; i++)
		if (!strcmp(t->name, names[i]))
			return true;
	return false;
}

/* Return the number of selected tests, or -1 if a -t name matches none. */
static inline int __th_count_selected(char **names, int nr_names)
{
	struct __test_metadata *t;
	int i, n = 0;
	bool found;

	for (i = 0; i < nr_names; i++) {
		found = false;
		for (t = __th_registry.head; t; t = t->next)
			found |= !strcmp(t->name, names[i]);
		if (!found) {
			fprintf(stderr, "no test named '%s' (-l lists them)\n", names[i]);
			return -1;
		}
	}
	for (t = __th_registry.head; t; t = t->next)
		n += __th_selected(t, names, nr_names);
	return n;
}

static inline int __th_run_selected(char **names, int nr_names, int nr_tests)
{
	struct __th_shared *shared;
	struct __test_metadata *t;
	sigset_t stop, oldmask;
	int timeout;

	shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED) {
		perror("mmap");
		return KSFT_FAIL;
	}
	/* SIGCHLD must not be ignored, or children reap themselves. */
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&stop);
	sigaddset(&stop, SIGCHLD);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGHUP);
	sigprocmask(SIG_BLOCK, &stop, &oldmask);

	ksft_print_header();
	ksft_set_plan(nr_tests);
	timeout = __th_default_timeout();
	for (t = __th_registry.head; t; t = t->next)
		if (__th_selected(t, names, nr_names))
			__th_run_one(t, shared, timeout, &stop, &oldmask);
	ksft_print_cnts();

	sigprocmask(SIG_SETMASK, &oldmask, NULL);
	munmap(shared, sizeof(*shared));
	if (ksft_cnt.fail || ksft_cnt.error)
		return KSFT_FAIL;
	if (nr_tests && ksft_cnt.skip == (unsigned int)nr_tests)
		return KSFT_SKIP;
	return KSFT_PASS;
}

/**
 * test_harness_run() - parse the options and run the registered tests
 * @argc: from main()
 * @argv: from main()
 *
 * Return: the exit code: KSFT_PASS, KSFT_FAIL, or KSFT_SKIP if every test
 * run was skipped.
 */
static inline int test_harness_run(int argc, char **argv)
{
	struct __test_metadata *t;
	int opt, ret, nr_names = 0;
	bool list = false;
	char **names;

	names = calloc(argc, sizeof(*names));
	if (!names)
		return KSFT_FAIL;
	while ((opt = getopt(argc, argv, "lt:h")) != -1) {
		switch (opt) {
		case 'l':
			list = true;
			break;
		case 't':
			names[nr_names++] = optarg;
			break;
		case 'h':
			__th_usage(stdout, argv[0]);
			free(names);
			return KSFT_PASS;
		default:
			__th_usage(stderr, argv[0]);
			free(names);
			return KSFT_FAIL;
		}
	}
	if (optind < argc) {
		__th_usage(stderr, argv[0]);
		free(names);
		return KSFT_FAIL;
	}
	if (list) {
		for (t = __th_registry.head; t; t = t->next)
			printf("%s\n", t->name);
		free(names);
		return KSFT_PASS;
	}
	ret = __th_count_selected(names, nr_names);
	ret = ret < 0 ? KSFT_FAIL : __th_run_selected(names, nr_names, ret);
	free(names);
	return ret;
}

/**
 * TEST_HARNESS_MAIN - define main() to run the tests of this file
 */
#define TEST_HARNESS_MAIN						\
	int main(int argc, char **argv)					\
	{								\
		return test_harness_run(argc, argv);			\
	}

#endif /* _KSELFTEST_HARNESS_H */
