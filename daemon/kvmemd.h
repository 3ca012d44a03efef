/* SPDX-License-Identifier: MIT */
/*
 * kvmemd internals: the daemon's state, passed to every function (no
 * global state). One thread runs the event loop; the mm/ kvswapd threads
 * run beside it.
 */
#ifndef _KVMEMD_H
#define _KVMEMD_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>
#include <lib/idr.h>
#include <lib/list.h>
#include <lib/cudrv.h>
#include <lib/kvsize.h>
#include <mm/mm.h>
#include <uapi/kvmem/kvmem.h>
#include "config.h"

struct hwloc_topology;

#define KVMEMD_MAX_CLIENTS	4096
#define KVMEMD_MAX_PER_UID	1024	/* connections per uid, root excepted */
#define KVMEMD_HELLO_TIMEOUT_MS	5000	/* a connection must say HELLO by then */
#define KVMEMD_MAX_SEQS		(1u << 16)	/* per client */
#define KVMEMD_TENANT_NAMED	0xffff0000u	/* tenant number of the first name */
#define KVMEMD_TENANT_IDS	1024		/* names numbered in a daemon's life */

/* Log levels, most severe first (log.level). */
#define KVLOG_ERR	KVMEMD_LOG_ERROR
#define KVLOG_WARN	KVMEMD_LOG_WARN
#define KVLOG_INFO	KVMEMD_LOG_INFO
#define KVLOG_DEBUG	KVMEMD_LOG_DEBUG

/**
 * struct kvmemd_pool - a pool served by the daemon
 * @name:      name from the config
 * @pool:      the mm pool
 * @handle:    its number in the protocol (1-based)
 * @owner:     per device frame, the client whose reserve holds it, or 0
 * @nr_frames: device frames (entries of @owner)
 * @cuda:      the CUDA backend's parameters (they live as long as the pool)
 * @place:     its NUMA placement, from the topology (topology.c)
 * @placed:    @place was found and given to kv_pool_create()
 * @seqlen:    lengths of its sequences when they were freed (by SEQ_FREE
 *             or with their client), for KVMEM_STATS_SEQLEN
 */
struct kvmemd_pool {
	char name[KVMEM_NAME_MAX];
	struct kv_pool *pool;
	u32 handle;
	u64 *owner;
	u32 nr_frames;
	struct kv_cuda_params cuda;
	struct kv_placement place;
	bool placed;
	struct kv_seqlen_hist seqlen;
};

/**
 * struct kvmemd_seq - a client's sequence
 * @seq:         the mm sequence
 * @pool:        the daemon pool it belongs to
 * @step_tokens: the tokens the earlier entries of STEP check @step
 *               append to the sequence
 * @step:        the client's STEP check (kvmemd_client.nr_step_checks)
 *               that @step_tokens counts for
 */
struct kvmemd_seq {
	struct kv_seq *seq;
	struct kvmemd_pool *pool;
	u64 step_tokens;
	u64 step;
};

/**
 * struct kvmemd_client - one connection
 * @node:    link on kvmemd.clients
 * @fd:      the connection
 * @id:      client number, shown by kvmemctl clients
 * @pid:     peer pid (SO_PEERCRED)
 * @uid:     peer uid
 * @gid:     peer gid
 * @admin:   may use admin operations
 * @hello:   HELLO done
 * @seqs:    its sequences, by handle
 * @nr_reqs: requests served
 * @reserved: frames in its reserve, per pool
 * @since_ms: when it connected (CLOCK_MONOTONIC)
 * @wait_node: link on kvmemd.waiters while a STEP of it waits (wait.c)
 * @wait_msg: that STEP as received, or NULL
 * @wait_len: its length
 * @wait_until: when it stops waiting (CLOCK_MONOTONIC, ms)
 * @nr_step_checks: STEP requests checked, tries of a waiting one included
 *               (the number kvmemd_seq.step refers to)
 */
