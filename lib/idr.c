// SPDX-License-Identifier: MIT
/*
 * IDR: handles for pointers. A handle is (generation << 32) | (slot + 1):
 * never 0, and never valid again once its object is removed (until the
 * slot's 32-bit generation wraps).
 */
#include <errno.h>
#include <stdlib.h>
#include "idr.h"

/** idr_init() - an empty table that may grow to @max entries */
void idr_init(struct idr *idr, uint32_t max)
{
	*idr = (struct idr){ .max = max };
}

/** idr_destroy() - free the table (not the objects it points to) */
void idr_destroy(struct idr *idr)
{
	free(idr->slots);
	free(idr->gens);
	free(idr->free);
	idr_init(idr, idr->max);
}

static int idr_grow(struct idr *idr)
{
	uint32_t cap = idr->capacity ? idr->capacity * 2 : 16, i;
	void **slots;
	uint32_t *gens, *fr;

	if (cap > idr->max)
		cap = idr->max;
	if (cap <= idr->capacity)
		return -ENOSPC;
	slots = realloc(idr->slots, cap * sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	idr->slots = slots;
	gens = realloc(idr->gens, cap * sizeof(*gens));
	if (!gens)
		return -ENOMEM;
	idr->gens = gens;
	fr = realloc(idr->free, cap * sizeof(*fr));
	if (!fr)
		return -ENOMEM;
	idr->free = fr;
	for (i = cap; i > idr->capacity; i--) {
		idr->slots[i - 1] = NULL;
		idr->gens[i - 1] = 1;
		idr->free[idr->nr_free++] = i - 1;
	}
	idr->capacity = cap;
	return 0;
}

/**
 * idr_alloc() - give @ptr a handle
 * @idr: table
 * @ptr: object, not NULL
 * @id:  receives the handle
 *
 * Return: 0, -ENOSPC when the table is at its maximum, -ENOMEM.
 */
int idr_alloc(struct idr *idr, void *ptr, uint64_t *id)
{
	uint32_t slot;
	int err;

	if (!idr->nr_free) {
		err = idr_grow(idr);
		if (err)
			return err;
	}
	slot = idr->free[--idr->nr_free];
	idr->slots[slot] = ptr;
	idr->count++;
	*id = (uint64_t)idr->gens[slot] << 32 | (slot + 1);
	return 0;
}

static int idr_slot(const struct idr *idr, uint64_t id, uint32_t *slot)
{
	uint32_t low = (uint32_t)id;

	if (!low || low > idr->capacity)
		return -ENOENT;
	*slot = low - 1;
	if (!idr->slots[*slot] || idr->gens[*slot] != (uint32_t)(id >> 32))
		return -ENOENT;
	return 0;
}

/** idr_find() - the object of a handle, or NULL */
void *idr_find(const struct idr *idr, uint64_t id)
{
	uint32_t slot;

	return idr_slot(idr, id, &slot) ? NULL : idr->slots[slot];
}

/** idr_remove() - forget a handle; returns its object, or NULL */
void *idr_remove(struct idr *idr, uint64_t id)
{
	uint32_t slot;
	void *ptr;

	if (idr_slot(idr, id, &slot))
		return NULL;
	ptr = idr->slots[slot];
	idr->slots[slot] = NULL;
	if (!++idr->gens[slot])
		idr->gens[slot] = 1;
	idr->free[idr->nr_free++] = slot;
	idr->count--;
	return ptr;
}

/**
 * idr_next() - iterate: the first object whose handle's slot is at or after
 * the slot of *@id (start with *@id = 0)
 * @idr: table
 * @id:  in: where to start; out: the handle found
 *
 * Return: the object, or NULL at the end. Continue with *@id + 1.
 */
void *idr_next(const struct idr *idr, uint64_t *id)
{
	uint32_t slot = (uint32_t)*id ? (uint32_t)*id - 1 : 0;

	for (; slot < idr->capacity; slot++) {
		if (idr->slots[slot]) {
			*id = (uint64_t)idr->gens[slot] << 32 | (slot + 1);
			return idr->slots[slot];
		}
	}
	return NULL;
}
