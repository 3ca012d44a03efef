// SPDX-License-Identifier: MIT
/*
 * daemon/config.c - kvmemd's configuration file.
 *
 * Every key is a row of a table: its name, how its value is parsed and
 * printed, its range, where it is stored, and whether it may change at run
 * time. Loading, get, set, printing and the reload check all walk the same
 * tables, so a key is added in one place. Pool keys (pool.NAME.FIELD) have
 * a table of their own, indexed by FIELD and stored in a struct
 * kvmemd_pool_config. Tenant keys (tenant.NAME = UID,UID...) are a family
 * of their own: one struct kvmemd_tenant_config each, in file order. The
 * A pool's geometry comes from its keys, or from a model: a preset
 * (pool.NAME.model, lib/models.c) or a Hugging Face config.json
 * (pool.NAME.hf_config), read when the config is validated; the geometry
 * keys may then be left out (pool_model_apply()). The
 * swap area (swap.*) is global; each pool with swap frames has a data
 * region of it, laid out in pool order (kvmemd_config_swap_offset()), and,
 * after all the data regions, a checkpoint region, in the same order
 * (kvmemd_config_ckpt_offset()).
 *
 * Loading parses into a struct config_parse on the stack (a fresh config
 * plus the line each key was set on, for duplicate and missing-key
 * messages), validates it, and only then copies the config out.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config.h"
#include "lib/config.h"
#include "lib/kvsize.h"
#include "lib/models.h"

/* The most frames kv_pool_create() takes in a pool, all tiers together. */
#define POOL_FRAMES_MAX		(UINT32_MAX / 2)
/* The fewest device frames a pool may have. */
#define POOL_DEVICE_FRAMES_MIN	4
/* The end of the swap area: offsets are off_t. */
#define SWAP_END_MAX		((u64)INT64_MAX)
/* A formatted value, NUL included: the longest is a path. */
#define VALUE_MAX		(KVMEMD_SWAP_PATH_MAX + 8)

_Static_assert(KVMEMD_SWAP_PATH_MAX >= KVMEMD_SOCKET_PATH_MAX &&
	       KVMEMD_SWAP_PATH_MAX >= KVMEMD_HF_CONFIG_MAX,
	       "VALUE_MAX must hold every path");
_Static_assert(KVMEMD_MODEL_NAME_MAX >= KV_MODEL_NAME_MAX, "a preset name fits pool.NAME.model");
_Static_assert(KV_TIER_DEVICE < KVMEMD_TIER_SWAP && KV_TIER_HOST < KVMEMD_TIER_SWAP &&
	       KVMEMD_TIER_SWAP < KVMEMD_NR_TIERS, "nr_frames holds every tier");
#if defined(KV_TIER_SWAP) && KV_TIER_SWAP != KVMEMD_TIER_SWAP
#error "KVMEMD_TIER_SWAP differs from the mm's KV_TIER_SWAP"
#endif
#if defined(KV_SWAP_PSYNC) && (KV_SWAP_AUTO != KVMEMD_SWAP_AUTO ||		\
	KV_SWAP_IO_URING != KVMEMD_SWAP_IO_URING || KV_SWAP_PSYNC != KVMEMD_SWAP_PSYNC)
#error "KVMEMD_SWAP_* differ from the mm's KV_SWAP_*"
#endif

enum key_type {
	KEY_UINT,	/* kv_parse_uint() within [min, max] */
	KEY_SIZE,	/* kv_parse_size() within [min, max] */
	KEY_MODE,	/* kv_parse_mode() */
	KEY_CHOICE,	/* kv_parse_choice() of @choices, stored as @values[i] */
	KEY_PATH,	/* an absolute path that fits the buffer */
	KEY_GROUP,	/* a group name that fits the buffer */
	KEY_GPUS,	/* "all" or a list of GPU ordinals: a bit mask */
	KEY_MODEL,	/* the name of a preset of lib/models.c */
};

#define KEY_RUNTIME	0x1u	/* may change without a restart */
#define KEY_OPTIONAL	0x2u	/* a pool key that may be left out: @def */
#define KEY_GEOM	0x4u	/* a pool geometry key: may be left out with a model */
#define KEY_FACT	0x8u	/* ... and, when given with one, must agree with it */

/**
 * struct config_key - one configuration key
 * @name:    the key; for a pool key, the FIELD of pool.NAME.FIELD
 * @type:    KEY_*: how the value is parsed and printed
 * @flags:   KEY_RUNTIME, KEY_OPTIONAL, KEY_GEOM, KEY_FACT
 * @off:     offset of the field in struct kvmemd_config (or, for a pool
 *           key, in struct kvmemd_pool_config)
 * @size:    size of the field: 4 or 8 for numbers, the buffer for strings
 * @min:     smallest value (KEY_UINT, KEY_SIZE)
 * @max:     largest value (KEY_UINT, KEY_SIZE)
 * @choices: the names of a KEY_CHOICE, NULL-terminated
 * @values:  the value stored for each of @choices; NULL for its index
 * @changed: the KVMEMD_CHANGED_* bit of a run-time key
 * @def:     the value of a KEY_OPTIONAL pool key left out (as stored)
 */
struct config_key {
	const char *name;
	enum key_type type;
	unsigned int flags;
	size_t off;
	size_t size;
	u64 min;
	u64 max;
	const char *const *choices;
	const u32 *values;
	u32 changed;
	u64 def;
};

#define CFG_FIELD(f)	.off = offsetof(struct kvmemd_config, f),		\
			.size = sizeof(((struct kvmemd_config *)0)->f)
#define POOL_FIELD(f)	.off = offsetof(struct kvmemd_pool_config, f),	\
			.size = sizeof(((struct kvmemd_pool_config *)0)->f)

static const char *const log_level_names[] = {
	[KVMEMD_LOG_ERROR] = "error",
	[KVMEMD_LOG_WARN] = "warn",
	[KVMEMD_LOG_INFO] = "info",
	[KVMEMD_LOG_DEBUG] = "debug",
	NULL
};

static const char *const backend_names[] = {
	[KVMEMD_BACKEND_AUTO] = "auto",
	[KVMEMD_BACKEND_CPU] = "cpu",
	[KVMEMD_BACKEND_CUDA] = "cuda",
	NULL
};

static const char *const swap_engine_names[] = {
	[KVMEMD_SWAP_AUTO] = "auto",
	[KVMEMD_SWAP_IO_URING] = "io_uring",
	[KVMEMD_SWAP_PSYNC] = "psync",
	NULL
};

/* The names lib/kvsize.c and kvmemctl estimate use too. */
static const char *const dtype_names[] = {
	"fp16", "bf16", "fp32", "int8", "fp8", "int4", NULL
};
static const u32 dtype_values[] = {
	KV_DTYPE_FP16, KV_DTYPE_BF16, KV_DTYPE_FP32, KV_DTYPE_INT8, KV_DTYPE_FP8_E4M3,
	KV_DTYPE_INT4
};
_Static_assert(sizeof(dtype_values) / sizeof(dtype_values[0]) == KV_SIZE_NR_DTYPES &&
	       sizeof(dtype_names) / sizeof(dtype_names[0]) == KV_SIZE_NR_DTYPES + 1,
	       "a name for each pool dtype");

static const char *const prefix_names[] = {
	[KVMEMD_PREFIX_TENANT] = "tenant",
	[KVMEMD_PREFIX_GLOBAL] = "global",
	[KVMEMD_PREFIX_OFF] = "off",
	NULL
};

static const struct config_key config_keys[] = {
	{ "socket.path", KEY_PATH, 0, CFG_FIELD(socket_path) },
	{ "socket.mode", KEY_MODE, 0, CFG_FIELD(socket_mode) },
	{ "socket.group", KEY_GROUP, 0, CFG_FIELD(socket_group) },
	{ "admin.group", KEY_GROUP, 0, CFG_FIELD(admin_group) },
	{ "log.level", KEY_CHOICE, KEY_RUNTIME, CFG_FIELD(log_level),
	  .choices = log_level_names, .changed = KVMEMD_CHANGED_LOG_LEVEL },
	{ "device.backend", KEY_CHOICE, 0, CFG_FIELD(backend),
	  .choices = backend_names },
	{ "device.gpus", KEY_GPUS, 0, CFG_FIELD(gpus) },
	{ "swap.path", KEY_PATH, 0, CFG_FIELD(swap_path) },
	{ "swap.engine", KEY_CHOICE, 0, CFG_FIELD(swap_engine),
	  .choices = swap_engine_names },
	{ "swap.persist", KEY_UINT, 0, CFG_FIELD(swap_persist), .min = 0, .max = 1 },
	{ "vm.min_free_kbytes", KEY_UINT, KEY_RUNTIME, CFG_FIELD(vm.min_free_kbytes),
	  .min = 0, .max = 1ull << 40, .changed = KVMEMD_CHANGED_MIN_FREE_KBYTES },
	{ "vm.watermark_scale_factor", KEY_UINT, KEY_RUNTIME,
	  CFG_FIELD(vm.watermark_scale_factor), .min = 1, .max = 3000,
	  .changed = KVMEMD_CHANGED_WATERMARK_SCALE_FACTOR },
	{ "vm.reclaim_batch", KEY_UINT, KEY_RUNTIME, CFG_FIELD(vm.reclaim_batch),
	  .min = 1, .max = 256, .changed = KVMEMD_CHANGED_RECLAIM_BATCH },
	{ "step.wait_ms", KEY_UINT, KEY_RUNTIME, CFG_FIELD(step_wait_ms),
	  .min = 0, .max = 10000, .changed = KVMEMD_CHANGED_STEP_WAIT_MS },
};
#define NR_KEYS		(sizeof(config_keys) / sizeof(config_keys[0]))