struct kvmemd_client {
	struct list_head node;
	int fd;
	u64 id;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	bool admin;
	bool hello;
	struct idr seqs;
	u64 nr_reqs;
	u32 reserved[KVMEMD_MAX_POOLS];
	u64 since_ms;
	struct list_head wait_node;
	void *wait_msg;
	size_t wait_len;
	u64 wait_until;
	u64 nr_step_checks;
};

/**
 * struct kvmemd - the daemon
 * @cfg:         configuration in effect
 * @cfg_path:    file it came from (NULL: built-in defaults)
 * @cfg_explicit: @cfg_path was given with -c
 * @pools:       pools, in config order
 * @nr_pools:    entries of @pools
 * @listen_fd:   the listening socket
 * @epoll_fd:    the event loop
 * @signal_fd:   SIGHUP, SIGTERM, SIGINT
 * @timer_fd:    once a second: connections that never said HELLO
 * @lock_fd:     flock()ed "<socket.path>.lock", held while the daemon runs
 * @swap_fd:     the swap area (swap.path), O_DIRECT, or -1
 * @clients:     connected clients
 * @nr_clients:  entries on @clients
 * @waiters:     clients whose STEP waits for frames, oldest first (wait.c)
 * @nr_waiters:  entries on @waiters
 * @wake:        a request or a departure may have released frames: the
 *               waiting STEPs are tried again after this round of events
 * @next_client: id of the next client
 * @admin_gid:   gid of admin.group, or (gid_t)-1
 * @sock_override: -s SOCKET, kept over reloads
 * @verbose:     -v, kept over reloads
 * @spare_fd:    a descriptor held back to refuse connections when out of them
 * @listen_paused: not taking connections until a client goes
 * @reported:    the error that stops start-up was printed already
 * @stop:        leave the event loop
 * @clean_stop:  the event loop ended without an error (checkpoint at exit)
 * @tenant_names: every tenant.NAME seen since start, numbered by position
 *               here, so that a reload that reorders or drops names never
 *               gives one tenant's cached prefixes to another
 * @nr_tenant_names: entries of @tenant_names
 * @backend:     the device tier's backend in use, KV_BACKEND_*
 * @cuda:        the CUDA driver, loaded when @backend is KV_BACKEND_CUDA
 * @topo:        the machine's topology (hwloc), loaded with the pools; NULL
 *               where hwloc could not load it (no placement then)
 * @buf:         receive buffer, KVMEM_MSG_MAX + 1 bytes
 * @out:         reply buffer, KVMEM_MSG_MAX bytes
 */
struct kvmemd {
	struct kvmemd_config cfg;
	const char *cfg_path;
	bool cfg_explicit;
	struct kvmemd_pool *pools;
	u32 nr_pools;
	int listen_fd;
	int epoll_fd;
	int signal_fd;
	int timer_fd;
	int lock_fd;
	int swap_fd;
	struct list_head clients;
	u32 nr_clients;
	struct list_head waiters;
	u32 nr_waiters;
	bool wake;
	u64 next_client;
	gid_t admin_gid;
	const char *sock_override;
	bool verbose;
	int spare_fd;
	bool listen_paused;
	bool reported;
	bool stop;
	bool clean_stop;
	char tenant_names[KVMEMD_TENANT_IDS][KVMEMD_TENANT_NAME_MAX];
	u32 nr_tenant_names;
	u32 backend;
	struct cudrv cuda;
	struct hwloc_topology *topo;
	char *buf;
	char *out;
};

/* kvmemd.c */
void kvmemd_config_overrides(struct kvmemd *d, struct kvmemd_config *cfg);

