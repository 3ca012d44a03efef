// SPDX-License-Identifier: MIT
/*
 * Checkpoints: the prefix cache written to the swap area so that it
 * survives a restart of its owner. A checkpoint moves every block only the
 * cache holds into swap slots, then writes, to a region of the swap area
 * the caller reserves (kv_checkpoint_bytes()), a header and one entry per
 * cached block in swap: its slot, its parent's entry, its tenant, its token
 * ids and the CRC-32C of the slot. A restore at start reads them back,
 * checks every slot against its checksum, and rebuilds the cache's tree in
 * the same slots, so that prompts are found by prefix again; their blocks
 * come back to the device when a sequence using them is activated.
 *
 * Torn or stale checkpoints: the old header is invalidated before the
 * entries are written, and the new header (with the checksums of the
 * header, the entries and the caller's blob) goes last, after an
 * fdatasync; a restore that finds a bad header, a bad checksum, another
 * geometry or another number of slots restores nothing. Slots reused
 * since the checkpoint fail their own checksums and are skipped, with
 * every block below them: a restore never brings back KV that differs
 * from what was checkpointed.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lib/crc32c.h>
#include "internal.h"

#define CKPT_MAGIC	0x3154504b434d564bull	/* "KVMCKPT1" */
#define CKPT_VERSION	1u
#define CKPT_HDR	4096u
#define CKPT_ALIGN	4096u
#define CKPT_BATCH	64u

/**
 * struct ckpt_header - the first 4 KiB of a checkpoint region
 * @magic:       CKPT_MAGIC
 * @version:     CKPT_VERSION
 * @hdr_crc:     CRC-32C of this struct with @hdr_crc zero
 * @geom:        the pool's geometry
 * @nr_slots:    the pool's swap slots
 * @nr_entries:  entries after the blob
 * @entry_bytes: bytes per entry
 * @blob_len:    bytes of the caller's blob
 * @entries_crc: CRC-32C of the entries
 * @blob_crc:    CRC-32C of the blob
 */
struct ckpt_header {
	u64 magic;
	u32 version;
	u32 hdr_crc;
	struct kv_geometry geom;
	u32 nr_slots;
	u32 nr_entries;
	u32 entry_bytes;
	u32 blob_len;
	u32 entries_crc;
	u32 blob_crc;
};

/**
 * struct ckpt_entry - one cached block (followed by its block_tokens ids)
 * @slot:   its swap slot
 * @parent: index of its parent's entry (earlier), or UINT32_MAX
 * @tenant: the tenant that cached it
 * @crc:    CRC-32C of the slot's contents
 * @depth:  blocks from the root, itself included
 * @pad:    0
 */
struct ckpt_entry {
	u32 slot;
	u32 parent;
	u32 tenant;
	u32 crc;
	u32 depth;
	u32 pad[3];
};

static u64 entry_bytes(const struct kv_geometry *g)
{
	return sizeof(struct ckpt_entry) + (u64)g->block_tokens * sizeof(u32);
}

/**
 * kv_checkpoint_bytes() - bytes a checkpoint of a pool needs in the swap
 * area: a header, KV_CKPT_BLOB_MAX for the caller, an entry per slot
 * @g:        the pool's geometry
 * @nr_slots: its swap slots
 *
 * Return: a multiple of 4096.
 */
u64 kv_checkpoint_bytes(const struct kv_geometry *g, u32 nr_slots)
{
	u64 n = CKPT_HDR + KV_CKPT_BLOB_MAX + nr_slots * entry_bytes(g);

	return (n + CKPT_ALIGN - 1) / CKPT_ALIGN * CKPT_ALIGN;
}

/* ---- writing ------------------------------------------------------------ */

/*
 * Up to @max cached blocks on @tier that only the cache holds, scanning on
 * from *@cursor (one pass over the descriptors for the whole checkpoint).
 */