static const struct config_key pool_keys[] = {
	{ "model", KEY_MODEL, KEY_OPTIONAL, POOL_FIELD(model) },
	{ "hf_config", KEY_PATH, KEY_OPTIONAL, POOL_FIELD(hf_config) },
	{ "layers", KEY_UINT, KEY_GEOM | KEY_FACT, POOL_FIELD(geom.layers),
	  .min = 1, .max = KV_MAX_LAYERS },
	{ "kv_heads", KEY_UINT, KEY_GEOM | KEY_FACT, POOL_FIELD(geom.kv_heads),
	  .min = 1, .max = KV_MAX_KV_HEADS },
	{ "head_dim", KEY_UINT, KEY_GEOM | KEY_FACT, POOL_FIELD(geom.head_dim),
	  .min = 1, .max = KV_MAX_HEAD_DIM },
	{ "block_tokens", KEY_UINT, KEY_GEOM, POOL_FIELD(geom.block_tokens),
	  .min = 1, .max = KV_MAX_BLOCK_TOKENS },
	{ "dtype", KEY_CHOICE, KEY_GEOM, POOL_FIELD(geom.dtype),
	  .choices = dtype_names, .values = dtype_values },
	{ "device_mem", KEY_SIZE, 0, POOL_FIELD(device_mem),
	  .min = 0, .max = UINT64_MAX },
	{ "host_mem", KEY_SIZE, 0, POOL_FIELD(host_mem),
	  .min = 0, .max = UINT64_MAX },
	{ "prefix", KEY_CHOICE, KEY_OPTIONAL, POOL_FIELD(prefix),
	  .choices = prefix_names, .def = KVMEMD_PREFIX_TENANT },
	{ "swap_mem", KEY_SIZE, KEY_OPTIONAL, POOL_FIELD(swap_mem),
	  .min = 0, .max = UINT64_MAX, .def = 0 },
	{ "gpu", KEY_UINT, KEY_OPTIONAL, POOL_FIELD(gpu),
	  .min = 0, .max = KVMEMD_MAX_GPUS - 1, .def = 0 },
};
#define NR_POOL_KEYS	(sizeof(pool_keys) / sizeof(pool_keys[0]))
/* Indexes in pool_keys[]. */
#define POOL_KEY_MODEL		0
#define POOL_KEY_HF_CONFIG	1
#define POOL_KEY_HEAD_DIM	4
#define POOL_KEY_DTYPE		6
#define POOL_KEY_DEVICE_MEM	7
#define POOL_KEY_HOST_MEM	8
#define POOL_KEY_SWAP_MEM	10
#define POOL_KEY_GPU		11

/* The longest uid list of a tenant key, as printed, NUL included. */
#define TENANT_VALUE_MAX	(KVMEMD_TENANT_UIDS_MAX * 11)
/* The largest uid; (uid_t)-1 is no uid. */
#define TENANT_UID_MAX		(UINT32_MAX - 1)
#define TENANT_PREFIX		"tenant."
#define TENANT_PREFIX_LEN	(sizeof(TENANT_PREFIX) - 1)

/**
 * struct config_parse - a config being loaded, and where its keys were set
 * @cfg:        the config; starts from the defaults, with no pools
 * @file:       the file name, for messages
 * @key_line:   line of each of config_keys[], 0 when not set
 * @pool_line:  line of each of pool_keys[] per pool, 0 when not set
 * @pool_first: line of the first key of each pool
 * @tenant_line: line of each tenant key
 */
struct config_parse {
	struct kvmemd_config cfg;
	const char *file;
	unsigned int key_line[NR_KEYS];
	unsigned int pool_line[KVMEMD_MAX_POOLS][NR_POOL_KEYS];
	unsigned int pool_first[KVMEMD_MAX_POOLS];
	unsigned int tenant_line[KVMEMD_MAX_TENANTS];
};

/* ---- one value --------------------------------------------------------- */

/* Is @k stored as a string (rather than a number)? */
static bool key_is_string(const struct config_key *k)
{
	return k->type == KEY_PATH || k->type == KEY_GROUP || k->type == KEY_MODEL;
}

static u64 field_get(const struct config_key *k, const void *base)
{
	const char *p = (const char *)base + k->off;
	u32 v32;
	u64 v64;

	if (k->size == sizeof(u64)) {
		memcpy(&v64, p, sizeof(v64));
		return v64;
	}
	memcpy(&v32, p, sizeof(v32));
	return v32;
}

static void field_set(const struct config_key *k, void *base, u64 v)
{
	char *p = (char *)base + k->off;
	u32 v32 = (u32)v;

	if (k->size == sizeof(u64))
		memcpy(p, &v, sizeof(v));
	else
		memcpy(p, &v32, sizeof(v32));
}

static void choices_list(const struct config_key *k, char *buf, size_t len)
{
	size_t n = 0;
	int i;

	buf[0] = '\0';
	for (i = 0; k->choices[i] && n < len; i++)
		n += snprintf(buf + n, len - n, "%s%s", i ? ", " : "", k->choices[i]);
}

static int number_error(const struct config_key *k, const char *value, int ret,
			char *msg, size_t len)
{
	if (ret == -EINVAL)
		snprintf(msg, len, "%s: '%s' is not %s", k->name, value,
			 k->type == KEY_SIZE ?
			 "a size (a number, then optionally K, M, G or T)" :
			 "a decimal or 0x hexadecimal number");
	else if (k->max == UINT64_MAX)
		snprintf(msg, len, "%s: '%s' is too large", k->name, value);
	else
		snprintf(msg, len, "%s: '%s' is out of range (%llu..%llu)", k->name,
			 value, (unsigned long long)k->min, (unsigned long long)k->max);
	return ret;
}

static int choice_parse(const struct config_key *k, const char *value, u64 *v,
			char *msg, size_t len)
{
	char list[128];
	unsigned int i;

	if (kv_parse_choice(value, k->choices, &i)) {
		choices_list(k, list, sizeof(list));
		snprintf(msg, len, "%s: '%s' is not one of: %s", k->name, value, list);
		return -EINVAL;
	}
	*v = k->values ? k->values[i] : i;
	return 0;
}

static int mode_parse(const struct config_key *k, const char *value, u64 *v,
		      char *msg, size_t len)
{
	unsigned int mode;
	int ret;

	ret = kv_parse_mode(value, &mode);
	if (ret == -EINVAL)
		snprintf(msg, len, "%s: '%s' is not an octal mode", k->name, value);
	else if (ret)
		snprintf(msg, len, "%s: '%s' is out of range (0..07777)", k->name, value);
	*v = mode;
	return ret;
}

/* "all", or ordinals 0..63 separated by commas, none twice. */
static int gpus_parse(const struct config_key *k, const char *value, u64 *v,
		      char *msg, size_t len)
{
	const char *p = value;
	unsigned long g;
	u64 mask = 0;
	char *end;

	if (!strcmp(value, "all")) {
		*v = KVMEMD_GPUS_ALL;
		return 0;
	}
	for (;;) {
		if (*p < '0' || *p > '9')
			goto bad;
		errno = 0;
		g = strtoul(p, &end, 10);
		if (errno || g >= KVMEMD_MAX_GPUS || (mask & (1ull << g)))
			goto bad;
		mask |= 1ull << g;
		if (!*end)
			break;
		if (*end != ',')
			goto bad;
		p = end + 1;
	}
	*v = mask;
	return 0;

bad:
	snprintf(msg, len, "%s: '%s' is not \"all\" or a list of distinct GPU numbers 0..%d",
		 k->name, value, KVMEMD_MAX_GPUS - 1);
	return -EINVAL;
}

static int gpus_format(u64 v, char *buf, size_t len)
{
	size_t at = 0;
	int g, n;

	if (v == KVMEMD_GPUS_ALL)
		return snprintf(buf, len, "all") >= (int)len ? -ERANGE : 0;
	buf[0] = '\0';
	for (g = 0; g < KVMEMD_MAX_GPUS; g++) {
		if (!(v & (1ull << g)))
			continue;
		n = snprintf(buf + at, len - at, "%s%d", at ? "," : "", g);
		if (n < 0 || (size_t)n >= len - at)
			return -ERANGE;
		at += n;
	}
	return 0;
}

static int number_parse(const struct config_key *k, const char *value,
			char *msg, size_t len, u64 *v)
{
	int ret;

	switch (k->type) {
	case KEY_UINT:
		ret = kv_parse_uint(value, k->min, k->max, v);
		break;
	case KEY_SIZE:
		ret = kv_parse_size(value, k->min, k->max, v);
		break;
	case KEY_MODE:
		return mode_parse(k, value, v, msg, len);
	case KEY_GPUS:
		return gpus_parse(k, value, v, msg, len);
	default:
		return choice_parse(k, value, v, msg, len);
	}
	return ret ? number_error(k, value, ret, msg, len) : 0;
}

static bool group_char_ok(char c, bool first)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '_' || c == '.')
		return true;
	return c == '-' && !first;
}