/* log.c */
void kvlog(struct kvmemd *d, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* backend.c */
int kvmemd_backend_open(struct kvmemd *d);
void kvmemd_backend_close(struct kvmemd *d);

/* topology.c */
void kvmemd_topology_open(struct kvmemd *d);
void kvmemd_topology_close(struct kvmemd *d);
int kvmemd_topology_place(struct kvmemd *d, u32 i, struct kv_placement *pl);
void kvmemd_topology_text(struct kvmemd *d, u32 pool, FILE *f);

/* pools.c */
int kvmemd_pools_create(struct kvmemd *d);
void kvmemd_pools_destroy(struct kvmemd *d);
struct kvmemd_pool *kvmemd_pool_get(struct kvmemd *d, u32 handle);
int kvmemd_apply_tunables(struct kvmemd *d);

/* server.c */
int kvmemd_listen(struct kvmemd *d);
int kvmemd_signals_block(struct kvmemd *d);
void kvmemd_listen_pause(struct kvmemd *d, bool pause);
int kvmemd_run(struct kvmemd *d);
void kvmemd_notify(struct kvmemd *d, const char *state);

/* client.c */
int kvmemd_client_accept(struct kvmemd *d);
void kvmemd_client_input(struct kvmemd *d, struct kvmemd_client *c);
void kvmemd_client_event(struct kvmemd *d, struct kvmemd_client *c, u32 events);
void kvmemd_client_close(struct kvmemd *d, struct kvmemd_client *c);
void kvmemd_clients_expire(struct kvmemd *d);
u64 kvmemd_now_ms(void);
int kvmemd_client_send(struct kvmemd *d, struct kvmemd_client *c, const void *msg,
		       size_t len, const int *fds, u32 nr_fds);

/* ops.c, step.c */
int kvmemd_op_step(struct kvmemd *d, struct kvmemd_client *c, const void *b, size_t blen,
		   char *out, size_t room, size_t *out_len);
ssize_t kvmemd_dispatch(struct kvmemd *d, struct kvmemd_client *c,
			const struct kvmem_hdr *req, size_t len, const int **fds, u32 *nr_fds);

/* wait.c */
bool kvmemd_wait_step(struct kvmemd *d, struct kvmemd_client *c, const struct kvmem_hdr *req,
		      size_t len);
void kvmemd_wait_drop(struct kvmemd *d, struct kvmemd_client *c);
void kvmemd_wait_run(struct kvmemd *d);
int kvmemd_wait_timeout(struct kvmemd *d);
void kvmemd_wait_release(struct kvmemd *d, u16 op);

/* reserve.c */
int kvmemd_reserve_init(struct kvmemd_pool *p, u32 nr_frames);
bool kvmemd_reserve_owns(struct kvmemd_pool *p, struct kvmemd_client *c, const u32 *frames,
			 u32 n);
void kvmemd_reserve_used(struct kvmemd_pool *p, struct kvmemd_client *c, const u32 *frames,
			 u32 n);
void kvmemd_reserve_drop(struct kvmemd *d, struct kvmemd_client *c);
int kvmemd_op_reserve(struct kvmemd *d, struct kvmemd_client *c, const void *b, size_t blen,
		      char *out, size_t room, size_t *out_len);

/* admit.c */
int kvmemd_op_admit(struct kvmemd *d, struct kvmemd_client *c, const void *b, size_t blen,
		    char *out, size_t room, size_t *out_len);

/* stats.c */
int kvmemd_stats_text(struct kvmemd *d, u32 what, u32 pool, u32 tenant, char *buf,
		      size_t len);

/* checkpoint.c */
int kvmemd_checkpoint(struct kvmemd *d, u32 pool);
void kvmemd_restore(struct kvmemd *d);
int kvmemd_op_checkpoint(struct kvmemd *d, struct kvmemd_client *c, const void *b, size_t blen);

/* prefix.c */
u32 kvmemd_tenant(struct kvmemd *d, uid_t uid);
u32 kvmemd_tenant_by_name(struct kvmemd *d, const char *name);
void kvmemd_tenant_name(u32 tenant, char *buf, size_t len, void *arg);
int kvmemd_op_prefix_match(struct kvmemd *d, struct kvmemd_client *c, const void *b,
			   size_t blen, char *out, size_t room, size_t *out_len);
int kvmemd_op_prefix_pin(struct kvmemd *d, struct kvmemd_client *c, const void *b,
			 size_t blen);
int kvmemd_clients_text(struct kvmemd *d, char *buf, size_t len);

#endif /* _KVMEMD_H */