static u32 idle_cached(struct kv_pool *pool, int tier, u32 *cursor, struct kv_block **out,
		       u32 max)
{
	struct kv_block *b;
	u32 n = 0;

	for (; *cursor < pool->nr_blocks && n < max; (*cursor)++) {
		b = kv_block(pool, *cursor);
		if ((b->flags & (KV_BLOCK_CACHED | KV_BLOCK_LOCKED)) == KV_BLOCK_CACHED &&
		    b->refcount == 1 && (int)b->tier == tier)
			out[n++] = b;
	}
	return n;
}

/* Move the idle cached blocks of the device and host tiers into swap. */
static void ckpt_swap_out(struct kv_pool *pool)
{
	struct kv_block *blocks[CKPT_BATCH];
	u32 slots[CKPT_BATCH], n, i, cursor;
	int tier, err;

	for (tier = KV_TIER_DEVICE; tier <= KV_TIER_HOST; tier++) {
		cursor = 0;
		while ((n = idle_cached(pool, tier, &cursor, blocks, CKPT_BATCH))) {
			if (__kv_frames_alloc(pool, KV_TIER_SWAP, n,
					      KV_ALLOC_NOWAIT | KV_ALLOC_RECLAIM, slots))
				return;		/* swap full: checkpoint what is there */
			for (i = 0; i < n; i++)
				kv_block_isolate(pool, blocks[i]);
			err = kv_migrate_blocks(pool, blocks, n, KV_TIER_SWAP, slots);
			for (i = 0; i < n; i++)
				kv_block_putback(pool, blocks[i]);
			pthread_cond_broadcast(&pool->unlocked);
			if (err)
				return;
		}
	}
}

static int depth_cmp(const void *a, const void *b, void *arg)
{
	const struct kv_prefix_node *nodes = arg;
	u32 da = nodes[*(const u32 *)a].depth, db = nodes[*(const u32 *)b].depth;

	return da < db ? -1 : da > db;
}

/*
 * Entries for every cached block in swap whose whole prefix is in swap,
 * parents first, into @buf (entries area); returns their number. Pool
 * locked.
 */
static u32 ckpt_entries(struct kv_pool *pool, char *buf, u32 *order, u32 *entry_of)
{
	struct kv_prefix_node *nodes = pool->prefix.nodes;
	u32 bt = pool->geom.block_tokens, n = 0, k = 0, i, idx, par;
	u64 eb = entry_bytes(&pool->geom);
	struct ckpt_entry e;
	struct kv_block *b;

	for (i = 0; i < pool->nr_blocks; i++) {
		b = kv_block(pool, i);
		entry_of[i] = UINT32_MAX;
		if ((b->flags & KV_BLOCK_CACHED) && b->tier == KV_TIER_SWAP)
			order[n++] = i;
	}
	qsort_r(order, n, sizeof(*order), depth_cmp, nodes);
	for (i = 0; i < n; i++) {
		idx = order[i];
		par = nodes[idx].parent;
		if (par != KV_PREFIX_NONE && entry_of[par] == UINT32_MAX)
			continue;	/* its prefix is not all in swap */
		memset(&e, 0, sizeof(e));
		e.slot = kv_block(pool, idx)->frame[KV_TIER_SWAP];
		e.parent = par == KV_PREFIX_NONE ? UINT32_MAX : entry_of[par];
		e.tenant = nodes[idx].tenant;
		e.crc = swap_slot_crc(pool, e.slot);
		e.depth = nodes[idx].depth;
		memcpy(buf + k * eb, &e, sizeof(e));
		memcpy(buf + k * eb + sizeof(e), pool->prefix.tokens + (size_t)idx * bt,
		       bt * sizeof(u32));
		entry_of[idx] = k++;
	}
	return k;
}

/*
 * All of a pread() or pwrite() of @len bytes: 0, -errno, or -ENODATA when
 * a read meets the end of the file (nothing was written there).
 */
