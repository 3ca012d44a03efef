/* SPDX-License-Identifier: MIT */
/*
 * kvmemd's configuration: the keys of /etc/kvmemd/kvmemd.conf, their
 * defaults and ranges, loading and validating a file, the run-time keys
 * that SIGHUP and `kvmemctl sysctl' may change, and the check that a reload
 * changed nothing that needs a restart; the tenants, which group client uids
 * for the prefix cache; the swap area, and where each pool's regions lie
 * in it: its data region (swap slots) and its checkpoint region (a copy of
 * its prefix cache that outlives the daemon).
 *
 * A struct kvmemd_config is a plain value: it holds no pointers and may be
 * copied with `='. Loading parses into a fresh struct and validates it
 * before the caller's struct is touched, so that a reload that fails leaves
 * the running configuration as it was. Nothing here keeps global state.
 *
 * Documentation/admin-guide/kvmemd.conf.md describes every key.
 */
#ifndef _KVMEMD_CONFIG_H
#define _KVMEMD_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "mm/mm.h"
#include "uapi/kvmem/kvmem.h"

/* The file read when no -c PATH is given. */
#define KVMEMD_CONFIG_PATH		"/etc/kvmemd/kvmemd.conf"
/* The default socket path (socket.path). */
#define KVMEMD_SOCKET_PATH		KVMEM_DEFAULT_SOCKET

/* Buffer sizes, NUL included: a socket path fits sockaddr_un.sun_path. */
#define KVMEMD_SOCKET_PATH_MAX		108
#define KVMEMD_GROUP_MAX		64
#define KVMEMD_POOL_NAME_MAX		32
#define KVMEMD_MAX_POOLS		16
/* The name of the built-in pool used when the file defines none. */
#define KVMEMD_DEFAULT_POOL		"default"
#define KVMEMD_MAX_TENANTS		32
#define KVMEMD_TENANT_NAME_MAX		32
#define KVMEMD_TENANT_UIDS_MAX		64
/* swap.path: a file or block device; no sun_path limit here. */
#define KVMEMD_SWAP_PATH_MAX		256
/* pool.NAME.model: a preset name; pool.NAME.hf_config: a path. */
#define KVMEMD_MODEL_NAME_MAX		32
#define KVMEMD_HF_CONFIG_MAX		256
/* pool.NAME.block_tokens when a model or hf_config gives the geometry. */
#define KVMEMD_MODEL_BLOCK_TOKENS	16

/* log.level */
#define KVMEMD_LOG_ERROR		0
#define KVMEMD_LOG_WARN			1
#define KVMEMD_LOG_INFO			2
#define KVMEMD_LOG_DEBUG		3

/* device.gpus = all */
#define KVMEMD_GPUS_ALL		UINT64_MAX
#define KVMEMD_MAX_GPUS		64

/* device.backend */
#define KVMEMD_BACKEND_AUTO		0	/* CUDA when usable, else CPU */
#define KVMEMD_BACKEND_CPU		1
#define KVMEMD_BACKEND_CUDA		2	/* parsed; refused at startup for now */

/* pool.NAME.prefix */
#define KVMEMD_PREFIX_TENANT		0	/* each tenant sees only its own cached prefixes */
#define KVMEMD_PREFIX_GLOBAL		1	/* all tenants share them */
#define KVMEMD_PREFIX_OFF		2	/* no prefix cache */

/* swap.engine: how the swap area is read and written */
#define KVMEMD_SWAP_AUTO		0	/* io_uring, else psync where it is refused */
#define KVMEMD_SWAP_IO_URING		1
#define KVMEMD_SWAP_PSYNC		2

/*
 * Tiers of struct kvmemd_pool_config.nr_frames: KV_TIER_DEVICE and
 * KV_TIER_HOST of mm/mm.h, then the swap tier.
 */
#define KVMEMD_NR_TIERS			3
#define KVMEMD_TIER_SWAP		2

/* Each region of the swap area (data or checkpoint) starts at a multiple of this. */
#define KVMEMD_SWAP_ALIGN		(1ull << 20)

/* kvmemd_config_load() flags. */
#define KVMEMD_CONFIG_MISSING_OK	0x1u	/* no such file: use the defaults */

