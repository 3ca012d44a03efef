// SPDX-License-Identifier: MIT
/*
 * A parallel for-loop for the CPU kernels: a few threads take items from a
 * shared atomic counter, so that uneven items (ragged context lengths)
 * balance themselves. Threads are started per call; the kernels only go
 * parallel when the work is large enough to pay for that.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "kernels/internal.h"

#define KV_THREADS_MAX	64

struct kv_pfor {
	_Atomic uint64_t next;
	uint64_t n;
	void (*fn)(void *arg, uint64_t i);
	void *arg;
};

static void *kv_pfor_worker(void *p)
{
	struct kv_pfor *w = p;
	uint64_t i;

	while ((i = atomic_fetch_add_explicit(&w->next, 1,
					      memory_order_relaxed)) < w->n)
		w->fn(w->arg, i);
	return NULL;
}

static unsigned int kv_cpus_online(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	return n > KV_THREADS_MAX ? KV_THREADS_MAX : (unsigned int)n;
}

int kv_parallel_for(uint64_t n, unsigned int threads, uint64_t min_per_thread,
		    void (*fn)(void *arg, uint64_t i), void *arg)
{
	pthread_t tid[KV_THREADS_MAX];
	struct kv_pfor w = { .n = n, .fn = fn, .arg = arg };
	unsigned int t, started = 0;
	int err = 0;

	if (!threads)
		threads = kv_cpus_online();
	if (threads > KV_THREADS_MAX)
		threads = KV_THREADS_MAX;
	if (min_per_thread && threads > n / min_per_thread)
		threads = (unsigned int)(n / min_per_thread);
	if (threads < 1)
		threads = 1;
	atomic_init(&w.next, 0);

	for (t = 1; t < threads; t++) {
		int e = pthread_create(&tid[started], NULL, kv_pfor_worker, &w);

		if (e) {
			err = -e;
			break;
		}
		started++;
	}
	kv_pfor_worker(&w);
	for (t = 0; t < started; t++)
		pthread_join(tid[t], NULL);
	return err;
}