static int rw_all(int fd, void *buf, u64 len, u64 off, bool write)
{
	ssize_t n;

	while (len) {
		n = write ? pwrite(fd, buf, len, (off_t)off) : pread(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : write ? -EIO : -ENODATA;
		buf = (char *)buf + n;
		len -= (u64)n;
		off += (u64)n;
	}
	return 0;
}

static int pwrite_all(int fd, const void *buf, u64 len, u64 off)
{
	return rw_all(fd, (void *)buf, len, off, true);
}

static int pread_all(int fd, void *buf, u64 len, u64 off)
{
	return rw_all(fd, buf, len, off, false);
}

/* Header last, after the rest is on the device; the old one goes first. */
static int ckpt_write(int fd, u64 off, char *img, u64 body, struct ckpt_header *h)
{
	int err;

	memset(img, 0, CKPT_HDR);
	err = pwrite_all(fd, img, CKPT_HDR, off);
	err = err ?: fdatasync(fd) ? -errno : 0;
	err = err ?: pwrite_all(fd, img + CKPT_HDR, body, off + CKPT_HDR);
	err = err ?: fdatasync(fd) ? -errno : 0;
	if (err)
		return err;
	memcpy(img, h, sizeof(*h));
	err = pwrite_all(fd, img, CKPT_HDR, off);
	return err ?: fdatasync(fd) ? -errno : 0;
}

/**
 * kv_pool_checkpoint() - write the prefix cache to the swap area
 * @pool:     pool with a swap tier
 * @off:      byte offset of the checkpoint region (4 KiB aligned)
 * @len:      its size, at least kv_checkpoint_bytes()
 * @blob:     the caller's own data to keep with it (kvmemd: tenant names)
 * @blob_len: its size, at most KV_CKPT_BLOB_MAX
 *
 * Moves every cached block that no sequence holds into swap (as far as
 * there is room), then writes the entries of the cached blocks in swap.
 * Blocks that sequences hold stay where they are and are not saved.
 *
 * Return: blocks saved, or -ENODEV (no swap tier), -EINVAL, -ENOSPC (region
 * too small), -ENOMEM, or the I/O error.
 */
int kv_pool_checkpoint(struct kv_pool *pool, u64 off, u64 len, const void *blob,
		       u32 blob_len)
{
	u32 nr_slots = pool->tier[KV_TIER_SWAP].fa.nr_total, n, *order, *entry_of;
	u64 eb = entry_bytes(&pool->geom), body, size;
	struct ckpt_header h;
	char *img;
	int fd = swap_area_fd(pool), err;

	if (fd < 0 || !pool->prefix.nodes)
		return -ENODEV;
	if (off % CKPT_ALIGN || blob_len > KV_CKPT_BLOB_MAX || (blob_len && !blob))
		return -EINVAL;
	size = kv_checkpoint_bytes(&pool->geom, nr_slots);
	if (len < size)
		return -ENOSPC;
	img = aligned_alloc(CKPT_ALIGN, size);
	order = malloc((pool->nr_blocks + 1) * sizeof(*order));
	entry_of = malloc((pool->nr_blocks + 1) * sizeof(*entry_of));
	err = -ENOMEM;
	if (!img || !order || !entry_of)
		goto out;
	memset(img, 0, size);
	if (blob_len)
		memcpy(img + CKPT_HDR, blob, blob_len);
	kv_pool_lock(pool);
	ckpt_swap_out(pool);
	n = ckpt_entries(pool, img + CKPT_HDR + KV_CKPT_BLOB_MAX, order, entry_of);
	kv_pool_unlock(pool);
	body = (KV_CKPT_BLOB_MAX + n * eb + CKPT_ALIGN - 1) / CKPT_ALIGN * CKPT_ALIGN;
	h = (struct ckpt_header){ .magic = CKPT_MAGIC, .version = CKPT_VERSION,
				  .geom = pool->geom, .nr_slots = nr_slots, .nr_entries = n,
				  .entry_bytes = (u32)eb, .blob_len = blob_len };
	h.entries_crc = crc32c(0, img + CKPT_HDR + KV_CKPT_BLOB_MAX, n * eb);
	h.blob_crc = crc32c(0, img + CKPT_HDR, blob_len);
	h.hdr_crc = crc32c(0, &h, sizeof(h));
	err = ckpt_write(fd, off, img, body, &h);
	if (!err)
		err = (int)n;
out:
	free(img);
	free(order);
	free(entry_of);
	return err;
}

/* ---- restoring ----------------------------------------------------------- */

/* Read and check the header; 0 when it describes a checkpoint of @pool. */
static int ckpt_header_read(struct kv_pool *pool, int fd, u64 off, char *img,
			    struct ckpt_header *h)
{
	u32 crc;
	int err = pread_all(fd, img, CKPT_HDR, off);

	if (err)
		return err == -ENODATA ? -ENOENT : err;
	memcpy(h, img, sizeof(*h));
	crc = h->hdr_crc;
	h->hdr_crc = 0;
	if (h->magic != CKPT_MAGIC)
		return -ENOENT;
	if (h->version != CKPT_VERSION || crc32c(0, h, sizeof(*h)) != crc)
		return -EBADMSG;
	if (memcmp(&h->geom, &pool->geom, sizeof(h->geom)) ||
	    h->nr_slots != pool->tier[KV_TIER_SWAP].fa.nr_total ||
	    h->entry_bytes != entry_bytes(&pool->geom) || h->nr_entries > h->nr_slots ||
	    h->blob_len > KV_CKPT_BLOB_MAX)
		return -ESTALE;
	return 0;
}

/*
 * Check each entry: its slot in range and not repeated, its parent good,
 * its slot's contents matching its checksum. Marks the good ones in @ok.
 * Return: 0 or -ENOMEM.
 */
static int ckpt_verify(struct kv_pool *pool, int fd, const char *ents, u32 n, u8 *ok,
		       void *frame)
{
	u32 nr_slots = pool->tier[KV_TIER_SWAP].fa.nr_total, i;
	u64 eb = entry_bytes(&pool->geom), base = pool->swap.offset;
	u8 *seen = kv_meta_alloc(pool, nr_slots + 1);
	struct ckpt_entry e;

	if (!seen)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		memcpy(&e, ents + i * eb, sizeof(e));
		ok[i] = 0;
		if (e.slot >= nr_slots || seen[e.slot] ||
		    (e.parent != UINT32_MAX && (e.parent >= i || !ok[e.parent])))
			continue;
		seen[e.slot] = 1;
		if (pread_all(fd, frame, pool->frame_bytes,
			      base + (u64)e.slot * pool->frame_bytes) ||
		    crc32c(0, frame, pool->frame_bytes) != e.crc)
			continue;	/* reused since, or damaged */
		ok[i] = 1;
	}
	free(seen);
	return 0;
}