/* Run-time keys, as bits of kvmemd_config_reload_diff()'s @changed. */
#define KVMEMD_CHANGED_LOG_LEVEL		0x1u
#define KVMEMD_CHANGED_MIN_FREE_KBYTES		0x2u
#define KVMEMD_CHANGED_WATERMARK_SCALE_FACTOR	0x4u
#define KVMEMD_CHANGED_RECLAIM_BATCH		0x8u
#define KVMEMD_CHANGED_TENANTS			0x10u	/* the tenant.* keys */
#define KVMEMD_CHANGED_STEP_WAIT_MS		0x20u
#define KVMEMD_CHANGED_VM	(KVMEMD_CHANGED_MIN_FREE_KBYTES |	\
				 KVMEMD_CHANGED_WATERMARK_SCALE_FACTOR |	\
				 KVMEMD_CHANGED_RECLAIM_BATCH)

/**
 * struct kvmemd_pool_config - one pool.NAME.* section
 * @name:       NAME: [a-z0-9_], 1 to KVMEMD_POOL_NAME_MAX - 1 bytes
 * @model:      pool.NAME.model, a preset of lib/models.c ("llama3-8b"), or
 *              "" when not set
 * @hf_config:  pool.NAME.hf_config, an absolute path to a Hugging Face
 *              config.json, or "" when not set; not both with @model
 * @geom:       pool.NAME.layers, .kv_heads, .head_dim, .block_tokens and
 *              .dtype (as KV_DTYPE_*: fp16, bf16, fp32, or the quantized
 *              int8, fp8 and int4, which need head_dim a multiple of
 *              KV_INT4_GROUP); kv_geometry_valid() holds. With
 *              @model or @hf_config, layers, kv_heads and head_dim are the
 *              model's (the keys may be given only with the same values),
 *              dtype is the model's unless pool.NAME.dtype is set, and
 *              block_tokens is KVMEMD_MODEL_BLOCK_TOKENS unless its key is
 * @device_mem: pool.NAME.device_mem, bytes of the device arena
 * @host_mem:   pool.NAME.host_mem, bytes of the host arena (0: none)
 * @swap_mem:   pool.NAME.swap_mem, bytes of the pool's data region of the
 *              swap area; optional, 0 (no swap tier) when not set; more
 *              than 0 needs swap.path. A pool with swap frames also has a
 *              checkpoint region (kvmemd_config_ckpt_offset())
 * @nr_frames:  frames per tier (KV_TIER_DEVICE, KV_TIER_HOST,
 *              KVMEMD_TIER_SWAP), derived: the sizes divided by
 *              kv_frame_bytes(), rounded down; device has at least 4 and
 *              the sum fits what kv_pool_create() takes
 * @prefix:     pool.NAME.prefix, KVMEMD_PREFIX_*: who shares the cached
 *              prefixes of the pool; optional, KVMEMD_PREFIX_TENANT when
 *              not set
 */
struct kvmemd_pool_config {
	char name[KVMEMD_POOL_NAME_MAX];
	char model[KVMEMD_MODEL_NAME_MAX];
	char hf_config[KVMEMD_HF_CONFIG_MAX];
	struct kv_geometry geom;
	u64 device_mem;
	u64 host_mem;
	u64 swap_mem;
	u32 nr_frames[KVMEMD_NR_TIERS];
	u32 prefix;
	u32 gpu;
};

/**
 * struct kvmemd_tenant_config - one tenant.NAME key
 * @name:    NAME: [a-z0-9_], 1 to KVMEMD_TENANT_NAME_MAX - 1 bytes, starting
 *           with a letter or a digit
 * @nr_uids: entries of @uids, 1 to KVMEMD_TENANT_UIDS_MAX
 * @uids:    the uids whose clients belong to this tenant, in the order of
 *           the file; none twice, none in another tenant; unused entries 0
 */
struct kvmemd_tenant_config {
	char name[KVMEMD_TENANT_NAME_MAX];
	u32 nr_uids;
	u32 uids[KVMEMD_TENANT_UIDS_MAX];
};

