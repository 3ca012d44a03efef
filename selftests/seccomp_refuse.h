/* SPDX-License-Identifier: MIT */
/*
 * Make chosen system calls of this process, and of every process it starts
 * from now on, fail with a chosen errno, as a file system, a kernel or a
 * container runtime's seccomp profile may refuse them: tests of the paths
 * that handle such refusals (a kselftest harness test runs in a process of
 * its own, so the filter ends with it).
 */
#ifndef _SELFTESTS_SECCOMP_REFUSE_H
#define _SELFTESTS_SECCOMP_REFUSE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define KVT_AUDIT_ARCH		AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define KVT_AUDIT_ARCH		AUDIT_ARCH_AARCH64
#endif

#define KVT_ANY_ARG		(-1L)	/* struct kvt_refusal.arg1: whatever it is */
#define KVT_REFUSALS_MAX	8

/**
 * struct kvt_refusal - a system call to refuse
 * @nr:   its number (__NR_*)
 * @arg1: refuse it only when its second argument is this (compared as 32
 *        bits: an int, an operation code), or KVT_ANY_ARG
 * @err:  the errno it then fails with
 */
struct kvt_refusal {
	long nr;
	long arg1;
	int err;
};

/**
 * kvt_refuse() - install a seccomp filter that refuses the calls of @r
 * @r: the refusals
 * @n: their number, at most KVT_REFUSALS_MAX
 *
 * Return: 0; -EOPNOTSUPP where no filter for this architecture is written
 * here; -EINVAL for too many; else the negative errno of prctl() (seccomp
 * not allowed here): the caller skips its test.
 */
static inline int kvt_refuse(const struct kvt_refusal *r, unsigned int n)
{
#ifdef KVT_AUDIT_ARCH
	struct sock_filter f[3 + 5 * KVT_REFUSALS_MAX + 1];
	struct sock_fprog prog;
	unsigned int k = 0, i;
	bool arg;

	if (n > KVT_REFUSALS_MAX)
		return -EINVAL;
	f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
					      offsetof(struct seccomp_data, arch));
	f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, KVT_AUDIT_ARCH, 1, 0);
	f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	for (i = 0; i < n; i++) {
		/* a rule: not this call (or argument), on to the next rule */
		arg = r[i].arg1 != KVT_ANY_ARG;
		f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
						      offsetof(struct seccomp_data, nr));
		f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)r[i].nr,
						      0, arg ? 3 : 1);
		if (arg) {
			/* the low word of args[1] (both architectures are little-endian) */
			f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
							      offsetof(struct seccomp_data, args[1]));
			f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
							      (uint32_t)r[i].arg1, 0, 1);
		}
		f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K,
						      SECCOMP_RET_ERRNO | (r[i].err & SECCOMP_RET_DATA));
	}
	f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	prog = (struct sock_fprog){ .len = (unsigned short)k, .filter = f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		return -errno;
	return 0;
#else
	(void)r;
	(void)n;
	return -EOPNOTSUPP;
#endif
}

#endif /* _SELFTESTS_SECCOMP_REFUSE_H */