/* Rebuild the cache from the good entries; returns blocks restored or -errno. */
static int ckpt_rebuild(struct kv_pool *pool, const char *ents, u32 n, const u8 *ok,
			u32 (*tenant)(u32, const void *, u32, void *), const void *blob,
			u32 blob_len, void *arg)
{
	u64 eb = entry_bytes(&pool->geom);
	u32 *slots = malloc((n + 1) * sizeof(*slots)), *block_of, i, k = 0, t;
	struct ckpt_entry e;
	struct kv_block *b;
	int done = -ENOMEM;

	block_of = malloc((n + 1) * sizeof(*block_of));
	if (!slots || !block_of)
		goto out;
	for (i = 0; i < n; i++) {
		memcpy(&e, ents + i * eb, sizeof(e));
		if (ok[i])
			slots[k++] = e.slot;
	}
	done = frames_claim(pool, KV_TIER_SWAP, k, slots);
	if (done)
		goto out;
	for (i = 0; i < n; i++) {
		block_of[i] = KV_PREFIX_NONE;
		if (!ok[i])
			continue;
		memcpy(&e, ents + i * eb, sizeof(e));
		b = kv_block_alloc(pool, KV_TIER_SWAP, e.slot);
		swap_slot_set_crc(pool, e.slot, e.crc);
		lru_add(pool, b);
		t = tenant ? tenant(e.tenant, blob, blob_len, arg) : e.tenant;
		if (t == KV_TENANT_NONE || (e.parent != UINT32_MAX &&
					    block_of[e.parent] == KV_PREFIX_NONE)) {
			kv_block_put(pool, b);	/* frees the slot again */
			continue;
		}
		if (!prefix_restore_node(pool, kv_block_idx(pool, b),
					 e.parent == UINT32_MAX ? KV_PREFIX_NONE : block_of[e.parent],
					 t, (const u32 *)(ents + i * eb + sizeof(e)))) {
			block_of[i] = kv_block_idx(pool, b);
			done++;
		}
	}
out:
	free(slots);
	free(block_of);
	return done;
}