static int string_check(const struct config_key *k, const char *value,
			char *msg, size_t len)
{
	const char *p;

	if (k->type == KEY_MODEL && !kv_model_find(value)) {
		snprintf(msg, len, "%s: unknown model '%s' (kvmemctl estimate --list shows the presets)",
			 k->name, value);
		return -EINVAL;
	}
	if (strlen(value) >= k->size) {
		snprintf(msg, len, "%s: longer than %zu bytes", k->name, k->size - 1);
		return -ENAMETOOLONG;
	}
	if (k->type == KEY_MODEL)
		return 0;
	if (k->type == KEY_PATH) {
		if (value[0] == '/')
			return 0;
		snprintf(msg, len, "%s: '%s' is not an absolute path", k->name, value);
		return -EINVAL;
	}
	for (p = value; *p; p++) {
		if (!group_char_ok(*p, p == value)) {
			snprintf(msg, len, "%s: '%s' is not a valid group name",
				 k->name, value);
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * Parse @value for key @k and store it into @base (a struct kvmemd_config
 * or struct kvmemd_pool_config). On error, write "KEY: reason" into @msg
 * and leave @base as it was.
 */
static int key_store(const struct config_key *k, void *base, const char *value,
		     char *msg, size_t len)
{
	u64 v;
	int ret;

	if (key_is_string(k)) {
		ret = string_check(k, value, msg, len);
		if (!ret)
			snprintf((char *)base + k->off, k->size, "%s", value);
		return ret;
	}
	ret = number_parse(k, value, msg, len, &v);
	if (!ret)
		field_set(k, base, v);
	return ret;
}

static const char *choice_name(const struct config_key *k, u64 v)
{
	unsigned int i;

	for (i = 0; k->choices[i]; i++) {
		if ((k->values ? k->values[i] : i) == v)
			return k->choices[i];
	}
	return "?";
}

/* Write the value of key @k in @base as kv_config_parse_*() reads it back. */
static int key_format(const struct config_key *k, const void *base,
		      char *buf, size_t len)
{
	u64 v = 0;
	int n;

	if (!key_is_string(k))
		v = field_get(k, base);
	switch (k->type) {
	case KEY_PATH:
	case KEY_GROUP:
	case KEY_MODEL:
		n = snprintf(buf, len, "%s", (const char *)base + k->off);
		break;
	case KEY_UINT:
		n = snprintf(buf, len, "%llu", (unsigned long long)v);
		break;
	case KEY_SIZE:
		return kv_format_size(v, buf, len);
	case KEY_MODE:
		n = snprintf(buf, len, "%04llo", (unsigned long long)v);
		break;
	case KEY_GPUS:
		return gpus_format(v, buf, len);
	default:
		n = snprintf(buf, len, "%s", choice_name(k, v));
		break;
	}
	return n < 0 || (size_t)n >= len ? -ERANGE : 0;
}

/* ---- key names --------------------------------------------------------- */

static const struct config_key *key_find(const char *name)
{
	size_t i;

	for (i = 0; i < NR_KEYS; i++) {
		if (!strcmp(config_keys[i].name, name))
			return &config_keys[i];
	}
	return NULL;
}

/*
 * Split "pool.NAME.FIELD" into NAME (copied into @name) and its pool key.
 * Return the key, or NULL when @key is not a pool key or NAME is too long
 * (*@toolong is then set).
 */
static const struct config_key *pool_key_find(const char *key, char *name,
					      bool *toolong)
{
	const char *n, *dot;
	size_t i;

	*toolong = false;
	if (strncmp(key, "pool.", 5))
		return NULL;
	n = key + 5;
	dot = strchr(n, '.');
	if (!dot)
		return NULL;
	for (i = 0; i < NR_POOL_KEYS; i++) {
		if (!strcmp(pool_keys[i].name, dot + 1))
			break;
	}
	if (i == NR_POOL_KEYS || dot == n)
		return NULL;
	if ((size_t)(dot - n) >= KVMEMD_POOL_NAME_MAX) {
		*toolong = true;
		return NULL;
	}
	memcpy(name, n, dot - n);
	name[dot - n] = '\0';
	return &pool_keys[i];
}

static int pool_index(const struct kvmemd_config *cfg, const char *name)
{
	u32 i;

	for (i = 0; i < cfg->nr_pools; i++) {
		if (!strcmp(cfg->pools[i].name, name))
			return (int)i;
	}
	return -ENOENT;
}

/* ---- tenants ----------------------------------------------------------- */

/* The NAME of "tenant.NAME", or NULL when @key is not a tenant key. */
static const char *tenant_key_name(const char *key)
{
	return strncmp(key, TENANT_PREFIX, TENANT_PREFIX_LEN) ? NULL :
	       key + TENANT_PREFIX_LEN;
}

static bool tenant_name_char_ok(char c, bool first)
{
	if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
		return true;
	return c == '_' && !first;
}

/*
 * Is @name a tenant name: 1 to KVMEMD_TENANT_NAME_MAX - 1 of [a-z0-9_],
 * starting with a letter or a digit? -ENAMETOOLONG or -EINVAL when not.
 */
static int tenant_name_check(const char *name)
{
	const char *p;

	if (strlen(name) >= KVMEMD_TENANT_NAME_MAX)
		return -ENAMETOOLONG;
	if (!*name)
		return -EINVAL;
	for (p = name; *p; p++) {
		if (!tenant_name_char_ok(*p, p == name))
			return -EINVAL;
	}
	return 0;
}

static int tenant_index(const struct kvmemd_config *cfg, const char *name)
{
	u32 i;

	for (i = 0; i < cfg->nr_tenants; i++) {
		if (!strcmp(cfg->tenants[i].name, name))
			return (int)i;
	}
	return -ENOENT;
}

static bool tenant_has_uid(const struct kvmemd_tenant_config *t, u32 uid)
{
	u32 i;

	for (i = 0; i < t->nr_uids; i++) {
		if (t->uids[i] == uid)
			return true;
	}
	return false;
}

/*
 * Parse the @n bytes at @s as a uid: decimal digits only, at most
 * TENANT_UID_MAX. -ENODATA when @n is 0.
 */
static int uid_parse(const char *s, size_t n, u32 *uid)
{
	u64 v = 0;
	size_t i;

	if (!n)
		return -ENODATA;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		if (v <= TENANT_UID_MAX)
			v = v * 10 + (u64)(s[i] - '0');
	}
	if (v > TENANT_UID_MAX)
		return -ERANGE;
	*uid = (u32)v;
	return 0;
}

/* Add the uid of the @n bytes at @s to @t; on error, the reason in @msg. */
static int tenant_uid_add(struct kvmemd_tenant_config *t, const char *s, size_t n,
			  const char *value, char *msg, size_t len)
{
	u32 uid;
	int ret;

	ret = uid_parse(s, n, &uid);
	if (ret == -ENODATA) {
		snprintf(msg, len, "empty uid in '%s'", value);
		return -EINVAL;
	}
	if (ret) {
		snprintf(msg, len, "'%.*s' is not a uid (a decimal number, 0..%u)",
			 (int)n, s, TENANT_UID_MAX);
		return -EINVAL;
	}
	if (tenant_has_uid(t, uid)) {
		snprintf(msg, len, "uid %u is listed twice", uid);
		return -EINVAL;
	}
	if (t->nr_uids == KVMEMD_TENANT_UIDS_MAX) {
		snprintf(msg, len, "more than %d uids", KVMEMD_TENANT_UIDS_MAX);
		return -EINVAL;
	}
	t->uids[t->nr_uids++] = uid;
	return 0;
}

/*
 * Parse "UID[,UID...]" (blanks allowed after each comma) into @t, whose
 * list starts empty. On error, write the reason into @msg.
 */
static int tenant_uids_parse(struct kvmemd_tenant_config *t, const char *value,
			     char *msg, size_t len)
{
	const char *p = value, *end;
	int ret;

	if (!value[strspn(value, " \t")]) {
		snprintf(msg, len, "empty uid list");
		return -EINVAL;
	}
	for (;;) {
		end = strchrnul(p, ',');
		ret = tenant_uid_add(t, p, (size_t)(end - p), value, msg, len);
		if (ret || !*end)
			return ret;
		p = end + 1 + strspn(end + 1, " \t");
	}
}

/* Write the uids of @t as tenant_uids_parse() reads them back. */
static int tenant_format(const struct kvmemd_tenant_config *t, char *buf, size_t len)
{
	size_t n = 0;
	u32 i;
	int w;

	buf[0] = '\0';
	for (i = 0; i < t->nr_uids; i++) {
		w = snprintf(buf + n, len - n, "%s%u", i ? "," : "", t->uids[i]);
		if (w < 0 || (size_t)w >= len - n)
			return -ERANGE;
		n += (size_t)w;
	}
	return 0;
}

static bool tenants_differ(const struct kvmemd_config *a, const struct kvmemd_config *b)
{
	const struct kvmemd_tenant_config *ta, *tb;
	u32 i;

	if (a->nr_tenants != b->nr_tenants)
		return true;
	for (i = 0; i < a->nr_tenants; i++) {
		ta = &a->tenants[i];
		tb = &b->tenants[i];
		if (strcmp(ta->name, tb->name) || ta->nr_uids != tb->nr_uids ||
		    memcmp(ta->uids, tb->uids, ta->nr_uids * sizeof(ta->uids[0])))
			return true;
	}
	return false;
}

/* ---- the swap area ----------------------------------------------------- */

/* Bytes of the data region of pool @pc in the swap area; 0 when it has none. */
static u64 swap_region_bytes(const struct kvmemd_pool_config *pc)
{
	return (u64)pc->nr_frames[KVMEMD_TIER_SWAP] * kv_frame_bytes(&pc->geom);
}

/* Bytes of the checkpoint region of pool @pc; 0 when it has no swap frame. */
static u64 ckpt_region_bytes(const struct kvmemd_pool_config *pc)
{
	u32 slots = pc->nr_frames[KVMEMD_TIER_SWAP];

	return slots ? kv_checkpoint_bytes(&pc->geom, slots) : 0;
}

static u64 swap_align(u64 off)
{
	return (off + KVMEMD_SWAP_ALIGN - 1) & ~(KVMEMD_SWAP_ALIGN - 1);
}

/*
 * The end of the regions of @bytes() of the first @n pools of @cfg, laid
 * out from @end: each starts at the end of the one before, rounded up to
 * KVMEMD_SWAP_ALIGN; pools without swap take no room. @end when none of
 * them has swap.
 */
static u64 regions_end(const struct kvmemd_config *cfg, u32 n, u64 end,
		       u64 (*bytes)(const struct kvmemd_pool_config *))
{
	u64 b;
	u32 i;

	for (i = 0; i < n && i < cfg->nr_pools; i++) {
		b = bytes(&cfg->pools[i]);
		if (b)
			end = swap_align(end) + b;
	}
	return end;
}

/* The end of the data regions of the first @n pools of @cfg; 0 for none. */
static u64 swap_end(const struct kvmemd_config *cfg, u32 n)
{
	return regions_end(cfg, n, 0, swap_region_bytes);
}

/*
 * The end of the checkpoint regions of the first @n pools of @cfg, which
 * follow the data regions of all the pools, laid out as those are.
 * swap_end() of all the pools when none of the first @n has swap.
 */
static u64 ckpt_end(const struct kvmemd_config *cfg, u32 n)
{
	return regions_end(cfg, n, swap_end(cfg, cfg->nr_pools), ckpt_region_bytes);
}

/* ---- loading ----------------------------------------------------------- */

/* Give the optional keys of pool @pc their defaults. */
static void pool_optional_defaults(struct kvmemd_pool_config *pc)
{
	size_t k;

	for (k = 0; k < NR_POOL_KEYS; k++) {
		if ((pool_keys[k].flags & KEY_OPTIONAL) && !key_is_string(&pool_keys[k]))
			field_set(&pool_keys[k], pc, pool_keys[k].def);
	}
}

static int pool_add(struct config_parse *cp, const struct kv_config_pos *pos,
		    const char *name)
{
	struct kvmemd_config *cfg = &cp->cfg;
	struct kvmemd_pool_config *pc;

	if (cfg->nr_pools == KVMEMD_MAX_POOLS)
		return kv_config_error(pos, -EINVAL,
				       "pool '%s': too many pools (at most %d)",
				       name, KVMEMD_MAX_POOLS);
	pc = &cfg->pools[cfg->nr_pools];
	memset(pc, 0, sizeof(*pc));
	snprintf(pc->name, sizeof(pc->name), "%s", name);
	pool_optional_defaults(pc);
	cp->pool_first[cfg->nr_pools] = pos->line;
	return (int)cfg->nr_pools++;
}

static int pool_key_load(struct config_parse *cp, const struct kv_config_pos *pos,
			 const char *key, const char *value)
{
	char name[KVMEMD_POOL_NAME_MAX], msg[KV_CONFIG_ERR_MAX];
	const struct config_key *k;
	unsigned int *line;
	bool toolong;
	int i, ret;

	k = pool_key_find(key, name, &toolong);
	if (toolong)
		return kv_config_error(pos, -EINVAL,
				       "pool name in '%s' is longer than %d bytes",
				       key, KVMEMD_POOL_NAME_MAX - 1);
	if (!k)
		return kv_config_error(pos, -EINVAL, "unknown key '%s'", key);
	i = pool_index(&cp->cfg, name);
	if (i < 0)
		i = pool_add(cp, pos, name);
	if (i < 0)
		return i;
	line = &cp->pool_line[i][k - pool_keys];
	if (*line)
		return kv_config_error(pos, -EINVAL,
				       "duplicate key '%s' (first set at line %u)",
				       key, *line);
	ret = key_store(k, &cp->cfg.pools[i], value, msg, sizeof(msg));
	if (ret)
		return kv_config_error(pos, -EINVAL, "pool.%s.%s", name, msg);
	*line = pos->line;
	return 0;
}

/* Check the NAME of tenant key @key: an error at @pos when it is not one. */
static int tenant_name_load(const struct kv_config_pos *pos, const char *key,
			    const char *name)
{
	int ret;

	if (strchr(name, '.'))
		return kv_config_error(pos, -EINVAL, "unknown key '%s'", key);
	ret = tenant_name_check(name);
	if (ret == -ENAMETOOLONG)
		return kv_config_error(pos, -EINVAL,
				       "tenant name in '%s' is longer than %d bytes",
				       key, KVMEMD_TENANT_NAME_MAX - 1);
	if (ret)
		return kv_config_error(pos, -EINVAL,
				       "tenant name '%s' does not start with a letter or a digit",
				       name);
	return 0;
}

/* Refuse a uid of @t that an earlier tenant already has. */
static int tenant_uids_unique(struct config_parse *cp, const struct kv_config_pos *pos,
			      const struct kvmemd_tenant_config *t)
{
	u32 i;
	int o;

	for (i = 0; i < t->nr_uids; i++) {
		o = kvmemd_config_tenant(&cp->cfg, t->uids[i]);
		if (o >= 0)
			return kv_config_error(pos, -EINVAL,
					       "tenant.%s: uid %u is already in tenant '%s' (line %u)",
					       t->name, t->uids[i], cp->cfg.tenants[o].name,
					       cp->tenant_line[o]);
	}
	return 0;
}

static int tenant_key_load(struct config_parse *cp, const struct kv_config_pos *pos,
			   const char *key, const char *value)
{
	const char *name = tenant_key_name(key);
	struct kvmemd_config *cfg = &cp->cfg;
	struct kvmemd_tenant_config t;
	char msg[KV_CONFIG_ERR_MAX];
	int i, ret;

	ret = tenant_name_load(pos, key, name);
	if (ret)
		return ret;
	i = tenant_index(cfg, name);
	if (i >= 0)
		return kv_config_error(pos, -EINVAL,
				       "duplicate key '%s' (first set at line %u)",
				       key, cp->tenant_line[i]);
	if (cfg->nr_tenants == KVMEMD_MAX_TENANTS)
		return kv_config_error(pos, -EINVAL,
				       "tenant '%s': too many tenants (at most %d)",
				       name, KVMEMD_MAX_TENANTS);
	memset(&t, 0, sizeof(t));
	snprintf(t.name, sizeof(t.name), "%s", name);
	if (tenant_uids_parse(&t, value, msg, sizeof(msg)))
		return kv_config_error(pos, -EINVAL, "%s: %s", key, msg);
	ret = tenant_uids_unique(cp, pos, &t);
	if (ret)
		return ret;
	cp->tenant_line[cfg->nr_tenants] = pos->line;
	cfg->tenants[cfg->nr_tenants++] = t;
	return 0;
}

static int config_key_load(const struct kv_config_pos *pos, const char *key,
			   const char *value, void *arg)
{
	struct config_parse *cp = arg;
	char msg[KV_CONFIG_ERR_MAX];
	const struct config_key *k;
	unsigned int *line;
	int ret;

	if (!strncmp(key, "pool.", 5))
		return pool_key_load(cp, pos, key, value);
	if (tenant_key_name(key))
		return tenant_key_load(cp, pos, key, value);
	k = key_find(key);
	if (!k)
		return kv_config_error(pos, -EINVAL, "unknown key '%s'", key);
	line = &cp->key_line[k - config_keys];
	if (*line)
		return kv_config_error(pos, -EINVAL,
				       "duplicate key '%s' (first set at line %u)",
				       key, *line);
	ret = key_store(k, &cp->cfg, value, msg, sizeof(msg));
	if (ret)
		return kv_config_error(pos, -EINVAL, "%s", msg);
	*line = pos->line;
	return 0;
}

/* The swap frames of pool @i, once its device and host frames are set. */
static int pool_swap_frames(struct config_parse *cp, int i, char *err, size_t errlen)
{
	struct kvmemd_pool_config *pc = &cp->cfg.pools[i];
	struct kv_config_pos pos = {
		.file = cp->file, .line = cp->pool_line[i][POOL_KEY_SWAP_MEM],
		.err = err, .errlen = errlen,
	};
	u64 fb = kv_frame_bytes(&pc->geom);
	u64 swap = pc->swap_mem / fb;
	u64 all = (u64)pc->nr_frames[KV_TIER_DEVICE] + pc->nr_frames[KV_TIER_HOST] + swap;
	char fbs[32];

	if (pc->swap_mem && !cp->cfg.swap_path[0])
		return kv_config_error(&pos, -EINVAL, "pool.%s.swap_mem needs swap.path",
				       pc->name);
	kv_format_size(fb, fbs, sizeof(fbs));
	if (all > POOL_FRAMES_MAX)
		return kv_config_error(&pos, -EINVAL,
				       "pool.%s.swap_mem: %llu frames of %s in all, at most %u are allowed",
				       pc->name, (unsigned long long)all, fbs,
				       POOL_FRAMES_MAX);
	pc->nr_frames[KVMEMD_TIER_SWAP] = (u32)swap;
	return 0;
}

static int pool_frames(struct config_parse *cp, int i, char *err, size_t errlen)
{
	struct kvmemd_pool_config *pc = &cp->cfg.pools[i];
	struct kv_config_pos pos = { .file = cp->file, .err = err, .errlen = errlen };
	u64 fb = kv_frame_bytes(&pc->geom);
	u64 dev = pc->device_mem / fb, host = pc->host_mem / fb;
	char fbs[32];

	kv_format_size(fb, fbs, sizeof(fbs));
	pos.line = cp->pool_line[i][POOL_KEY_DEVICE_MEM];
	if (dev < POOL_DEVICE_FRAMES_MIN)
		return kv_config_error(&pos, -EINVAL,
				       "pool.%s.device_mem: holds %llu frames of %s, at least %d are needed",
				       pc->name, (unsigned long long)dev, fbs,
				       POOL_DEVICE_FRAMES_MIN);
	if (dev > POOL_FRAMES_MAX)
		return kv_config_error(&pos, -EINVAL,
				       "pool.%s.device_mem: %llu frames of %s, at most %u are allowed",
				       pc->name, (unsigned long long)dev, fbs,
				       POOL_FRAMES_MAX);
	pos.line = cp->pool_line[i][POOL_KEY_HOST_MEM];
	if (dev + host > POOL_FRAMES_MAX)
		return kv_config_error(&pos, -EINVAL,
				       "pool.%s.host_mem: %llu frames of %s in all, at most %u are allowed",
				       pc->name, (unsigned long long)(dev + host), fbs,
				       POOL_FRAMES_MAX);
	pc->nr_frames[KV_TIER_DEVICE] = (u32)dev;
	pc->nr_frames[KV_TIER_HOST] = (u32)host;
	return pool_swap_frames(cp, i, err, errlen);
}

/*
 * The model of pool @i, a preset or a config.json (read now), into @m; a
 * name for it in messages into @what.
 */
static int pool_model_get(struct config_parse *cp, int i, struct kv_model *m,
			  char *what, size_t len, char *err, size_t errlen)
{
	const struct kvmemd_pool_config *pc = &cp->cfg.pools[i];
	const unsigned int *line = cp->pool_line[i];
	struct kv_config_pos pos = { .file = cp->file, .err = err, .errlen = errlen };
	char msg[KV_MODEL_ERR_MAX + KVMEMD_HF_CONFIG_MAX];

	if (line[POOL_KEY_MODEL] && line[POOL_KEY_HF_CONFIG]) {
		pos.line = line[POOL_KEY_MODEL] > line[POOL_KEY_HF_CONFIG] ?
			   line[POOL_KEY_MODEL] : line[POOL_KEY_HF_CONFIG];
		return kv_config_error(&pos, -EINVAL,
				       "pool '%s': give pool.%s.model or pool.%s.hf_config, not both (lines %u and %u)",
				       pc->name, pc->name, pc->name, line[POOL_KEY_MODEL],
				       line[POOL_KEY_HF_CONFIG]);
	}
	if (line[POOL_KEY_MODEL]) {
		*m = *kv_model_find(pc->model);	/* key_store() found it */
		snprintf(what, len, "model '%s'", pc->model);
		return 0;
	}
	pos.line = line[POOL_KEY_HF_CONFIG];
	if (kv_model_load_hf(pc->hf_config, m, msg, sizeof(msg)))
		return kv_config_error(&pos, -EINVAL, "pool.%s.hf_config: %s", pc->name, msg);
	if (!m->dtype && !line[POOL_KEY_DTYPE])
		return kv_config_error(&pos, -EINVAL,
				       "pool.%s.hf_config: %s: its torch_dtype is none of float16, bfloat16, float32; set pool.%s.dtype",
				       pc->name, pc->hf_config, pc->name);
	snprintf(what, len, "hf_config '%s'", pc->hf_config);
	return 0;
}

/*
 * Give pool @i, which has a model (pool.NAME.model or pool.NAME.hf_config),
 * its geometry: the geometry keys left out take the model's values
 * (block_tokens: KVMEMD_MODEL_BLOCK_TOKENS); layers, kv_heads and head_dim
 * given too must agree with it; a dtype given overrides the model's.
 */
static int pool_model_apply(struct config_parse *cp, int i, char *err, size_t errlen)
{
	struct kvmemd_pool_config *pc = &cp->cfg.pools[i], mc = { 0 };
	const unsigned int *line = cp->pool_line[i];
	struct kv_config_pos pos = { .file = cp->file, .err = err, .errlen = errlen };
	char what[KVMEMD_HF_CONFIG_MAX + 16], va[32], vb[32];
	const struct config_key *k;
	struct kv_model m;
	int ret;

	ret = pool_model_get(cp, i, &m, what, sizeof(what), err, errlen);
	if (ret)
		return ret;
	kv_model_geometry(&m, KVMEMD_MODEL_BLOCK_TOKENS, &mc.geom);
	for (k = pool_keys; k < pool_keys + NR_POOL_KEYS; k++) {
		if (!(k->flags & KEY_GEOM))
			continue;
		if (!line[k - pool_keys]) {
			field_set(k, pc, field_get(k, &mc));
			continue;
		}
		if (!(k->flags & KEY_FACT) || field_get(k, pc) == field_get(k, &mc))
			continue;
		key_format(k, pc, va, sizeof(va));
		key_format(k, &mc, vb, sizeof(vb));
		pos.line = line[k - pool_keys];
		return kv_config_error(&pos, -EINVAL,
				       "pool.%s.%s = %s disagrees with %s, which has %s; leave it out",
				       pc->name, k->name, va, what, vb);
	}
	return 0;
}

/*
 * A quantized pool (int8, fp8, int4) needs head_dim a multiple of
 * KV_INT4_GROUP: whole bytes and whole scale groups per head vector. The
 * error is on the head_dim line, or on the dtype line where head_dim is
 * the model's.
 */
static int pool_quant_check(struct config_parse *cp, int i, char *err, size_t errlen)
{
	const struct kvmemd_pool_config *pc = &cp->cfg.pools[i];
	const unsigned int *line = cp->pool_line[i];
	struct kv_config_pos pos = { .file = cp->file, .err = err, .errlen = errlen };
	const struct config_key *dt = &pool_keys[POOL_KEY_DTYPE];

	if (!kv_dtype_quantized(pc->geom.dtype) || pc->geom.head_dim % KV_INT4_GROUP == 0)
		return 0;
	pos.line = line[POOL_KEY_HEAD_DIM] ? line[POOL_KEY_HEAD_DIM] : line[POOL_KEY_DTYPE];
	return kv_config_error(&pos, -EINVAL,
			       "pool.%s.head_dim = %u: a pool of dtype %s needs head_dim a multiple of %u",
			       pc->name, pc->geom.head_dim,
			       choice_name(dt, pc->geom.dtype), KV_INT4_GROUP);
}

/*
 * A pool's GPU is one that device.gpus lets the daemon use, unless the
 * backend is cpu, which ignores both (auto may find a GPU).
 */
static int pool_gpu_check(struct config_parse *cp, int i, char *err, size_t errlen)
{
	const struct kvmemd_pool_config *pc = &cp->cfg.pools[i];
	const struct config_key *g = key_find("device.gpus");
	struct kv_config_pos pos = { .file = cp->file, .err = err, .errlen = errlen };

	if (cp->cfg.backend == KVMEMD_BACKEND_CPU || cp->cfg.gpus == KVMEMD_GPUS_ALL ||
	    (cp->cfg.gpus & (1ull << pc->gpu)))
		return 0;
	pos.line = cp->pool_line[i][POOL_KEY_GPU];
	if (pos.line)
		return kv_config_error(&pos, -EINVAL,
				       "pool.%s.gpu = %u: not in device.gpus (line %u)",
				       pc->name, pc->gpu, cp->key_line[g - config_keys]);
	pos.line = cp->pool_first[i];
	return kv_config_error(&pos, -EINVAL,
			       "pool '%s' is on GPU 0 (pool.%s.gpu unset), which device.gpus (line %u) leaves out",
			       pc->name, pc->name, cp->key_line[g - config_keys]);
}

static int pool_validate(struct config_parse *cp, int i, char *err, size_t errlen)
{
	struct kv_config_pos pos = {
		.file = cp->file, .line = cp->pool_first[i], .err = err, .errlen = errlen,
	};
	const char *name = cp->cfg.pools[i].name;
	bool model = cp->pool_line[i][POOL_KEY_MODEL] || cp->pool_line[i][POOL_KEY_HF_CONFIG];
	unsigned int flags;
	size_t k;
	int ret;

	for (k = 0; k < NR_POOL_KEYS; k++) {
		flags = pool_keys[k].flags;
		if (cp->pool_line[i][k] || (flags & KEY_OPTIONAL) || (model && (flags & KEY_GEOM)))
			continue;
		if (flags & KEY_GEOM)
			return kv_config_error(&pos, -EINVAL,
					       "pool '%s': missing pool.%s.%s (or pool.%s.model or pool.%s.hf_config)",
					       name, name, pool_keys[k].name, name, name);
		return kv_config_error(&pos, -EINVAL, "pool '%s': missing pool.%s.%s",
				       name, name, pool_keys[k].name);
	}
	if (model) {
		ret = pool_model_apply(cp, i, err, errlen);
		if (ret)
			return ret;
	}
	ret = pool_quant_check(cp, i, err, errlen);
	ret = ret ?: pool_gpu_check(cp, i, err, errlen);
	if (ret)
		return ret;
	if (!kv_geometry_valid(&cp->cfg.pools[i].geom))
		return kv_config_error(&pos, -EINVAL, "pool '%s': invalid geometry", name);
	return 0;
}

/*
 * Add a region of @bytes to the swap area that ends at *@end, as swap_end()
 * and ckpt_end() do. False, with *@end unchanged, when it would end past
 * SWAP_END_MAX.
 */
static bool swap_region_add(u64 *end, u64 bytes)
{
	u64 start;

	if (!bytes)
		return true;
	start = swap_align(*end);
	if (start > SWAP_END_MAX || bytes > SWAP_END_MAX - start)
		return false;
	*end = start + bytes;
	return true;
}

/*
 * Check that the swap area, the data regions of every pool then their
 * checkpoint regions, laid out as swap_end() and ckpt_end() do, ends within
 * SWAP_END_MAX: offsets are off_t, and kvmemd_config_swap_offset(),
 * kvmemd_config_ckpt_offset() and kvmemd_config_swap_size() cannot wrap.
 * Either failure names the line of the pool's swap_mem.
 */
static int swap_layout_check(struct config_parse *cp, char *err, size_t errlen)
{
	struct kv_config_pos pos = { .file = cp->file, .err = err, .errlen = errlen };
	const struct kvmemd_pool_config *pc;
	u64 end = 0;
	u32 i;

	for (i = 0; i < cp->cfg.nr_pools; i++) {
		pc = &cp->cfg.pools[i];
		if (swap_region_add(&end, swap_region_bytes(pc)))
			continue;
		pos.line = cp->pool_line[i][POOL_KEY_SWAP_MEM];
		return kv_config_error(&pos, -EINVAL,
				       "pool.%s.swap_mem: the swap area would end past %llu bytes",
				       pc->name, (unsigned long long)SWAP_END_MAX);
	}
	for (i = 0; i < cp->cfg.nr_pools; i++) {
		pc = &cp->cfg.pools[i];
		if (swap_region_add(&end, ckpt_region_bytes(pc)))
			continue;
		pos.line = cp->pool_line[i][POOL_KEY_SWAP_MEM];
		return kv_config_error(&pos, -EINVAL,
				       "pool.%s.swap_mem: its checkpoint region would end the swap area past %llu bytes",
				       pc->name, (unsigned long long)SWAP_END_MAX);
	}
	return 0;
}

/* swap.persist = 1 needs a swap area to keep the checkpoints in. */
static int swap_persist_check(struct config_parse *cp, char *err, size_t errlen)
{
	unsigned int line = cp->key_line[key_find("swap.persist") - config_keys];
	struct kv_config_pos pos = {
		.file = cp->file, .line = line, .err = err, .errlen = errlen,
	};

	if (cp->cfg.swap_persist && !cp->cfg.swap_path[0])
		return kv_config_error(&pos, -EINVAL, "swap.persist needs swap.path");
	return 0;
}

static void pool_default(struct kvmemd_pool_config *pc)
{
	memset(pc, 0, sizeof(*pc));
	snprintf(pc->name, sizeof(pc->name), "%s", KVMEMD_DEFAULT_POOL);
	pc->geom.layers = 4;
	pc->geom.kv_heads = 4;
	pc->geom.head_dim = 64;
	pc->geom.block_tokens = 16;
	pc->geom.dtype = KV_DTYPE_FP16;
	pc->device_mem = 64ull << 20;
	pc->host_mem = 256ull << 20;
	pc->swap_mem = 0;
	pc->prefix = KVMEMD_PREFIX_TENANT;
	pc->nr_frames[KV_TIER_DEVICE] = (u32)(pc->device_mem / kv_frame_bytes(&pc->geom));
	pc->nr_frames[KV_TIER_HOST] = (u32)(pc->host_mem / kv_frame_bytes(&pc->geom));
	pc->nr_frames[KVMEMD_TIER_SWAP] = 0;
}

static int config_validate(struct config_parse *cp, char *err, size_t errlen)
{
	u32 i;
	int ret;

	ret = swap_persist_check(cp, err, errlen);
	if (ret)
		return ret;
	for (i = 0; i < cp->cfg.nr_pools; i++) {
		ret = pool_validate(cp, (int)i, err, errlen);
		if (ret)
			return ret;
		ret = pool_frames(cp, (int)i, err, errlen);
		if (ret)
			return ret;
	}
	ret = swap_layout_check(cp, err, errlen);
	if (ret)
		return ret;
	if (!cp->cfg.nr_pools) {
		pool_default(&cp->cfg.pools[0]);
		if (cp->cfg.gpus != KVMEMD_GPUS_ALL)	/* the first GPU it may use */
			cp->cfg.pools[0].gpu = (u32)__builtin_ctzll(cp->cfg.gpus);
		cp->cfg.nr_pools = 1;
	}
	return 0;
}

/**
 * kvmemd_config_defaults() - fill a config with the built-in defaults
 * @cfg: the config
 *
 * The defaults are those of Documentation/admin-guide/kvmemd.conf.md: the
 * socket at KVMEMD_SOCKET_PATH with mode 0660, log level info, the auto
 * backend, no swap area (swap.path unset, the auto engine, swap.persist
 * 0), the mm defaults for vm.*, and one pool, KVMEMD_DEFAULT_POOL, of 4
 * layers, 4 kv heads, head_dim 64, 16-token blocks in fp16, with 64M of
 * device and 256M of host memory, no swap and a prefix cache per tenant;
 * no tenant keys (every uid is a tenant of its own).
 */
void kvmemd_config_defaults(struct kvmemd_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->socket_path, sizeof(cfg->socket_path), "%s", KVMEMD_SOCKET_PATH);
	cfg->socket_mode = 0660;
	cfg->log_level = KVMEMD_LOG_INFO;
	cfg->backend = KVMEMD_BACKEND_AUTO;
	cfg->gpus = KVMEMD_GPUS_ALL;
	cfg->swap_path[0] = '\0';
	cfg->swap_engine = KVMEMD_SWAP_AUTO;
	cfg->swap_persist = 0;
	cfg->vm.min_free_kbytes = 0;
	cfg->vm.watermark_scale_factor = 10;
	cfg->vm.reclaim_batch = 32;
	cfg->step_wait_ms = 0;
	cfg->nr_pools = 1;
	pool_default(&cfg->pools[0]);
}

static void parse_init(struct config_parse *cp, const char *file)
{
	memset(cp, 0, sizeof(*cp));
	kvmemd_config_defaults(&cp->cfg);
	memset(cp->cfg.pools, 0, sizeof(cp->cfg.pools));
	cp->cfg.nr_pools = 0;
	cp->file = file;
}

/**
 * kvmemd_config_load() - read, check and return a configuration file
 * @out:    receives the config; written only on success
 * @path:   the file; NULL for KVMEMD_CONFIG_PATH
 * @flags:  KVMEMD_CONFIG_MISSING_OK: when @path does not exist (ENOENT),
 *          return the defaults instead of an error. Give it for the default
 *          path, not for a path the administrator named (-c PATH).
 * @err:    on error, the message: "FILE:LINE: reason" for the contents,
 *          "FILE: reason" when the file cannot be read. On success "", or,
 *          when the defaults were used for a missing file, a note for the
 *          log ("FILE: No such file or directory; using the built-in
 *          defaults"). May be NULL.
 * @errlen: size of @err; KV_CONFIG_ERR_MAX is enough
 *
 * Keys not in the file keep their defaults; a file that defines no pool
 * gets the default pool. The file is parsed into a fresh config, checked
 * (ranges, duplicates, unknown keys, pools complete and of a usable size,
 * swap and swap.persist only with a swap.path, the swap area within 2^63
 * bytes, tenant names and uid lists, no uid in two tenants), and only then
 * copied to @out, so that a failed reload leaves the running config
 * untouched.
 *
 * Return: 0; -EINVAL for anything wrong in the file; -errno when it cannot
 * be opened or read (-ENOENT, -EACCES, -EISDIR...).
 */
int kvmemd_config_load(struct kvmemd_config *out, const char *path,
		       unsigned int flags, char *err, size_t errlen)
{
	struct config_parse cp;
	int ret;

	if (!path)
		path = KVMEMD_CONFIG_PATH;
	if (flags & ~KVMEMD_CONFIG_MISSING_OK) {
		kv_errorf(err, errlen, "%s: invalid flags %#x", path, flags);
		return -EINVAL;
	}
	parse_init(&cp, path);
	ret = kv_config_parse_file(path, config_key_load, &cp, err, errlen);
	if (ret == -ENOENT && (flags & KVMEMD_CONFIG_MISSING_OK)) {
		kvmemd_config_defaults(out);
		kv_errorf(err, errlen, "%s: %s; using the built-in defaults",
			   path, strerror(ENOENT));
		return 0;
	}
	if (!ret)
		ret = config_validate(&cp, err, errlen);
	if (ret)
		return ret;
	*out = cp.cfg;
	return 0;
}

/**
 * kvmemd_config_load_string() - kvmemd_config_load() from text in memory
 * @out:    receives the config; written only on success
 * @name:   the name of the text in messages, in place of a file name
 * @text:   configuration lines
 * @err:    on error, "NAME:LINE: reason"; "" on success; may be NULL
 * @errlen: size of @err
 *
 * Return: 0, or -EINVAL for anything wrong in @text.
 */
int kvmemd_config_load_string(struct kvmemd_config *out, const char *name,
			      const char *text, char *err, size_t errlen)
{
	struct config_parse cp;
	int ret;

	parse_init(&cp, name);
	ret = kv_config_parse_string(name, text, config_key_load, &cp, err, errlen);
	if (!ret)
		ret = config_validate(&cp, err, errlen);
	if (ret)
		return ret;
	*out = cp.cfg;
	return 0;
}

/**
 * kvmemd_config_get() - the value of a key, as the config file writes it
 * @cfg: the config
 * @key: any key: "vm.reclaim_batch", "socket.path", "pool.NAME.host_mem",
 *       "tenant.NAME"...
 * @buf: receives the value: numbers in decimal, sizes with the largest
 *       exact suffix ("64M"), modes in octal ("0660"), names for choices,
 *       strings as they are ("" for an unset group or swap.path; a path
 *       may take KVMEMD_SWAP_PATH_MAX bytes), uid lists of tenants
 *       comma-separated in file order ("1000,1001")
 * @len: size of @buf
 *
 * Return: 0; -ENOENT for an unknown key, pool or tenant; -ERANGE when @buf
 * is too small (it then holds a truncated value).
 */
int kvmemd_config_get(const struct kvmemd_config *cfg, const char *key,
		      char *buf, size_t len)
{
	char name[KVMEMD_POOL_NAME_MAX];
	const struct config_key *k;
	const char *tenant;
	bool toolong;
	int i;

	if (!len)
		return -ERANGE;
	k = key_find(key);
	if (k)
		return key_format(k, cfg, buf, len);
	tenant = tenant_key_name(key);
	if (tenant) {
		i = tenant_index(cfg, tenant);
		return i < 0 ? i : tenant_format(&cfg->tenants[i], buf, len);
	}
	k = pool_key_find(key, name, &toolong);
	if (!k)
		return -ENOENT;
	i = pool_index(cfg, name);
	if (i < 0)
		return -ENOENT;
	return key_format(k, &cfg->pools[i], buf, len);
}

/**
 * kvmemd_config_check() - check a string value as the file's parser would
 * @key:    a key stored as a string (socket.path, swap.path, ...)
 * @value:  the value, e.g. from the command line
 * @err:    the message, "KEY: why", on failure
 * @errlen: its size
 *
 * Return: 0; -ENOENT for a key that is not a string key; the parser's
 * -EINVAL or -ENAMETOOLONG.
 */
int kvmemd_config_check(const char *key, const char *value, char *err, size_t errlen)
{
	const struct config_key *k = key_find(key);

	kv_errorf(err, errlen, "%s", "");
	if (!k || !key_is_string(k)) {
		kv_errorf(err, errlen, "%s: not a string key", key);
		return -ENOENT;
	}
	return string_check(k, value, err, errlen);
}

/**
 * kvmemd_config_set() - change a run-time key
 * @cfg:    the config
 * @key:    a run-time key: log.level, vm.min_free_kbytes,
 *          vm.watermark_scale_factor or vm.reclaim_batch
 * @value:  the new value, as it would be written in the file (no quotes
 *          or surrounding blanks)
 * @err:    on error, a message starting with the key; "" on success; may
 *          be NULL
 * @errlen: size of @err
 *
 * Only @cfg changes: the caller applies it (kv_pool_set_tunables() with
 * kvmemd_config_vm(), the log level). On error @cfg is unchanged.
 *
 * Tenant keys (tenant.NAME, any well-formed NAME) change without a restart
 * but not through here: a uid list is structure, checked against every
 * other tenant, so it is edited in the file and applied with SIGHUP.
 *
 * Return: 0; -ENOENT for an unknown key; -EPERM for a key that needs a
 * restart; -EROFS for a tenant key (edit the file and reload); -EINVAL for
 * a malformed value; -ERANGE for one out of range.
 */
int kvmemd_config_set(struct kvmemd_config *cfg, const char *key,
		      const char *value, char *err, size_t errlen)
{
	char name[KVMEMD_POOL_NAME_MAX], msg[KV_CONFIG_ERR_MAX];
	const struct config_key *k;
	bool toolong;
	int ret;

	kv_errorf(err, errlen, "%s", "");
	k = key_find(key);
	if (!k && tenant_key_name(key) && !tenant_name_check(tenant_key_name(key))) {
		kv_errorf(err, errlen, "%s: edit the file and reload (SIGHUP)", key);
		return -EROFS;
	}
	if (!k) {
		if (kv_config_key_valid(key) && pool_key_find(key, name, &toolong)) {
			kv_errorf(err, errlen, "%s: needs a restart", key);
			return -EPERM;
		}
		kv_errorf(err, errlen, "%s: unknown key", key);
		return -ENOENT;
	}
	if (!(k->flags & KEY_RUNTIME)) {
		kv_errorf(err, errlen, "%s: needs a restart", key);
		return -EPERM;
	}
	ret = key_store(k, cfg, value, msg, sizeof(msg));
	if (ret)
		kv_errorf(err, errlen, "%s", msg);
	return ret;
}

/* Compare key @k in @a and @b; 1 when the values differ, with both printed. */
static int key_differs(const struct config_key *k, const void *a, const void *b,
		       char *va, char *vb, size_t len)
{
	key_format(k, a, va, len);
	key_format(k, b, vb, len);
	return strcmp(va, vb) != 0;
}

static int pools_diff(const struct kvmemd_config *old,
		      const struct kvmemd_config *new, char *err, size_t errlen)
{
	char va[VALUE_MAX], vb[VALUE_MAX];
	const struct kvmemd_pool_config *po, *pn;
	size_t k;
	u32 i;

	for (i = 0; i < old->nr_pools; i++) {
		po = &old->pools[i];
		pn = kvmemd_config_pool(new, po->name);
		if (!pn) {
			kv_errorf(err, errlen, "pool '%s' removed; needs a restart", po->name);
			return -EPERM;
		}
		for (k = 0; k < NR_POOL_KEYS; k++) {
			if (!key_differs(&pool_keys[k], po, pn, va, vb, sizeof(va)))
				continue;
			kv_errorf(err, errlen,
				   "pool.%s.%s changed from '%s' to '%s'; needs a restart",
				   po->name, pool_keys[k].name, va, vb);
			return -EPERM;
		}
	}
	for (i = 0; i < new->nr_pools; i++) {
		if (!kvmemd_config_pool(old, new->pools[i].name)) {
			kv_errorf(err, errlen, "pool '%s' added; needs a restart",
				   new->pools[i].name);
			return -EPERM;
		}
	}
	return 0;
}

/*
 * Refuse a reload that moves a region of pool @name from offset @a to @b:
 * its data region (@what "pool") or its checkpoint ("checkpoint of pool").
 */
static int swap_moved(const char *what, const char *name, u64 a, u64 b,
		      char *err, size_t errlen)
{
	char va[32], vb[32];

	kv_format_size(a, va, sizeof(va));
	kv_format_size(b, vb, sizeof(vb));
	kv_errorf(err, errlen,
		   "%s '%s' moved in the swap area from offset %s to %s; needs a restart",
		   what, name, va, vb);
	return -EPERM;
}

/*
 * Refuse a reload that moves a region of a pool in the swap area, its data
 * region or its checkpoint region (pools with swap reordered, or one added
 * before it): the running pools keep theirs, and a checkpoint is restored
 * from where it was written. @new has the pools of @old, of the same sizes
 * (pools_diff()).
 */
static int swap_diff(const struct kvmemd_config *old,
		     const struct kvmemd_config *new, char *err, size_t errlen)
{
	const char *name;
	u64 a, b;
	u32 i, j;

	for (i = 0; i < old->nr_pools; i++) {
		if (!old->pools[i].nr_frames[KVMEMD_TIER_SWAP])
			continue;
		name = old->pools[i].name;
		j = (u32)pool_index(new, name);
		a = kvmemd_config_swap_offset(old, i);
		b = kvmemd_config_swap_offset(new, j);
		if (a != b)
			return swap_moved("pool", name, a, b, err, errlen);
		a = kvmemd_config_ckpt_offset(old, i);
		b = kvmemd_config_ckpt_offset(new, j);
		if (a != b)
			return swap_moved("checkpoint of pool", name, a, b, err, errlen);
	}
	return 0;
}

/**
 * kvmemd_config_reload_diff() - what a reload would change
 * @old:     the running config
 * @new:     the config just loaded (kvmemd_config_load() succeeded)
 * @changed: receives the KVMEMD_CHANGED_* bits of the run-time keys whose
 *           values differ, KVMEMD_CHANGED_TENANTS when the tenant keys
 *           differ in any way (names, order, uid lists); may be NULL
 * @err:     when a restart-only key differs, a message naming it with
 *           both values; "" otherwise; may be NULL
 * @errlen:  size of @err
 *
 * On SIGHUP the daemon loads the file into a new config and calls this:
 * on 0 it applies the keys in *@changed and keeps @new; on -EPERM it logs
 * @err and keeps @old whole (no key of @new is applied).
 *
 * Return: 0 when only run-time keys differ (or none; tenants are run-time
 * keys); -EPERM when a key that needs a restart differs (socket.*,
 * admin.group, device.backend, swap.*, pools), or when the pools were
 * reordered so that a region of a pool with swap would move in the swap
 * area: its data region (kvmemd_config_swap_offset()) or its checkpoint
 * region (kvmemd_config_ckpt_offset()).
 */
int kvmemd_config_reload_diff(const struct kvmemd_config *old,
			      const struct kvmemd_config *new, u32 *changed,
			      char *err, size_t errlen)
{
	char va[VALUE_MAX], vb[VALUE_MAX];
	const struct config_key *k;
	u32 mask = 0;
	int ret = 0;

	kv_errorf(err, errlen, "%s", "");
	for (k = config_keys; k < config_keys + NR_KEYS; k++) {
		if (!key_differs(k, old, new, va, vb, sizeof(va)))
			continue;
		if (k->flags & KEY_RUNTIME) {
			mask |= k->changed;
		} else if (!ret) {
			kv_errorf(err, errlen,
				   "%s changed from '%s' to '%s'; needs a restart",
				   k->name, va, vb);
			ret = -EPERM;
		}
	}
	if (!ret)
		ret = pools_diff(old, new, err, errlen);
	if (!ret)
		ret = swap_diff(old, new, err, errlen);
	if (tenants_differ(old, new))
		mask |= KVMEMD_CHANGED_TENANTS;
	if (changed)
		*changed = mask;
	return ret;
}

/**
 * kvmemd_config_vm() - the reclaim tunables of a config, for the pools
 * @cfg: the config
 * @vm:  receives vm.min_free_kbytes, vm.watermark_scale_factor and
 *       vm.reclaim_batch, ready for kv_pool_params.vm or
 *       kv_pool_set_tunables()
 */
void kvmemd_config_vm(const struct kvmemd_config *cfg, struct kv_vm_tunables *vm)
{
	*vm = cfg->vm;
}

/**
 * kvmemd_config_pool() - find a pool of a config by name
 * @cfg:  the config
 * @name: the pool's name
 *
 * Return: the pool, or NULL when @cfg has none of that name.
 */
const struct kvmemd_pool_config *
kvmemd_config_pool(const struct kvmemd_config *cfg, const char *name)
{
	int i = pool_index(cfg, name);

	return i < 0 ? NULL : &cfg->pools[i];
}

/**
 * kvmemd_config_tenant() - the tenant a uid belongs to
 * @cfg: the config
 * @uid: the uid of a client
 *
 * Return: the index in @cfg->tenants of the tenant.NAME key that lists
 * @uid, or -ENOENT when the uid is in none (the uid is then its own tenant).
 */
int kvmemd_config_tenant(const struct kvmemd_config *cfg, u32 uid)
{
	u32 i;

	for (i = 0; i < cfg->nr_tenants; i++) {
		if (tenant_has_uid(&cfg->tenants[i], uid))
			return (int)i;
	}
	return -ENOENT;
}

/**
 * kvmemd_config_swap_offset() - where a pool's data region of the swap area starts
 * @cfg:        a loaded config
 * @pool_index: the pool, an index in @cfg->pools
 *
 * The pools' data regions lie one after another in the order of
 * @cfg->pools: pool i has nr_frames[KVMEMD_TIER_SWAP] slots of
 * kv_frame_bytes() of its own geometry, and its region starts at the end of
 * the last region before it rounded up to KVMEMD_SWAP_ALIGN (1 MiB), so
 * that it is aligned for O_DIRECT. A pool without swap takes no room. The
 * checkpoint regions follow them (kvmemd_config_ckpt_offset()).
 * kvmemd_config_load() has checked that the whole area ends within
 * INT64_MAX bytes.
 *
 * Return: the byte offset of the data region of pool @pool_index in the
 * file or device of swap.path; for a pool without swap, or an index past
 * the last pool, where such a region would start (past the last pool: where
 * the first checkpoint region starts, when any pool has swap).
 */
u64 kvmemd_config_swap_offset(const struct kvmemd_config *cfg, u32 pool_index)
{
	return swap_align(swap_end(cfg, pool_index));
}

/**
 * kvmemd_config_ckpt_offset() - where a pool's checkpoint region starts
 * @cfg:        a loaded config
 * @pool_index: the pool, an index in @cfg->pools
 *
 * Each pool with swap (nr_frames[KVMEMD_TIER_SWAP] > 0) has a checkpoint
 * region, where kv_pool_checkpoint() writes its prefix cache for
 * kv_pool_restore() (swap.persist, `kvmemctl checkpoint'). The checkpoint
 * regions follow the last data region, one after another in the order of
 * @cfg->pools, each starting at the end of the region before it rounded up
 * to KVMEMD_SWAP_ALIGN, and kvmemd_config_ckpt_size() long.
 *
 * Return: the byte offset of the checkpoint region of pool @pool_index in
 * the file or device of swap.path; for a pool without swap, or an index
 * past the last pool, where such a region would start.
 */
u64 kvmemd_config_ckpt_offset(const struct kvmemd_config *cfg, u32 pool_index)
{
	return swap_align(ckpt_end(cfg, pool_index));
}

/**
 * kvmemd_config_ckpt_size() - the bytes of a pool's checkpoint region
 * @cfg:        a loaded config
 * @pool_index: the pool, an index in @cfg->pools
 *
 * Return: kv_checkpoint_bytes() of the pool's geometry and swap frames (a
 * multiple of 4096), the @len to give kv_pool_checkpoint() and
 * kv_pool_restore(); 0 for a pool without swap, or an index past the last
 * pool.
 */
u64 kvmemd_config_ckpt_size(const struct kvmemd_config *cfg, u32 pool_index)
{
	return pool_index < cfg->nr_pools ? ckpt_region_bytes(&cfg->pools[pool_index]) : 0;
}

/**
 * kvmemd_config_swap_size() - the bytes of the swap area that the pools use
 * @cfg: a loaded config
 *
 * Return: the end of the last checkpoint region (the data regions all lie
 * before it), laid out as kvmemd_config_swap_offset() and
 * kvmemd_config_ckpt_offset() say, that is the least size of the file or
 * device of swap.path; 0 when no pool has swap.
 */
u64 kvmemd_config_swap_size(const struct kvmemd_config *cfg)
{
	return ckpt_end(cfg, cfg->nr_pools);
}

/* A value that the parser would cut at a comment or trim needs quotes. */
static bool value_needs_quotes(const char *v)
{
	size_t n = strlen(v);

	return strstr(v, " #") || strstr(v, "\t#") ||
	       (n && (v[n - 1] == ' ' || v[n - 1] == '\t'));
}

static void key_print(const struct config_key *k, const char *prefix,
		      const void *base, FILE *f)
{
	char v[VALUE_MAX];

	key_format(k, base, v, sizeof(v));
	if (!v[0])
		fprintf(f, "# %s%s is not set\n", prefix, k->name);
	else if (value_needs_quotes(v))
		fprintf(f, "%s%s = \"%s\"\n", prefix, k->name, v);
	else
		fprintf(f, "%s%s = %s\n", prefix, k->name, v);
}

static void tenant_print(const struct kvmemd_tenant_config *t, FILE *f)
{
	char v[TENANT_VALUE_MAX];

	tenant_format(t, v, sizeof(v));
	fprintf(f, "%s%s = %s\n", TENANT_PREFIX, t->name, v);
}

/**
 * kvmemd_config_print() - write a config as a configuration file
 * @cfg: the config
 * @f:   where to write: one `key = value' line per key, then the tenant
 *       keys in their order, pools last; keys with an empty value appear as
 *       comments, except a pool's model and hf_config, left out when not
 *       set. A pool with a model also shows the geometry it gives (those
 *       keys load back: they agree with it)
 *
 * What it writes loads back into the same config.
 *
 * Return: 0, or -EIO when writing failed.
 */
int kvmemd_config_print(const struct kvmemd_config *cfg, FILE *f)
{
	char prefix[KVMEMD_POOL_NAME_MAX + 8];
	size_t k;
	u32 i;

	for (k = 0; k < NR_KEYS; k++)
		key_print(&config_keys[k], "", cfg, f);
	for (i = 0; i < cfg->nr_tenants; i++)
		tenant_print(&cfg->tenants[i], f);
	for (i = 0; i < cfg->nr_pools; i++) {
		snprintf(prefix, sizeof(prefix), "pool.%s.", cfg->pools[i].name);
		for (k = 0; k < NR_POOL_KEYS; k++) {
			if (key_is_string(&pool_keys[k]) &&
			    !((const char *)&cfg->pools[i] + pool_keys[k].off)[0])
				continue;	/* no model, no hf_config */
			key_print(&pool_keys[k], prefix, &cfg->pools[i], f);
		}
	}
	return ferror(f) ? -EIO : 0;
}
