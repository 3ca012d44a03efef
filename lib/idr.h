/* SPDX-License-Identifier: MIT */
/*
 * IDR: small integer handles for pointers, as the kernel's lib/idr.c, with
 * a generation in the upper 32 bits so that a stale handle of a freed
 * object never finds the object that reuses its slot.
 */
#ifndef _KV_IDR_H
#define _KV_IDR_H

#include <stdint.h>

/**
 * struct idr - handle table
 * @slots:    pointer per slot, NULL when free
 * @gens:     generation per slot, bumped on every free
 * @free:     stack of free slot indices
 * @nr_free:  entries on @free
 * @capacity: slots allocated
 * @count:    slots in use
 * @max:      most slots the table may grow to
 */
struct idr {
	void **slots;
	uint32_t *gens;
	uint32_t *free;
	uint32_t nr_free;
	uint32_t capacity;
	uint32_t count;
	uint32_t max;
};

void idr_init(struct idr *idr, uint32_t max);
void idr_destroy(struct idr *idr);
int idr_alloc(struct idr *idr, void *ptr, uint64_t *id);
void *idr_find(const struct idr *idr, uint64_t id);
void *idr_remove(struct idr *idr, uint64_t id);
void *idr_next(const struct idr *idr, uint64_t *id);

#endif /* _KV_IDR_H */