/**
 * kv_pool_restore() - bring back the prefix cache of a checkpoint
 * @pool:     pool just created, with a swap tier and nothing in it yet
 * @off:      byte offset of the checkpoint region
 * @len:      its size
 * @blob:     receives the caller's blob (KV_CKPT_BLOB_MAX bytes), or NULL
 * @blob_len: receives its length, or NULL
 * @tenant:   maps a saved tenant to the one to use now (KV_TENANT_NONE
 *            drops the block and every block below it); NULL keeps them
 * @arg:      passed to @tenant
 *
 * Every slot is read and checked against its checksum first; entries that
 * fail (and their descendants) are skipped. The blocks come back cached,
 * in their swap slots, held by the cache alone.
 *
 * Return: blocks restored; -ENOENT (no checkpoint there), -EBADMSG (a
 * damaged header or entries: torn), -ESTALE (another geometry or swap
 * size), -ENODEV, -EBUSY (the pool holds blocks already), -ENOMEM, or
 * the I/O error. On error nothing is restored.
 */
int kv_pool_restore(struct kv_pool *pool, u64 off, u64 len, void *blob, u32 *blob_len,
		    u32 (*tenant)(u32 old, const void *blob, u32 blob_len, void *arg), void *arg)
{
	u32 nr_slots = pool->tier[KV_TIER_SWAP].fa.nr_total;
	u64 size = kv_checkpoint_bytes(&pool->geom, nr_slots), eb = entry_bytes(&pool->geom);
	struct ckpt_header h;
	char *img, *ents;
	void *frame;
	u8 *ok;
	int fd = swap_area_fd(pool), err, done;

	if (fd < 0 || !pool->prefix.nodes)
		return -ENODEV;
	if (len < size || off % CKPT_ALIGN)
		return -EINVAL;
	if (pool->nr_free_blocks != pool->nr_blocks)
		return -EBUSY;		/* only into an empty pool */
	img = aligned_alloc(CKPT_ALIGN, size);
	frame = aligned_alloc(CKPT_ALIGN, pool->frame_bytes);
	ok = malloc(nr_slots + 1);
	err = -ENOMEM;
	if (!img || !frame || !ok)
		goto out;
	memset(ok, 0, nr_slots + 1);
	err = ckpt_header_read(pool, fd, off, img, &h);
	/* As much as the checkpoint wrote: the region may end past the file. */
	err = err ?: pread_all(fd, img + CKPT_HDR, (KV_CKPT_BLOB_MAX + h.nr_entries * eb +
						     CKPT_ALIGN - 1) / CKPT_ALIGN * CKPT_ALIGN,
			       off + CKPT_HDR);
	if (err == -ENODATA)
		err = -EBADMSG;		/* a header without its entries: torn */
	if (err)
		goto out;
	ents = img + CKPT_HDR + KV_CKPT_BLOB_MAX;
	err = -EBADMSG;
	if (crc32c(0, ents, h.nr_entries * eb) != h.entries_crc ||
	    crc32c(0, img + CKPT_HDR, h.blob_len) != h.blob_crc)
		goto out;
	err = ckpt_verify(pool, fd, ents, h.nr_entries, ok, frame);
	if (err)
		goto out;
	kv_pool_lock(pool);
	done = ckpt_rebuild(pool, ents, h.nr_entries, ok, tenant, img + CKPT_HDR, h.blob_len,
			    arg);
	kv_pool_unlock(pool);
	if (blob)
		memcpy(blob, img + CKPT_HDR, h.blob_len);
	if (blob_len)
		*blob_len = h.blob_len;
	err = done;
out:
	free(img);
	free(frame);
	free(ok);
	return err;
}