/**
 * struct kvmemd_config - everything kvmemd.conf sets
 * @socket_path:  socket.path, absolute, at most 107 bytes
 * @socket_mode:  socket.mode, permission bits of the socket, <= 07777
 * @socket_group: socket.group, group owning the socket; "" for the
 *                daemon's own group
 * @admin_group:  admin.group, group allowed admin operations besides root;
 *                "" for root only
 * @log_level:    log.level, KVMEMD_LOG_* (run time)
 * @backend:      device.backend, KVMEMD_BACKEND_*
 * @gpus:         device.gpus: a bit per GPU ordinal the daemon may use;
 *                KVMEMD_GPUS_ALL for "all"
 * @swap_path:    swap.path, the swap file or block device, absolute, at
 *                most KVMEMD_SWAP_PATH_MAX - 1 bytes; "" for no swap area
 * @swap_engine:  swap.engine, KVMEMD_SWAP_*
 * @swap_persist: swap.persist, 0 or 1: 1 writes a checkpoint of each
 *                pool's prefix cache to its checkpoint region on a clean
 *                SIGTERM and restores it at start; 1 needs swap.path
 * @vm:           vm.min_free_kbytes, vm.watermark_scale_factor and
 *                vm.reclaim_batch, applied to every pool (run time)
 * @step_wait_ms: step.wait_ms: how long a STEP that found no room may
 *                wait for other clients to release frames (run time)
 * @nr_pools:     pools in @pools, 1 to KVMEMD_MAX_POOLS
 * @pools:        the pools, in the order their first key appears
 * @nr_tenants:   tenants in @tenants, 0 to KVMEMD_MAX_TENANTS
 * @tenants:      the tenant.NAME keys, in file order (run time): a uid in
 *                none of them is a tenant of its own
 *
 * Group names are checked for form only; the daemon resolves them.
 */
struct kvmemd_config {
	char socket_path[KVMEMD_SOCKET_PATH_MAX];
	u32 socket_mode;
	char socket_group[KVMEMD_GROUP_MAX];
	char admin_group[KVMEMD_GROUP_MAX];
	u32 log_level;
	u32 backend;
	u64 gpus;
	char swap_path[KVMEMD_SWAP_PATH_MAX];
	u32 swap_engine;
	u32 swap_persist;
	struct kv_vm_tunables vm;
	u32 step_wait_ms;
	u32 nr_pools;
	struct kvmemd_pool_config pools[KVMEMD_MAX_POOLS];
	u32 nr_tenants;
	struct kvmemd_tenant_config tenants[KVMEMD_MAX_TENANTS];
};

void kvmemd_config_defaults(struct kvmemd_config *cfg);
int kvmemd_config_load(struct kvmemd_config *out, const char *path,
		       unsigned int flags, char *err, size_t errlen);
int kvmemd_config_load_string(struct kvmemd_config *out, const char *name,
			      const char *text, char *err, size_t errlen);
int kvmemd_config_get(const struct kvmemd_config *cfg, const char *key,
		      char *buf, size_t len);
int kvmemd_config_set(struct kvmemd_config *cfg, const char *key,
		      const char *value, char *err, size_t errlen);
int kvmemd_config_check(const char *key, const char *value, char *err, size_t errlen);
int kvmemd_config_reload_diff(const struct kvmemd_config *old,
			      const struct kvmemd_config *new, u32 *changed,
			      char *err, size_t errlen);
void kvmemd_config_vm(const struct kvmemd_config *cfg, struct kv_vm_tunables *vm);
const struct kvmemd_pool_config *
kvmemd_config_pool(const struct kvmemd_config *cfg, const char *name);
int kvmemd_config_tenant(const struct kvmemd_config *cfg, u32 uid);
u64 kvmemd_config_swap_offset(const struct kvmemd_config *cfg, u32 pool_index);
u64 kvmemd_config_ckpt_offset(const struct kvmemd_config *cfg, u32 pool_index);
u64 kvmemd_config_ckpt_size(const struct kvmemd_config *cfg, u32 pool_index);
u64 kvmemd_config_swap_size(const struct kvmemd_config *cfg);
int kvmemd_config_print(const struct kvmemd_config *cfg, FILE *f);

#endif /* _KVMEMD_CONFIG_H */
