// SPDX-License-Identifier: MIT
/*
 * daemon/config.c: kvmemd.conf. The defaults; every key parsed; a missing
 * file with and without KVMEMD_CONFIG_MISSING_OK; unknown, duplicate and
 * out-of-range keys and incomplete or unusable pools, each reported at its
 * FILE:LINE; set/get of the run-time keys and refusal of the others; the
 * reload check; print and load round trip; the example file. The prefix
 * cache keys: pool.NAME.prefix, and the tenant.NAME uid lists with their
 * errors, lookup, reload and printing. The swap area: swap.path,
 * swap.engine, swap.persist and pool.NAME.swap_mem, the swap frames, and
 * the layout of the pools' data and checkpoint regions
 * (kvmemd_config_swap_offset(), kvmemd_config_ckpt_offset(),
 * kvmemd_config_ckpt_size(), kvmemd_config_swap_size()). A pool's geometry
 * from a model: pool.NAME.model (every preset), pool.NAME.hf_config (a
 * config.json written here), the keys that may go with them, conflicts,
 * unknown presets, broken files, printing and reloading. Quantized pools
 * (dtype int8, fp8, int4): their frames, and head_dim a multiple of 32.
 *
 * daemon/config.c is not part of libkvmm.a, so it is compiled in here.
 */
#include "kselftest_harness.h"
#include "config_test.h"

#include "daemon/config.c"

/* Load @text from a temporary file, named in @path for the messages. */
static int load_text(const char *text, struct kvmemd_config *cfg,
		     char path[TMP_PATH_MAX], char *err)
{
	int ret;

	ret = tmp_write(path, text);
	if (ret)
		return ret;
	ret = kvmemd_config_load(cfg, path, 0, err, KV_CONFIG_ERR_MAX);
	unlink(path);
	return ret;
}

/* Print @cfg as a config file into a string; free() it. */
static char *config_text(const struct kvmemd_config *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	if (kvmemd_config_print(cfg, f)) {
		fclose(f);
		free(buf);
		return NULL;
	}
	fclose(f);
	return buf;
}

static int config_equal(const struct kvmemd_config *a, const struct kvmemd_config *b)
{
	char *ta = config_text(a), *tb = config_text(b);
	int eq = ta && tb && !strcmp(ta, tb);

	if (!eq && ta && tb)
		printf("# configs differ:\n# ---\n%s# ---\n%s", ta, tb);
	free(ta);
	free(tb);
	return eq;
}

TEST(defaults)
{
	struct kvmemd_config cfg;
	const struct kvmemd_pool_config *pc;
	struct kv_vm_tunables vm;

	memset(&cfg, 0xa5, sizeof(cfg));
	kvmemd_config_defaults(&cfg);
	EXPECT_STREQ("/run/kvmemd/kvmemd.sock", cfg.socket_path);
	EXPECT_EQ(0660, cfg.socket_mode);
	EXPECT_STREQ("", cfg.socket_group);
	EXPECT_STREQ("", cfg.admin_group);
	EXPECT_EQ(KVMEMD_LOG_INFO, cfg.log_level);
	EXPECT_EQ(KVMEMD_BACKEND_AUTO, cfg.backend);
	EXPECT_STREQ("", cfg.swap_path);
	EXPECT_EQ(KVMEMD_SWAP_AUTO, cfg.swap_engine);
	EXPECT_EQ(0, cfg.swap_persist);
	EXPECT_EQ(0, cfg.vm.min_free_kbytes);
	EXPECT_EQ(10, cfg.vm.watermark_scale_factor);
	EXPECT_EQ(32, cfg.vm.reclaim_batch);
	ASSERT_EQ(1, cfg.nr_pools);
	pc = &cfg.pools[0];
	EXPECT_STREQ("default", pc->name);
	EXPECT_EQ(4, pc->geom.layers);
	EXPECT_EQ(4, pc->geom.kv_heads);
	EXPECT_EQ(64, pc->geom.head_dim);
	EXPECT_EQ(16, pc->geom.block_tokens);
	EXPECT_EQ(KV_DTYPE_FP16, pc->geom.dtype);
	EXPECT_EQ(0, pc->geom.pad);
	EXPECT_TRUE(kv_geometry_valid(&pc->geom));
	EXPECT_EQ(64ull << 20, pc->device_mem);
	EXPECT_EQ(256ull << 20, pc->host_mem);
	EXPECT_EQ(0, pc->swap_mem);
	EXPECT_EQ(KVMEMD_PREFIX_TENANT, pc->prefix);
	EXPECT_EQ(0, cfg.nr_tenants);
	EXPECT_EQ(-ENOENT, kvmemd_config_tenant(&cfg, 0));
	EXPECT_EQ(65536, kv_frame_bytes(&pc->geom));
	EXPECT_EQ(1024, pc->nr_frames[KV_TIER_DEVICE]);
	EXPECT_EQ(4096, pc->nr_frames[KV_TIER_HOST]);
	EXPECT_EQ(0, pc->nr_frames[KVMEMD_TIER_SWAP]);
	EXPECT_EQ(0, kvmemd_config_swap_offset(&cfg, 0));
	EXPECT_EQ(0, kvmemd_config_ckpt_offset(&cfg, 0));
	EXPECT_EQ(0, kvmemd_config_ckpt_size(&cfg, 0));
	EXPECT_EQ(0, kvmemd_config_swap_size(&cfg));
	kvmemd_config_vm(&cfg, &vm);
	EXPECT_EQ(0, vm.min_free_kbytes);
	EXPECT_EQ(10, vm.watermark_scale_factor);
	EXPECT_EQ(32, vm.reclaim_batch);
	EXPECT_EQ(pc, kvmemd_config_pool(&cfg, "default"));
	EXPECT_NULL(kvmemd_config_pool(&cfg, "other"));
}

TEST(every_key)
{
	static const char text[] =
		"# every key, none at its default\n"
		"socket.path = /tmp/kvmem test/kvmemd.sock   # blanks are kept\n"
		"socket.mode = 0600\n"
		"socket.group = kvmem\n"
		"admin.group = kvmem-admin\n"
		"log.level = debug\n"
		"device.backend = cpu\n"
		"swap.path = /var/lib/kv mem/swap#1   # a '#' in a word is kept\n"
		"swap.engine = psync\n"
		"swap.persist = 1\n"
		"vm.min_free_kbytes = 0x400\n"
		"vm.watermark_scale_factor = 3000\n"
		"vm.reclaim_batch = 256\n"
		"pool.llama.layers = 32\n"
		"pool.small.layers = 1\n"
		"pool.llama.kv_heads = 8\n"
		"pool.llama.head_dim = 128\n"
		"pool.llama.block_tokens = 16\n"
		"pool.llama.dtype = bf16\n"
		"pool.llama.device_mem = 16M\n"
		"pool.llama.host_mem = 0x4000000\n"
		"pool.llama.swap_mem = 1G\n"
		"pool.small.kv_heads = 1\n"
		"pool.small.head_dim = 8\n"
		"pool.small.block_tokens = 4\n"
		"pool.small.dtype = fp32\n"
		"pool.small.device_mem = 16K\n"
		"pool.small.host_mem = 0\n"
		"pool.small.swap_mem = 6K\n";
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX] = "junk";
	const struct kvmemd_pool_config *pc;
	struct kvmemd_config cfg;

	ASSERT_EQ(0, load_text(text, &cfg, path, err));
	EXPECT_STREQ("", err);
	EXPECT_STREQ("/tmp/kvmem test/kvmemd.sock", cfg.socket_path);
	EXPECT_EQ(0600, cfg.socket_mode);
	EXPECT_STREQ("kvmem", cfg.socket_group);
	EXPECT_STREQ("kvmem-admin", cfg.admin_group);
	EXPECT_EQ(KVMEMD_LOG_DEBUG, cfg.log_level);
	EXPECT_EQ(KVMEMD_BACKEND_CPU, cfg.backend);
	EXPECT_STREQ("/var/lib/kv mem/swap#1", cfg.swap_path);
	EXPECT_EQ(KVMEMD_SWAP_PSYNC, cfg.swap_engine);
	EXPECT_EQ(1, cfg.swap_persist);
	EXPECT_EQ(1024, cfg.vm.min_free_kbytes);
	EXPECT_EQ(3000, cfg.vm.watermark_scale_factor);
	EXPECT_EQ(256, cfg.vm.reclaim_batch);
	ASSERT_EQ(2, cfg.nr_pools);

	/* In the order of their first key. */
	pc = &cfg.pools[0];
	EXPECT_STREQ("llama", pc->name);
	EXPECT_EQ(32, pc->geom.layers);
	EXPECT_EQ(8, pc->geom.kv_heads);
	EXPECT_EQ(128, pc->geom.head_dim);
	EXPECT_EQ(16, pc->geom.block_tokens);
	EXPECT_EQ(KV_DTYPE_BF16, pc->geom.dtype);
	EXPECT_EQ(16ull << 20, pc->device_mem);
	EXPECT_EQ(64ull << 20, pc->host_mem);
	/* 32 layers x 2 x 8 heads x 16 tokens x 128 x 2 bytes = 2M a block */
	EXPECT_EQ(8, pc->nr_frames[KV_TIER_DEVICE]);
	EXPECT_EQ(32, pc->nr_frames[KV_TIER_HOST]);
	EXPECT_EQ(1ull << 30, pc->swap_mem);
	EXPECT_EQ(512, pc->nr_frames[KVMEMD_TIER_SWAP]);
	EXPECT_EQ(KVMEMD_PREFIX_TENANT, pc->prefix);

	pc = kvmemd_config_pool(&cfg, "small");
	ASSERT_NE_NULL(pc);
	EXPECT_EQ(&cfg.pools[1], pc);
	EXPECT_EQ(1, pc->geom.layers);
	EXPECT_EQ(KV_DTYPE_FP32, pc->geom.dtype);
	EXPECT_EQ(0, pc->host_mem);
	/* 256 bytes of KV, one 4K frame each */
	EXPECT_EQ(4, pc->nr_frames[KV_TIER_DEVICE]);
	EXPECT_EQ(0, pc->nr_frames[KV_TIER_HOST]);
	EXPECT_EQ(6144, pc->swap_mem);
	EXPECT_EQ(1, pc->nr_frames[KVMEMD_TIER_SWAP]);

	/* llama's region first, then small's, already 1M-aligned. */
	EXPECT_EQ(0, kvmemd_config_swap_offset(&cfg, 0));
	EXPECT_EQ(1ull << 30, kvmemd_config_swap_offset(&cfg, 1));
	/*
	 * Then their checkpoints, from the next 1M: 4K + 64K + 512 entries of
	 * 32 + 4 x 16 bytes is 116K; 4K + 64K + 48 bytes rounds up to 72K.
	 */
	EXPECT_EQ((1ull << 30) + (1 << 20), kvmemd_config_ckpt_offset(&cfg, 0));
	EXPECT_EQ(116 << 10, kvmemd_config_ckpt_size(&cfg, 0));
	EXPECT_EQ((1ull << 30) + (2 << 20), kvmemd_config_ckpt_offset(&cfg, 1));
	EXPECT_EQ(72 << 10, kvmemd_config_ckpt_size(&cfg, 1));
	EXPECT_EQ((1ull << 30) + (2 << 20) + (72 << 10), kvmemd_config_swap_size(&cfg));
}

TEST(swap_engines)
{
	static const struct {
		const char *name;
		u32 engine;
	} want[] = {
		{ "auto", KVMEMD_SWAP_AUTO },
		{ "io_uring", KVMEMD_SWAP_IO_URING },
		{ "psync", KVMEMD_SWAP_PSYNC },
	};
	char err[KV_CONFIG_ERR_MAX], text[64], buf[16];
	struct kvmemd_config cfg;
	size_t i;

	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		snprintf(text, sizeof(text), "swap.engine = %s\n", want[i].name);
		ASSERT_EQ(0, kvmemd_config_load_string(&cfg, "e", text, err, sizeof(err)));
		EXPECT_EQ(want[i].engine, cfg.swap_engine);
		/* An engine without a swap area is allowed, and unused. */
		EXPECT_STREQ("", cfg.swap_path);
		EXPECT_EQ(0, kvmemd_config_get(&cfg, "swap.engine", buf, sizeof(buf)));
		EXPECT_STREQ(want[i].name, buf);
	}
}

/* swap.path may be KVMEMD_SWAP_PATH_MAX - 1 bytes, longer than a socket's. */
TEST(longest_swap_path)
{
	char text[KVMEMD_SWAP_PATH_MAX + 64], want[KVMEMD_SWAP_PATH_MAX + 64];
	char err[KV_CONFIG_ERR_MAX], buf[KVMEMD_SWAP_PATH_MAX];
	struct kvmemd_config cfg, other;
	char *printed;
	u32 changed;

	memset(buf, 'a', sizeof(buf));
	buf[0] = '/';
	buf[sizeof(buf) - 1] = '\0';
	snprintf(text, sizeof(text), "swap.path = %s\n", buf);
	ASSERT_EQ(0, kvmemd_config_load_string(&cfg, "long", text, err, sizeof(err)));
	EXPECT_EQ(KVMEMD_SWAP_PATH_MAX - 1, strlen(cfg.swap_path));
	EXPECT_STREQ(buf, cfg.swap_path);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "swap.path", buf, sizeof(buf)));
	EXPECT_STREQ(cfg.swap_path, buf);
	EXPECT_EQ(-ERANGE, kvmemd_config_get(&cfg, "swap.path", buf, sizeof(buf) - 1));

	/* Printed whole, so that it loads back. */
	printed = config_text(&cfg);
	ASSERT_NE_NULL(printed);
	snprintf(want, sizeof(want), "swap.path = %s\n", cfg.swap_path);
	EXPECT_NE_NULL(strstr(printed, want));
	ASSERT_EQ(0, kvmemd_config_load_string(&other, "printed", printed, err,
					       sizeof(err)));
	EXPECT_EQ(0, memcmp(&cfg, &other, sizeof(cfg)));
	free(printed);

	/* Compared whole: a change in the last byte needs a restart. */
	other.swap_path[KVMEMD_SWAP_PATH_MAX - 2] = 'b';
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&cfg, &other, &changed, err,
						    sizeof(err)));
	EXPECT_EQ(0, strncmp(err, "swap.path changed from '/aaa", 28));

	/* One byte more is too long. */
	snprintf(text, sizeof(text), "\nswap.path = %sa\n", cfg.swap_path);
	EXPECT_EQ(-EINVAL, kvmemd_config_load_string(&other, "long", text, err,
						     sizeof(err)));
	EXPECT_STREQ("long:2: swap.path: longer than 255 bytes", err);
}

TEST(no_pools_gets_the_default_pool)
{
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX];
	struct kvmemd_config cfg, def;

	ASSERT_EQ(0, load_text("vm.reclaim_batch = 8\n", &cfg, path, err));
	kvmemd_config_defaults(&def);
	EXPECT_EQ(8, cfg.vm.reclaim_batch);
	def.vm.reclaim_batch = 8;
	EXPECT_TRUE(config_equal(&def, &cfg));
	ASSERT_EQ(0, load_text("", &cfg, path, err));
	kvmemd_config_defaults(&def);
	EXPECT_TRUE(config_equal(&def, &cfg));
	/* on the first GPU the daemon may use */
	ASSERT_EQ(0, load_text("device.gpus = 3,2\n", &cfg, path, err));
	EXPECT_EQ(2u, cfg.pools[0].gpu);
	ASSERT_EQ(0, load_text("device.gpus = 0\n", &cfg, path, err));
	EXPECT_EQ(0u, cfg.pools[0].gpu);
}

TEST(cuda_backend_is_accepted)
{
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX];
	struct kvmemd_config cfg;

	ASSERT_EQ(0, load_text("device.backend = cuda\n", &cfg, path, err));
	EXPECT_EQ(KVMEMD_BACKEND_CUDA, cfg.backend);
}

TEST(missing_file)
{
	char err[KV_CONFIG_ERR_MAX], dir[] = "/tmp/kvmem-config-dir-XXXXXX";
	struct kvmemd_config cfg, def;

	/* A file named explicitly must exist; the output is untouched. */
	memset(&cfg, 0x5a, sizeof(cfg));
	EXPECT_EQ(-ENOENT, kvmemd_config_load(&cfg, "/nonexistent/kvmemd.conf", 0,
					      err, sizeof(err)));
	EXPECT_STREQ("/nonexistent/kvmemd.conf: No such file or directory", err);
	EXPECT_EQ(0x5a5a5a5a, cfg.nr_pools);

	/* The default file may be missing: defaults, and a note. */
	EXPECT_EQ(0, kvmemd_config_load(&cfg, "/nonexistent/kvmemd.conf",
					KVMEMD_CONFIG_MISSING_OK, err, sizeof(err)));
	EXPECT_STREQ("/nonexistent/kvmemd.conf: No such file or directory; "
		     "using the built-in defaults", err);
	kvmemd_config_defaults(&def);
	EXPECT_TRUE(config_equal(&def, &cfg));

	/* ... but not unreadable. */
	ASSERT_NE_NULL(mkdtemp(dir));
	EXPECT_EQ(-EISDIR, kvmemd_config_load(&cfg, dir, KVMEMD_CONFIG_MISSING_OK,
					      err, sizeof(err)));
	rmdir(dir);
	EXPECT_TRUE(err_is(err, dir, 0, "Is a directory"));

	EXPECT_EQ(-EINVAL, kvmemd_config_load(&cfg, "/x", 0x80, err, sizeof(err)));
}

/* A file, and the line and message of its first error. */
struct bad_file {
	const char *text;
	unsigned int line;
	const char *what;
};

static const struct bad_file bad_files[] = {
	/* unknown keys */
	{ "vm.reclaim_batch = 4\n\nvm.nope = 1\n", 3, "unknown key 'vm.nope'" },
	{ "socket = /x\n", 1, "unknown key 'socket'" },
	{ "pool.a.layers = 1\npool.a.colour = red\n", 2, "unknown key 'pool.a.colour'" },
	{ "pool.a = 1\n", 1, "unknown key 'pool.a'" },
	{ "pool.a.b.layers = 1\n", 1, "unknown key 'pool.a.b.layers'" },
	{ "Vm.reclaim_batch = 1\n", 1, "invalid character 'V'" },
	/* duplicates name the earlier line */
	{ "vm.reclaim_batch = 4\n# x\nvm.reclaim_batch = 4\n", 3,
	  "duplicate key 'vm.reclaim_batch' (first set at line 1)" },
	{ "\nlog.level = info\nlog.level=debug\n", 3,
	  "duplicate key 'log.level' (first set at line 2)" },
	{ "pool.a.layers = 1\npool.b.layers = 1\npool.a.layers = 2\n", 3,
	  "duplicate key 'pool.a.layers' (first set at line 1)" },
	/* out of range and malformed values */
	{ "vm.min_free_kbytes = 1099511627777\n", 1,
	  "vm.min_free_kbytes: '1099511627777' is out of range (0..1099511627776)" },
	{ "vm.watermark_scale_factor = 0\n", 1,
	  "vm.watermark_scale_factor: '0' is out of range (1..3000)" },
	{ "vm.watermark_scale_factor = 3001\n", 1, "out of range (1..3000)" },
	{ "vm.reclaim_batch = 0\n", 1, "vm.reclaim_batch: '0' is out of range (1..256)" },
	{ "vm.reclaim_batch = 257\n", 1, "out of range (1..256)" },
	{ "vm.reclaim_batch = 99999999999999999999999\n", 1, "out of range (1..256)" },
	{ "vm.reclaim_batch = -1\n", 1,
	  "vm.reclaim_batch: '-1' is not a decimal or 0x hexadecimal number" },
	{ "vm.reclaim_batch = 32 blocks\n", 1, "'32 blocks' is not a decimal" },
	{ "log.level = verbose\n", 1,
	  "log.level: 'verbose' is not one of: error, warn, info, debug" },
	{ "log.level = INFO\n", 1, "is not one of" },
	{ "device.backend = rocm\n", 1,
	  "device.backend: 'rocm' is not one of: auto, cpu, cuda" },
	{ "socket.mode = 10000\n", 1, "socket.mode: '10000' is out of range (0..07777)" },
	{ "socket.mode = 0689\n", 1, "socket.mode: '0689' is not an octal mode" },
	{ "socket.path = run/kvmemd.sock\n", 1,
	  "socket.path: 'run/kvmemd.sock' is not an absolute path" },
	{ "socket.path = /" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\n", 1,
	  "socket.path: longer than 107 bytes" },
	{ "socket.group = kv mem\n", 1, "socket.group: 'kv mem' is not a valid group name" },
	{ "admin.group = -wheel\n", 1, "admin.group: '-wheel' is not a valid group name" },
	{ "admin.group = a:b\n", 1, "is not a valid group name" },
	/* swap */
	{ "log.level = info\nswap.path = var/lib/kvmemd/swap\n", 2,
	  "swap.path: 'var/lib/kvmemd/swap' is not an absolute path" },
	{ "swap.path = ./swap\n", 1, "swap.path: './swap' is not an absolute path" },
	{ "swap.path = /dev/nvme0n1\n\nswap.path = /dev/nvme1n1\n", 3,
	  "duplicate key 'swap.path' (first set at line 1)" },
	{ "swap.engine = aio\n", 1,
	  "swap.engine: 'aio' is not one of: auto, io_uring, psync" },
	{ "\n\nswap.engine = IO_URING\n", 3, "swap.engine: 'IO_URING' is not one of" },
	{ "swap.engine = io-uring\n", 1, "swap.engine: 'io-uring' is not one of" },
	{ "swap.engine = psync\nswap.engine = psync\n", 2,
	  "duplicate key 'swap.engine' (first set at line 1)" },
	{ "swap.persist = 2\n", 1, "swap.persist: '2' is out of range (0..1)" },
	{ "swap.path = /s\nswap.persist = yes\n", 2,
	  "swap.persist: 'yes' is not a decimal or 0x hexadecimal number" },
	{ "swap.persist = -1\n", 1, "swap.persist: '-1' is not a decimal" },
	{ "swap.persist = 0x10000000000000001\n", 1,
	  "swap.persist: '0x10000000000000001' is out of range (0..1)" },
	{ "swap.persist = 0\n\nswap.persist = 1\n", 3,
	  "duplicate key 'swap.persist' (first set at line 1)" },
	{ "swap.persistent = 1\n", 1, "unknown key 'swap.persistent'" },
	{ "swap = /dev/nvme0n1\n", 1, "unknown key 'swap'" },
	{ "swap.size = 1G\n", 1, "unknown key 'swap.size'" },
	/* pools */
	{ "pool.a.layers = 0\n", 1, "pool.a.layers: '0' is out of range (1..1024)" },
	{ "pool.a.kv_heads = 1025\n", 1, "pool.a.kv_heads: '1025' is out of range (1..1024)" },
	{ "pool.a.head_dim = 2048\n", 1, "pool.a.head_dim: '2048' is out of range (1..1024)" },
	{ "pool.a.block_tokens = 4097\n", 1,
	  "pool.a.block_tokens: '4097' is out of range (1..4096)" },
	{ "pool.a.dtype = fp4\n", 1,
	  "pool.a.dtype: 'fp4' is not one of: fp16, bf16, fp32, int8, fp8, int4" },
	{ "pool.a.dtype = INT8\n", 1, "pool.a.dtype: 'INT8' is not one of" },
	{ "pool.a.dtype = fp8_e4m3\n", 1, "pool.a.dtype: 'fp8_e4m3' is not one of" },
	{ "pool.a.device_mem = 99999999999T\n", 1,
	  "pool.a.device_mem: '99999999999T' is too large" },
	{ "pool.a.host_mem = 1.5G\n", 1, "pool.a.host_mem: '1.5G' is not a size" },
	{ "pool.a.host_mem = 1P\n", 1, "is not a size" },
	{ "pool.abcdefghijklmnopqrstuvwxyz012345.layers = 1\n", 1,
	  "pool name in 'pool.abcdefghijklmnopqrstuvwxyz012345.layers' is longer than 31 bytes" },
	{ "pool.a.layers = 1\npool.a.prefix = shared\n", 2,
	  "pool.a.prefix: 'shared' is not one of: tenant, global, off" },
	{ "pool.a.prefix = Off\n", 1, "pool.a.prefix: 'Off' is not one of" },
	{ "pool.a.prefix = off\n\npool.a.prefix = off\n", 3,
	  "duplicate key 'pool.a.prefix' (first set at line 1)" },
	{ "pool.a.layers = 1\npool.a.swap_mem = 1.5G\n", 2,
	  "pool.a.swap_mem: '1.5G' is not a size" },
	{ "pool.a.swap_mem = -1\n", 1, "pool.a.swap_mem: '-1' is not a size" },
	{ "pool.a.swap_mem = 16777216T\n", 1, "pool.a.swap_mem: '16777216T' is too large" },
	{ "pool.a.swap_mem = 1G\npool.a.swap_mem = 1G\n", 2,
	  "duplicate key 'pool.a.swap_mem' (first set at line 1)" },
	{ "pool.a.swap = 1G\n", 1, "unknown key 'pool.a.swap'" },
	/* syntax, through the same path */
	{ "log.level info\n", 1, "expected 'key = value'" },
	{ "log.level = \n", 1, "missing value for 'log.level'" },
};

TEST(bad_values_name_file_and_line)
{
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX];
	struct kvmemd_config cfg;
	size_t i;

	for (i = 0; i < sizeof(bad_files) / sizeof(bad_files[0]); i++) {
		memset(&cfg, 0x5a, sizeof(cfg));
		EXPECT_EQ(-EINVAL, load_text(bad_files[i].text, &cfg, path, err));
		EXPECT_TRUE(err_is(err, path, bad_files[i].line, bad_files[i].what));
		EXPECT_EQ(0x5a5a5a5a, cfg.nr_pools);
	}
}

#define GEOM(n, l)							\
	"pool." n ".layers = " l "\n"					\
	"pool." n ".kv_heads = 2\n"					\
	"pool." n ".head_dim = 8\n"					\
	"pool." n ".block_tokens = 4\n"					\
	"pool." n ".dtype = fp16\n"

/* The largest frame there is, 2^45 bytes (32T), four of them on the device. */
#define HUGE(n)								\
	"pool." n ".layers = 1024\n"					\
	"pool." n ".kv_heads = 1024\n"					\
	"pool." n ".head_dim = 1024\n"					\
	"pool." n ".block_tokens = 4096\n"				\
	"pool." n ".dtype = fp32\n"					\
	"pool." n ".device_mem = 128T\n"					\
	"pool." n ".host_mem = 0\n"

/* Frames of 2^(32 + fp32) bytes: one-token blocks of the largest heads. */
#define BIG(n, dtype, dev)						\
	"pool." n ".layers = 1024\n"					\
	"pool." n ".kv_heads = 1024\n"					\
	"pool." n ".head_dim = 1024\n"					\
	"pool." n ".block_tokens = 1\n"					\
	"pool." n ".dtype = " dtype "\n"					\
	"pool." n ".device_mem = " dev "\n"				\
	"pool." n ".host_mem = 0\n"

static const struct bad_file bad_pools[] = {
	/* incomplete pools name the line of their first key */
	{ "log.level = info\n"
	  "pool.a.layers = 2\n"
	  "pool.a.kv_heads = 2\n"
	  "pool.a.block_tokens = 4\n"
	  "pool.a.dtype = fp16\n"
	  "pool.a.device_mem = 1M\n"
	  "pool.a.host_mem = 1M\n", 2, "pool 'a': missing pool.a.head_dim" },
	{ GEOM("a", "2") "pool.a.device_mem = 1M\n", 1, "pool 'a': missing pool.a.host_mem" },
	{ GEOM("a", "2") "pool.a.host_mem = 1M\n", 1, "pool 'a': missing pool.a.device_mem" },
	{ GEOM("a", "2") "pool.a.device_mem = 1M\npool.a.host_mem = 1M\n\n"
	  "pool.b.dtype = fp16\n", 9, "pool 'b': missing pool.b.layers" },
	/* 512-byte blocks in 4K frames: 16K holds 4 */
	{ GEOM("a", "2") "pool.a.device_mem = 16383\npool.a.host_mem = 0\n", 6,
	  "pool.a.device_mem: holds 3 frames of 4K, at least 4 are needed" },
	{ GEOM("a", "2") "pool.a.device_mem = 0\npool.a.host_mem = 0\n", 6,
	  "pool.a.device_mem: holds 0 frames of 4K, at least 4 are needed" },
	{ GEOM("a", "2") "pool.a.device_mem = 8T\npool.a.host_mem = 0\n", 6,
	  "pool.a.device_mem: 2147483648 frames of 4K, at most 2147483647 are allowed" },
	{ GEOM("a", "2") "pool.a.host_mem = 4T\npool.a.device_mem = 4T\n", 6,
	  "pool.a.host_mem: 2147483648 frames of 4K in all, at most 2147483647" },
	/* swap_mem needs swap.path, even when it holds no frame */
	{ GEOM("a", "2") "pool.a.device_mem = 1M\npool.a.host_mem = 1M\n"
	  "pool.a.swap_mem = 1G\n", 8, "pool.a.swap_mem needs swap.path" },
	{ GEOM("a", "2") "pool.a.swap_mem = 1\n"
	  "pool.a.device_mem = 1M\npool.a.host_mem = 1M\n", 6,
	  "pool.a.swap_mem needs swap.path" },
	{ GEOM("a", "2") "pool.a.device_mem = 1M\npool.a.host_mem = 1M\n"
	  GEOM("b", "2") "pool.b.device_mem = 1M\npool.b.host_mem = 1M\n"
	  "pool.b.swap_mem = 4K\n", 15, "pool.b.swap_mem needs swap.path" },
	/* device, host and swap frames together */
	{ "swap.path = /dev/nvme0n1\n" GEOM("a", "2") "pool.a.device_mem = 16K\n"
	  "pool.a.swap_mem = 4K\npool.a.host_mem = 0x7ffffffb000\n", 8,
	  "pool.a.swap_mem: 2147483648 frames of 4K in all, at most 2147483647 are allowed" },
	{ "swap.path = /dev/nvme0n1\n" GEOM("a", "2") "pool.a.device_mem = 16K\n"
	  "pool.a.host_mem = 0\npool.a.swap_mem = 8T\n", 9,
	  "pool.a.swap_mem: 2147483652 frames of 4K in all, at most 2147483647 are allowed" },
	/* 32T frames: two regions of 2^62 bytes end past 2^63 - 1 */
	{ "swap.path = /dev/nvme0n1\n" HUGE("a") "pool.a.swap_mem = 4194304T\n"
	  HUGE("b") "pool.b.swap_mem = 4194304T\n", 17,
	  "pool.b.swap_mem: the swap area would end past 9223372036854775807 bytes" },
	/*
	 * The data regions end at 2^63 - 4G: a [0, 2^62), b [2^62, 2^63 - 32T),
	 * c 8191 frames of 4G. a's checkpoint of 2^17 entries of 32 + 4 x 4096
	 * bytes, 2052M + 68K, fits; b's, from the next 1M, ends 9M + 968K past.
	 */
	{ "swap.path = /dev/nvme0n1\n" HUGE("a") "pool.a.swap_mem = 4194304T\n"
	  HUGE("b") "pool.b.swap_mem = 4194303T\n" BIG("c", "fp16", "16G")
	  "pool.c.swap_mem = 32764G\n", 17,
	  "pool.b.swap_mem: its checkpoint region would end the swap area past "
	  "9223372036854775807 bytes" },
	/* a pool's GPU is one of device.gpus, set or by default */
	{ "device.gpus = 0,2\n" GEOM("a", "2") "pool.a.device_mem = 1M\n"
	  "pool.a.host_mem = 1M\npool.a.gpu = 1\n", 9,
	  "pool.a.gpu = 1: not in device.gpus (line 1)" },
	{ "device.gpus = 1\n" GEOM("a", "2") "pool.a.device_mem = 1M\n"
	  "pool.a.host_mem = 1M\n", 2,
	  "pool 'a' is on GPU 0 (pool.a.gpu unset), which device.gpus (line 1) leaves out" },
	/* swap.persist needs swap.path, whatever the pools */
	{ "log.level = info\n\nswap.persist = 1\n", 3, "swap.persist needs swap.path" },
	{ "swap.persist = 0x1\n" GEOM("a", "2") "pool.a.device_mem = 1M\n"
	  "pool.a.host_mem = 1M\npool.a.swap_mem = 1G\n", 1,
	  "swap.persist needs swap.path" },
};

TEST(bad_pools_name_file_and_line)
{
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX];
	struct kvmemd_config cfg;
	size_t i;

	for (i = 0; i < sizeof(bad_pools) / sizeof(bad_pools[0]); i++) {
		EXPECT_EQ(-EINVAL, load_text(bad_pools[i].text, &cfg, path, err));
		EXPECT_TRUE(err_is(err, path, bad_pools[i].line, bad_pools[i].what));
	}
	/* The cpu backend ignores device.gpus and pool.NAME.gpu. */
	ASSERT_EQ(0, load_text("device.backend = cpu\ndevice.gpus = 1\n" GEOM("a", "2")
			       "pool.a.device_mem = 1M\npool.a.host_mem = 1M\n", &cfg, path, err));
	EXPECT_EQ(0u, cfg.pools[0].gpu);
	/* Just within the limits. */
	ASSERT_EQ(0, load_text(GEOM("a", "2") "pool.a.device_mem = 16K\n"
			       "pool.a.host_mem = 0x7ffffffb000\n", &cfg, path, err));
	EXPECT_EQ(4, cfg.pools[0].nr_frames[KV_TIER_DEVICE]);
	EXPECT_EQ(UINT32_MAX / 2 - 4, cfg.pools[0].nr_frames[KV_TIER_HOST]);
	EXPECT_EQ(0, cfg.pools[0].nr_frames[KVMEMD_TIER_SWAP]);
	ASSERT_EQ(0, load_text("swap.path = /dev/nvme0n1\n" GEOM("a", "2")
			       "pool.a.device_mem = 16K\npool.a.host_mem = 0x7ffffffa000\n"
			       "pool.a.swap_mem = 4K\n", &cfg, path, err));
	EXPECT_EQ(UINT32_MAX / 2 - 5, cfg.pools[0].nr_frames[KV_TIER_HOST]);
	EXPECT_EQ(1, cfg.pools[0].nr_frames[KVMEMD_TIER_SWAP]);
	ASSERT_EQ(0, load_text("swap.path = /dev/nvme0n1\n" GEOM("a", "2")
			       "pool.a.device_mem = 16K\npool.a.host_mem = 0\n"
			       "pool.a.swap_mem = 0x7ffffffb000\n", &cfg, path, err));
	EXPECT_EQ(UINT32_MAX / 2 - 4, cfg.pools[0].nr_frames[KVMEMD_TIER_SWAP]);
	/*
	 * Its checkpoint, from 8T: 4K + 64K + 2147483643 entries of 48 bytes,
	 * 96G - 240 + 68K, rounded up to 4K.
	 */
	EXPECT_EQ(8ull << 40, kvmemd_config_ckpt_offset(&cfg, 0));
	EXPECT_EQ((96ull << 30) + (68 << 10), kvmemd_config_ckpt_size(&cfg, 0));
	EXPECT_EQ((8ull << 40) + (96ull << 30) + (68 << 10), kvmemd_config_swap_size(&cfg));
	/*
	 * The data regions may end at 2^63 - 2^45, a frame short of 2^63; the
	 * checkpoints of 2^17 and 2^17 - 1 entries of 32 + 4 x 4096 bytes
	 * follow, each from a 1M boundary.
	 */
	ASSERT_EQ(0, load_text("swap.path = /dev/nvme0n1\nswap.persist = 1\n" HUGE("a")
			       "pool.a.swap_mem = 4194304T\n" HUGE("b")
			       "pool.b.swap_mem = 4194303T\n", &cfg, path, err));
	EXPECT_EQ(1u << 17, cfg.pools[0].nr_frames[KVMEMD_TIER_SWAP]);
	EXPECT_EQ((1u << 17) - 1, cfg.pools[1].nr_frames[KVMEMD_TIER_SWAP]);
	EXPECT_EQ(1ull << 62, kvmemd_config_swap_offset(&cfg, 1));
	EXPECT_EQ((1ull << 63) - (1ull << 45), kvmemd_config_ckpt_offset(&cfg, 0));
	EXPECT_EQ(2151747584ull, kvmemd_config_ckpt_size(&cfg, 0));
	EXPECT_EQ((1ull << 63) - (1ull << 45) + (2053ull << 20),
		  kvmemd_config_ckpt_offset(&cfg, 1));
	EXPECT_EQ(2151731200ull, kvmemd_config_ckpt_size(&cfg, 1));
	EXPECT_EQ((1ull << 63) - (1ull << 45) + (2053ull << 20) + 2151731200ull,
		  kvmemd_config_swap_size(&cfg));
	/*
	 * With c's 4095 frames of 8G after them, the data regions end at
	 * 2^63 - 8G, and the three checkpoints fit in the last 8G.
	 */
	ASSERT_EQ(0, load_text("swap.path = /dev/nvme0n1\n" HUGE("a")
			       "pool.a.swap_mem = 4194304T\n" HUGE("b")
			       "pool.b.swap_mem = 4194303T\n" BIG("c", "fp32", "32G")
			       "pool.c.swap_mem = 32760G\n", &cfg, path, err));
	EXPECT_EQ(4095, cfg.pools[2].nr_frames[KVMEMD_TIER_SWAP]);
	EXPECT_EQ((1ull << 63) - (8ull << 30), kvmemd_config_ckpt_offset(&cfg, 0));
	/* 4K + 64K + 4095 entries of 36 bytes, 212K */
	EXPECT_EQ(212 << 10, kvmemd_config_ckpt_size(&cfg, 2));
	EXPECT_EQ((1ull << 63) - (8ull << 30) + (4106ull << 20) + (212 << 10),
		  kvmemd_config_swap_size(&cfg));
}

/* Two pools with swap of different geometries, and one without between. */
TEST(swap_layout)
{
	static const char text[] =
		"pool.a.layers = 2\n"			/* 512-byte blocks, 4K frames */
		"pool.a.kv_heads = 2\n"
		"pool.a.head_dim = 8\n"
		"pool.a.block_tokens = 4\n"
		"pool.a.dtype = fp16\n"
		"pool.a.device_mem = 16K\n"
		"pool.a.host_mem = 0\n"
		"pool.a.swap_mem = 0x101064\n"		/* 1M + 4K + 100 */
		"pool.c.layers = 1\n"
		"pool.c.kv_heads = 1\n"
		"pool.c.head_dim = 8\n"
		"pool.c.block_tokens = 4\n"
		"pool.c.dtype = fp32\n"
		"pool.c.device_mem = 16K\n"
		"pool.c.host_mem = 16K\n"
		"pool.b.layers = 4\n"			/* 64K frames */
		"pool.b.kv_heads = 4\n"
		"pool.b.head_dim = 64\n"
		"pool.b.block_tokens = 16\n"
		"pool.b.dtype = bf16\n"
		"pool.b.device_mem = 1M\n"
		"pool.b.host_mem = 2M\n"
		"pool.b.swap_mem = 3145828\n"		/* 3M + 100 */
		"swap.path = /var/lib/kvmemd/swap\n";
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX];
	struct kvmemd_config cfg;

	ASSERT_EQ(0, load_text(text, &cfg, path, err));
	ASSERT_EQ(3, cfg.nr_pools);
	EXPECT_STREQ("c", cfg.pools[1].name);

	/* Frames: rounded down, of each pool's own size. */
	EXPECT_EQ(4096, kv_frame_bytes(&cfg.pools[0].geom));
	EXPECT_EQ(257, cfg.pools[0].nr_frames[KVMEMD_TIER_SWAP]);
	EXPECT_EQ(0, cfg.pools[1].swap_mem);
	EXPECT_EQ(0, cfg.pools[1].nr_frames[KVMEMD_TIER_SWAP]);
	EXPECT_EQ(4, cfg.pools[1].nr_frames[KV_TIER_HOST]);
	EXPECT_EQ(65536, kv_frame_bytes(&cfg.pools[2].geom));
	EXPECT_EQ(16, cfg.pools[2].nr_frames[KV_TIER_DEVICE]);
	EXPECT_EQ(32, cfg.pools[2].nr_frames[KV_TIER_HOST]);
	EXPECT_EQ(48, cfg.pools[2].nr_frames[KVMEMD_TIER_SWAP]);

	/*
	 * a: [0, 1M + 4K); c takes no room but would start at 2M; b: [2M, 5M).
	 * Past the last pool: where the next region would start, which is
	 * where the checkpoints start.
	 */
	EXPECT_EQ(0, kvmemd_config_swap_offset(&cfg, 0));
	EXPECT_EQ(2ull << 20, kvmemd_config_swap_offset(&cfg, 1));
	EXPECT_EQ(2ull << 20, kvmemd_config_swap_offset(&cfg, 2));
	EXPECT_EQ(5ull << 20, kvmemd_config_swap_offset(&cfg, 3));
	EXPECT_EQ(5ull << 20, kvmemd_config_swap_offset(&cfg, UINT32_MAX));

	/*
	 * The checkpoints, in pool order: 4K of header and 64K of blob, then
	 * an entry of 32 + 4 x block_tokens bytes per swap frame, in 4K pages.
	 * a: 257 x 48 bytes, 84K in all, [5M, 5M + 84K); c has none but would
	 * start at 6M; b: 48 x 96 bytes, 76K in all, [6M, 6M + 76K).
	 */
	EXPECT_EQ(86016, kvmemd_config_ckpt_size(&cfg, 0));
	EXPECT_EQ(kv_checkpoint_bytes(&cfg.pools[0].geom, 257), kvmemd_config_ckpt_size(&cfg, 0));
	EXPECT_EQ(0, kvmemd_config_ckpt_size(&cfg, 1));
	EXPECT_EQ(77824, kvmemd_config_ckpt_size(&cfg, 2));
	EXPECT_EQ(kv_checkpoint_bytes(&cfg.pools[2].geom, 48), kvmemd_config_ckpt_size(&cfg, 2));
	EXPECT_EQ(0, kvmemd_config_ckpt_size(&cfg, 3));
	EXPECT_EQ(0, kvmemd_config_ckpt_size(&cfg, UINT32_MAX));
	EXPECT_EQ(5ull << 20, kvmemd_config_ckpt_offset(&cfg, 0));
	EXPECT_EQ(6ull << 20, kvmemd_config_ckpt_offset(&cfg, 1));
	EXPECT_EQ(6ull << 20, kvmemd_config_ckpt_offset(&cfg, 2));
	/* The daemon reserves them all. */
	EXPECT_EQ((6ull << 20) + 77824, kvmemd_config_swap_size(&cfg));
	EXPECT_EQ(7ull << 20, kvmemd_config_ckpt_offset(&cfg, 3));
	EXPECT_EQ(7ull << 20, kvmemd_config_ckpt_offset(&cfg, UINT32_MAX));

	/*
	 * b first: [0, 3M), then a: [3M, 4M + 4K); their checkpoints in the
	 * same order, b's from 5M, a's from 6M.
	 */
	cfg.pools[1] = cfg.pools[0];
	cfg.pools[0] = cfg.pools[2];
	cfg.nr_pools = 2;
	EXPECT_EQ(0, kvmemd_config_swap_offset(&cfg, 0));
	EXPECT_EQ(3ull << 20, kvmemd_config_swap_offset(&cfg, 1));
	EXPECT_EQ(5ull << 20, kvmemd_config_swap_offset(&cfg, 2));
	EXPECT_EQ(5ull << 20, kvmemd_config_ckpt_offset(&cfg, 0));
	EXPECT_EQ(77824, kvmemd_config_ckpt_size(&cfg, 0));
	EXPECT_EQ(6ull << 20, kvmemd_config_ckpt_offset(&cfg, 1));
	EXPECT_EQ(86016, kvmemd_config_ckpt_size(&cfg, 1));
	EXPECT_EQ((6ull << 20) + 86016, kvmemd_config_swap_size(&cfg));

	/* A swap area that no pool uses. */
	ASSERT_EQ(0, load_text("swap.path = /dev/nvme0n1\nswap.persist = 1\n", &cfg,
			       path, err));
	EXPECT_STREQ("/dev/nvme0n1", cfg.swap_path);
	EXPECT_EQ(1, cfg.swap_persist);
	EXPECT_EQ(0, kvmemd_config_swap_size(&cfg));
	EXPECT_EQ(0, kvmemd_config_swap_offset(&cfg, 0));
	EXPECT_EQ(0, kvmemd_config_ckpt_offset(&cfg, 0));
	EXPECT_EQ(0, kvmemd_config_ckpt_size(&cfg, 0));
	/* Less than a frame: swap.path is still needed, but no frame. */
	ASSERT_EQ(0, load_text("swap.path = /dev/nvme0n1\n" GEOM("a", "2")
			       "pool.a.device_mem = 16K\npool.a.host_mem = 0\n"
			       "pool.a.swap_mem = 4095\n", &cfg, path, err));
	EXPECT_EQ(4095, cfg.pools[0].swap_mem);
	EXPECT_EQ(0, cfg.pools[0].nr_frames[KVMEMD_TIER_SWAP]);
	EXPECT_EQ(0, kvmemd_config_ckpt_size(&cfg, 0));
	EXPECT_EQ(0, kvmemd_config_swap_size(&cfg));
}

TEST(at_most_16_pools)
{
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX], name[16];
	static char text[16384];
	struct kvmemd_config cfg;
	size_t n = 0;
	int i;

	for (i = 0; i < KVMEMD_MAX_POOLS; i++) {
		snprintf(name, sizeof(name), "p%d", i);
		n += (size_t)snprintf(text + n, sizeof(text) - n,
				      "pool.%s.layers = 1\npool.%s.kv_heads = 1\n"
				      "pool.%s.head_dim = 8\npool.%s.block_tokens = 4\n"
				      "pool.%s.dtype = fp16\npool.%s.device_mem = 16K\n"
				      "pool.%s.host_mem = 16K\n",
				      name, name, name, name, name, name, name);
	}
	ASSERT_EQ(0, load_text(text, &cfg, path, err));
	EXPECT_EQ(16, cfg.nr_pools);
	EXPECT_STREQ("p15", cfg.pools[15].name);
	snprintf(text + n, sizeof(text) - n, "\npool.p16.layers = 1\n");
	EXPECT_EQ(-EINVAL, load_text(text, &cfg, path, err));
	EXPECT_TRUE(err_is(err, path, 16 * 7 + 2, "pool 'p16': too many pools (at most 16)"));
}

TEST(load_string_names_the_text)
{
	char err[KV_CONFIG_ERR_MAX];
	struct kvmemd_config cfg;

	EXPECT_EQ(-EINVAL, kvmemd_config_load_string(&cfg, "<cmdline>",
						     "log.level = debug\nvm.x = 1\n",
						     err, sizeof(err)));
	EXPECT_STREQ("<cmdline>:2: unknown key 'vm.x'", err);
	EXPECT_EQ(0, kvmemd_config_load_string(&cfg, "<cmdline>", "log.level = warn\n",
					       err, sizeof(err)));
	EXPECT_EQ(KVMEMD_LOG_WARN, cfg.log_level);
	EXPECT_STREQ("", err);
}

TEST(get_every_key)
{
	static const struct {
		const char *key, *value;
	} want[] = {
		{ "socket.path", "/run/kvmemd/kvmemd.sock" },
		{ "socket.mode", "0660" },
		{ "socket.group", "" },
		{ "admin.group", "" },
		{ "log.level", "info" },
		{ "device.backend", "auto" },
		{ "swap.path", "" },
		{ "swap.engine", "auto" },
		{ "swap.persist", "0" },
		{ "vm.min_free_kbytes", "0" },
		{ "vm.watermark_scale_factor", "10" },
		{ "vm.reclaim_batch", "32" },
		{ "pool.default.layers", "4" },
		{ "pool.default.kv_heads", "4" },
		{ "pool.default.head_dim", "64" },
		{ "pool.default.block_tokens", "16" },
		{ "pool.default.dtype", "fp16" },
		{ "pool.default.device_mem", "64M" },
		{ "pool.default.host_mem", "256M" },
		{ "pool.default.prefix", "tenant" },
		{ "pool.default.swap_mem", "0" },
	};
	struct kvmemd_config cfg;
	char buf[128];
	size_t i;

	kvmemd_config_defaults(&cfg);
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		EXPECT_EQ(0, kvmemd_config_get(&cfg, want[i].key, buf, sizeof(buf)));
		EXPECT_STREQ(want[i].value, buf);
	}
	EXPECT_EQ(-ENOENT, kvmemd_config_get(&cfg, "vm.nope", buf, sizeof(buf)));
	EXPECT_EQ(-ENOENT, kvmemd_config_get(&cfg, "pool.other.layers", buf, sizeof(buf)));
	EXPECT_EQ(-ENOENT, kvmemd_config_get(&cfg, "pool.default.nope", buf, sizeof(buf)));
	EXPECT_EQ(-ENOENT, kvmemd_config_get(&cfg, "pool.default", buf, sizeof(buf)));
	EXPECT_EQ(-ENOENT, kvmemd_config_get(&cfg, "", buf, sizeof(buf)));
	EXPECT_EQ(-ERANGE, kvmemd_config_get(&cfg, "socket.path", buf, 8));
	EXPECT_EQ(-ERANGE, kvmemd_config_get(&cfg, "pool.default.device_mem", buf, 3));
	EXPECT_EQ(-ERANGE, kvmemd_config_get(&cfg, "log.level", buf, 0));
}

TEST(set_run_time_keys)
{
	struct kvmemd_config cfg;
	char err[KV_CONFIG_ERR_MAX], buf[64];

	kvmemd_config_defaults(&cfg);
	EXPECT_EQ(0, kvmemd_config_set(&cfg, "vm.reclaim_batch", "64", err, sizeof(err)));
	EXPECT_STREQ("", err);
	EXPECT_EQ(64, cfg.vm.reclaim_batch);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "vm.reclaim_batch", buf, sizeof(buf)));
	EXPECT_STREQ("64", buf);
	EXPECT_EQ(0, kvmemd_config_set(&cfg, "vm.watermark_scale_factor", "200", err,
				       sizeof(err)));
	EXPECT_EQ(200, cfg.vm.watermark_scale_factor);
	EXPECT_EQ(0, kvmemd_config_set(&cfg, "vm.min_free_kbytes", "1099511627776", err,
				       sizeof(err)));
	EXPECT_EQ(1ull << 40, cfg.vm.min_free_kbytes);
	EXPECT_EQ(0, kvmemd_config_set(&cfg, "log.level", "debug", err, sizeof(err)));
	EXPECT_EQ(KVMEMD_LOG_DEBUG, cfg.log_level);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "log.level", buf, sizeof(buf)));
	EXPECT_STREQ("debug", buf);

	/* Bad values change nothing. */
	EXPECT_EQ(-ERANGE, kvmemd_config_set(&cfg, "vm.reclaim_batch", "0", err, sizeof(err)));
	EXPECT_STREQ("vm.reclaim_batch: '0' is out of range (1..256)", err);
	EXPECT_EQ(-ERANGE, kvmemd_config_set(&cfg, "vm.min_free_kbytes", "1099511627777",
					     err, sizeof(err)));
	EXPECT_EQ(-EINVAL, kvmemd_config_set(&cfg, "vm.reclaim_batch", "12 ", err, sizeof(err)));
	EXPECT_EQ(-EINVAL, kvmemd_config_set(&cfg, "vm.reclaim_batch", "", err, sizeof(err)));
	EXPECT_EQ(-EINVAL, kvmemd_config_set(&cfg, "log.level", "loud", err, sizeof(err)));
	EXPECT_STREQ("log.level: 'loud' is not one of: error, warn, info, debug", err);
	EXPECT_EQ(64, cfg.vm.reclaim_batch);
	EXPECT_EQ(1ull << 40, cfg.vm.min_free_kbytes);
	EXPECT_EQ(KVMEMD_LOG_DEBUG, cfg.log_level);
	EXPECT_EQ(0, kvmemd_config_set(&cfg, "vm.reclaim_batch", "0x20", NULL, 0));
	EXPECT_EQ(32, cfg.vm.reclaim_batch);
}

TEST(set_refuses_restart_keys)
{
	static const char *const restart[] = {
		"socket.path", "socket.mode", "socket.group", "admin.group",
		"device.backend", "pool.default.layers", "pool.default.host_mem",
		"pool.newpool.layers", "pool.default.prefix", "pool.newpool.prefix",
		"swap.path", "swap.engine", "swap.persist", "pool.default.swap_mem",
		"pool.newpool.swap_mem",
	};
	struct kvmemd_config cfg, def;
	char err[KV_CONFIG_ERR_MAX], want[128];
	size_t i;

	kvmemd_config_defaults(&cfg);
	kvmemd_config_defaults(&def);
	for (i = 0; i < sizeof(restart) / sizeof(restart[0]); i++) {
		EXPECT_EQ(-EPERM, kvmemd_config_set(&cfg, restart[i], "1", err, sizeof(err)));
		snprintf(want, sizeof(want), "%s: needs a restart", restart[i]);
		EXPECT_STREQ(want, err);
	}
	EXPECT_EQ(-ENOENT, kvmemd_config_set(&cfg, "vm.nope", "1", err, sizeof(err)));
	EXPECT_STREQ("vm.nope: unknown key", err);
	EXPECT_EQ(-ENOENT, kvmemd_config_set(&cfg, "pool.default.colour", "1", err, sizeof(err)));
	EXPECT_EQ(-ENOENT, kvmemd_config_set(&cfg, "pool.Bad.layers", "1", err, sizeof(err)));
	EXPECT_EQ(-ENOENT, kvmemd_config_set(&cfg, "", "1", err, sizeof(err)));
	EXPECT_TRUE(config_equal(&def, &cfg));
}

TEST(reload_diff)
{
	struct kvmemd_config old, new;
	char err[KV_CONFIG_ERR_MAX];
	u32 changed = 99;

	kvmemd_config_defaults(&old);
	new = old;
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_EQ(0, changed);
	EXPECT_STREQ("", err);

	/* Run-time keys only. */
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new",
					       "vm.reclaim_batch = 64\n"
					       "log.level = error\n", err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_EQ(KVMEMD_CHANGED_RECLAIM_BATCH | KVMEMD_CHANGED_LOG_LEVEL, changed);
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new",
					       "vm.min_free_kbytes = 4096\n"
					       "vm.watermark_scale_factor = 100\n",
					       err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_EQ(KVMEMD_CHANGED_VM & ~KVMEMD_CHANGED_RECLAIM_BATCH, changed);
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, NULL, NULL, 0));

	/* A restart-only key refuses the reload, and names both values. */
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new",
					       "vm.reclaim_batch = 64\n"
					       "socket.path = /tmp/other.sock\n", err,
					       sizeof(err)));
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_STREQ("socket.path changed from '/run/kvmemd/kvmemd.sock' to "
		     "'/tmp/other.sock'; needs a restart", err);
	EXPECT_EQ(KVMEMD_CHANGED_RECLAIM_BATCH, changed);

	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new", "socket.group = kvmem\n",
					       err, sizeof(err)));
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_STREQ("socket.group changed from '' to 'kvmem'; needs a restart", err);
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new", "device.backend = cpu\n",
					       err, sizeof(err)));
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_STREQ("device.backend changed from 'auto' to 'cpu'; needs a restart", err);
}

TEST(reload_diff_pools)
{
	static const char two[] =
		"pool.default.layers = 4\npool.default.kv_heads = 4\n"
		"pool.default.head_dim = 64\npool.default.block_tokens = 16\n"
		"pool.default.dtype = fp16\npool.default.device_mem = 64M\n"
		"pool.default.host_mem = 256M\n"
		GEOM("b", "2") "pool.b.device_mem = 1M\npool.b.host_mem = 1M\n";
	struct kvmemd_config old, new;
	char err[KV_CONFIG_ERR_MAX];
	u32 changed;

	kvmemd_config_defaults(&old);
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new", two, err, sizeof(err)));
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_STREQ("pool 'b' added; needs a restart", err);
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&new, &old, &changed, err, sizeof(err)));
	EXPECT_STREQ("pool 'b' removed; needs a restart", err);

	/* The same pools in another order are the same. */
	old = new;
	old.pools[0] = new.pools[1];
	old.pools[1] = new.pools[0];
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));

	new.pools[1].geom.head_dim = 16;
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_STREQ("pool.b.head_dim changed from '8' to '16'; needs a restart", err);
	new.pools[1].geom.head_dim = 8;
	new.pools[0].host_mem = 512ull << 20;
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_STREQ("pool.default.host_mem changed from '256M' to '512M'; needs a restart",
		     err);
}

/* ---- pool.NAME.prefix ------------------------------------------------- */

TEST(pool_prefix)
{
	static const struct {
		const char *value;
		u32 prefix;
	} want[] = {
		{ "tenant", KVMEMD_PREFIX_TENANT },
		{ "global", KVMEMD_PREFIX_GLOBAL },
		{ "off", KVMEMD_PREFIX_OFF },
	};
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX], text[512], buf[32];
	struct kvmemd_config cfg;
	size_t i;

	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		snprintf(text, sizeof(text), GEOM("a", "2")
			 "pool.a.device_mem = 16K\npool.a.host_mem = 0\n"
			 "pool.a.prefix = %s\n" GEOM("b", "2")
			 "pool.b.device_mem = 16K\npool.b.host_mem = 0\n", want[i].value);
		ASSERT_EQ(0, load_text(text, &cfg, path, err));
		EXPECT_EQ(want[i].prefix, cfg.pools[0].prefix);
		/* Optional: a pool without it caches per tenant. */
		EXPECT_EQ(KVMEMD_PREFIX_TENANT, cfg.pools[1].prefix);
		EXPECT_EQ(0, kvmemd_config_get(&cfg, "pool.a.prefix", buf, sizeof(buf)));
		EXPECT_STREQ(want[i].value, buf);
		EXPECT_EQ(0, kvmemd_config_get(&cfg, "pool.b.prefix", buf, sizeof(buf)));
		EXPECT_STREQ("tenant", buf);
	}
	/* The prefix key alone does not make a pool. */
	EXPECT_EQ(-EINVAL, load_text("pool.a.prefix = off\n", &cfg, path, err));
	EXPECT_TRUE(err_is(err, path, 1, "pool 'a': missing pool.a.layers"));
}

TEST(pool_prefix_needs_a_restart)
{
	struct kvmemd_config old, new;
	char err[KV_CONFIG_ERR_MAX];
	u32 changed;

	kvmemd_config_defaults(&old);
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new",
					       "pool.default.layers = 4\n"
					       "pool.default.kv_heads = 4\n"
					       "pool.default.head_dim = 64\n"
					       "pool.default.block_tokens = 16\n"
					       "pool.default.dtype = fp16\n"
					       "pool.default.device_mem = 64M\n"
					       "pool.default.host_mem = 256M\n"
					       "pool.default.prefix = tenant\n", err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_EQ(0, changed);
	EXPECT_EQ(0, memcmp(&old, &new, sizeof(old)));

	new.pools[0].prefix = KVMEMD_PREFIX_GLOBAL;
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_STREQ("pool.default.prefix changed from 'tenant' to 'global'; "
		     "needs a restart", err);
	new.pools[0].prefix = KVMEMD_PREFIX_OFF;
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&new, &old, &changed, err, sizeof(err)));
	EXPECT_STREQ("pool.default.prefix changed from 'off' to 'tenant'; "
		     "needs a restart", err);
}

/* ---- the swap area ----------------------------------------------------- */

#define SWAP_POOL(n, mem)						\
	GEOM(n, "2") "pool." n ".device_mem = 16K\n"			\
	"pool." n ".host_mem = 16K\npool." n ".swap_mem = " mem "\n"

TEST(reload_diff_swap)
{
	static const struct {
		const char *old, *new, *err;
	} restart[] = {
		{ "", "swap.path = /dev/nvme0n1\n",
		  "swap.path changed from '' to '/dev/nvme0n1'; needs a restart" },
		{ "swap.path = /dev/nvme0n1\n", "",
		  "swap.path changed from '/dev/nvme0n1' to ''; needs a restart" },
		{ "swap.path = /dev/nvme0n1\n", "swap.path = /dev/nvme1n1\n",
		  "swap.path changed from '/dev/nvme0n1' to '/dev/nvme1n1'; needs a restart" },
		{ "", "swap.engine = io_uring\n",
		  "swap.engine changed from 'auto' to 'io_uring'; needs a restart" },
		{ "swap.engine = psync\n", "swap.engine = auto\n",
		  "swap.engine changed from 'psync' to 'auto'; needs a restart" },
		{ "swap.path = /s\n", "swap.path = /s\nswap.persist = 1\n",
		  "swap.persist changed from '0' to '1'; needs a restart" },
		{ "swap.path = /s\nswap.persist = 1\n" SWAP_POOL("a", "1M"),
		  "swap.path = /s\nswap.persist = 0\n" SWAP_POOL("a", "1M"),
		  "swap.persist changed from '1' to '0'; needs a restart" },
		{ "swap.path = /s\n" SWAP_POOL("a", "1M"), "swap.path = /s\n" SWAP_POOL("a", "2M"),
		  "pool.a.swap_mem changed from '1M' to '2M'; needs a restart" },
		{ "swap.path = /s\n" SWAP_POOL("a", "1M"), "swap.path = /s\n" SWAP_POOL("a", "0"),
		  "pool.a.swap_mem changed from '1M' to '0'; needs a restart" },
		/* left out is 0 */
		{ GEOM("a", "2") "pool.a.device_mem = 16K\npool.a.host_mem = 16K\n",
		  "swap.path = /s\n" SWAP_POOL("a", "4K"),
		  "swap.path changed from '' to '/s'; needs a restart" },
		{ "swap.path = /s\n" GEOM("a", "2") "pool.a.device_mem = 16K\n"
		  "pool.a.host_mem = 16K\n", "swap.path = /s\n" SWAP_POOL("a", "4K"),
		  "pool.a.swap_mem changed from '0' to '4K'; needs a restart" },
		/* pools with swap reordered: their regions would move */
		{ "swap.path = /s\n" SWAP_POOL("a", "1M") SWAP_POOL("b", "1M"),
		  "swap.path = /s\n" SWAP_POOL("b", "1M") SWAP_POOL("a", "1M"),
		  "pool 'a' moved in the swap area from offset 0 to 1M; needs a restart" },
		{ "swap.path = /s\n" SWAP_POOL("a", "1M") SWAP_POOL("c", "0") SWAP_POOL("b", "4K"),
		  "swap.path = /s\n" SWAP_POOL("b", "4K") SWAP_POOL("a", "1M") SWAP_POOL("c", "0"),
		  "pool 'a' moved in the swap area from offset 0 to 1M; needs a restart" },
	};
	struct kvmemd_config old, new;
	char err[KV_CONFIG_ERR_MAX];
	u32 changed;
	size_t i;

	for (i = 0; i < sizeof(restart) / sizeof(restart[0]); i++) {
		ASSERT_EQ(0, kvmemd_config_load_string(&old, "old", restart[i].old, err,
						       sizeof(err)));
		ASSERT_EQ(0, kvmemd_config_load_string(&new, "new", restart[i].new, err,
						       sizeof(err)));
		changed = 99;
		EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&old, &new, &changed, err,
							    sizeof(err)));
		EXPECT_STREQ(restart[i].err, err);
		EXPECT_EQ(0, changed);
	}

	/* Pools reordered where no region of the swap area moves: a reload. */
	ASSERT_EQ(0, kvmemd_config_load_string(&old, "old", "swap.path = /s\n"
					       SWAP_POOL("a", "1M") SWAP_POOL("c", "0")
					       "log.level = info\n", err, sizeof(err)));
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new", "swap.path = /s\n"
					       SWAP_POOL("c", "0") SWAP_POOL("a", "1M")
					       "log.level = warn\n", err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_STREQ("", err);
	EXPECT_EQ(KVMEMD_CHANGED_LOG_LEVEL, changed);
	EXPECT_EQ(kvmemd_config_swap_offset(&old, 0), kvmemd_config_swap_offset(&new, 1));
	EXPECT_EQ(kvmemd_config_ckpt_offset(&old, 0), kvmemd_config_ckpt_offset(&new, 1));
	EXPECT_EQ(1ull << 20, kvmemd_config_ckpt_offset(&new, 1));
	EXPECT_EQ(kvmemd_config_swap_size(&old), kvmemd_config_swap_size(&new));
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new", "swap.path = /s\n"
					       SWAP_POOL("a", "1M") SWAP_POOL("c", "0"),
					       err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_EQ(0, changed);

	/*
	 * A checkpoint region that moves while every data region stays. The
	 * loader makes no such pair (the checkpoints follow the data regions,
	 * in the same order, and their sizes follow restart-only keys), so
	 * make one: b's data region grows by 1M, with the same swap_mem.
	 */
	ASSERT_EQ(0, kvmemd_config_load_string(&old, "old", "swap.path = /s\n"
					       SWAP_POOL("a", "1M") SWAP_POOL("b", "1M"),
					       err, sizeof(err)));
	new = old;
	new.pools[1].nr_frames[KVMEMD_TIER_SWAP] += 256;
	EXPECT_EQ(kvmemd_config_swap_offset(&old, 1), kvmemd_config_swap_offset(&new, 1));
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_STREQ("checkpoint of pool 'a' moved in the swap area from offset 2M to 3M; "
		     "needs a restart", err);
}

TEST(print_loads_back_swap)
{
	static const char text[] =
		"swap.path = \"/var/lib/kv #2/swap\"\n"
		"swap.engine = io_uring\n"
		"swap.persist = 1\n"
		GEOM("x", "3") "pool.x.device_mem = 1M\npool.x.host_mem = 0\n"
		"pool.x.swap_mem = 1000000\n"
		GEOM("y", "1") "pool.y.device_mem = 1G\npool.y.host_mem = 2G\n"
		"pool.z.swap_mem = 3G\n" GEOM("z", "1") "pool.z.device_mem = 1M\n"
		"pool.z.host_mem = 0\n";
	struct kvmemd_config cfg, back;
	char err[KV_CONFIG_ERR_MAX], buf[64];
	char *t1, *t2;

	ASSERT_EQ(0, kvmemd_config_load_string(&cfg, "a", text, err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "swap.path", buf, sizeof(buf)));
	EXPECT_STREQ("/var/lib/kv #2/swap", buf);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "swap.engine", buf, sizeof(buf)));
	EXPECT_STREQ("io_uring", buf);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "swap.persist", buf, sizeof(buf)));
	EXPECT_STREQ("1", buf);
	EXPECT_EQ(-ERANGE, kvmemd_config_get(&cfg, "swap.persist", buf, 1));
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "pool.x.swap_mem", buf, sizeof(buf)));
	EXPECT_STREQ("1000000", buf);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "pool.y.swap_mem", buf, sizeof(buf)));
	EXPECT_STREQ("0", buf);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "pool.z.swap_mem", buf, sizeof(buf)));
	EXPECT_STREQ("3G", buf);
	EXPECT_EQ(-ENOENT, kvmemd_config_get(&cfg, "pool.w.swap_mem", buf, sizeof(buf)));
	EXPECT_EQ(-ENOENT, kvmemd_config_get(&cfg, "swap", buf, sizeof(buf)));
	EXPECT_EQ(-ENOENT, kvmemd_config_get(&cfg, "swap.size", buf, sizeof(buf)));

	t1 = config_text(&cfg);
	ASSERT_NE_NULL(t1);
	EXPECT_NE_NULL(strstr(t1, "swap.path = \"/var/lib/kv #2/swap\"\n"
			      "swap.engine = io_uring\nswap.persist = 1\n"));
	EXPECT_NE_NULL(strstr(t1, "pool.x.swap_mem = 1000000\n"));
	EXPECT_NE_NULL(strstr(t1, "pool.y.swap_mem = 0\n"));
	EXPECT_NE_NULL(strstr(t1, "pool.z.swap_mem = 3G\n"));
	if (kvmemd_config_load_string(&back, "printed", t1, err, sizeof(err)))
		TH_LOG("%s", err);
	t2 = config_text(&back);
	ASSERT_NE_NULL(t2);
	EXPECT_STREQ(t1, t2);
	EXPECT_EQ(0, memcmp(&cfg, &back, sizeof(cfg)));
	EXPECT_EQ(kvmemd_config_swap_size(&cfg), kvmemd_config_swap_size(&back));
	EXPECT_EQ(kvmemd_config_ckpt_offset(&cfg, 2), kvmemd_config_ckpt_offset(&back, 2));
	EXPECT_EQ(3ull << 30, back.pools[2].swap_mem);
	EXPECT_EQ(1, back.swap_persist);
	free(t1);
	free(t2);

	/* The defaults print swap.path as a comment, and load back. */
	kvmemd_config_defaults(&cfg);
	t1 = config_text(&cfg);
	ASSERT_NE_NULL(t1);
	EXPECT_NE_NULL(strstr(t1, "# swap.path is not set\nswap.engine = auto\n"
			      "swap.persist = 0\n"));
	EXPECT_NE_NULL(strstr(t1, "pool.default.swap_mem = 0\n"));
	ASSERT_EQ(0, kvmemd_config_load_string(&back, "printed", t1, err, sizeof(err)));
	EXPECT_TRUE(config_equal(&cfg, &back));
	free(t1);
}

/* ---- tenant.NAME ------------------------------------------------------- */

TEST(tenants)
{
	static const char text[] =
		"log.level = info\n"
		"tenant.search = 1001, 1002,1003\n"
		"tenant.batch = 0\n"
		"tenant.9_lives = 4294967294,\t7   # blanks after a comma\n"
		"tenant.a = \"5,  6\"\n";
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX] = "junk", buf[64];
	const struct kvmemd_tenant_config *t;
	struct kvmemd_config cfg;

	ASSERT_EQ(0, load_text(text, &cfg, path, err));
	EXPECT_STREQ("", err);
	ASSERT_EQ(4, cfg.nr_tenants);
	t = &cfg.tenants[0];
	EXPECT_STREQ("search", t->name);
	ASSERT_EQ(3, t->nr_uids);
	EXPECT_EQ(1001, t->uids[0]);
	EXPECT_EQ(1002, t->uids[1]);
	EXPECT_EQ(1003, t->uids[2]);
	EXPECT_EQ(0, t->uids[3]);
	t = &cfg.tenants[1];
	EXPECT_STREQ("batch", t->name);
	ASSERT_EQ(1, t->nr_uids);
	EXPECT_EQ(0, t->uids[0]);
	t = &cfg.tenants[2];
	EXPECT_STREQ("9_lives", t->name);
	ASSERT_EQ(2, t->nr_uids);
	EXPECT_EQ(4294967294u, t->uids[0]);
	EXPECT_EQ(7, t->uids[1]);
	EXPECT_STREQ("a", cfg.tenants[3].name);
	EXPECT_EQ(2, cfg.tenants[3].nr_uids);

	/* Lookup. */
	EXPECT_EQ(0, kvmemd_config_tenant(&cfg, 1001));
	EXPECT_EQ(0, kvmemd_config_tenant(&cfg, 1003));
	EXPECT_EQ(1, kvmemd_config_tenant(&cfg, 0));
	EXPECT_EQ(2, kvmemd_config_tenant(&cfg, 4294967294u));
	EXPECT_EQ(2, kvmemd_config_tenant(&cfg, 7));
	EXPECT_EQ(3, kvmemd_config_tenant(&cfg, 6));
	EXPECT_EQ(-ENOENT, kvmemd_config_tenant(&cfg, 1000));
	EXPECT_EQ(-ENOENT, kvmemd_config_tenant(&cfg, 1));
	EXPECT_EQ(-ENOENT, kvmemd_config_tenant(&cfg, UINT32_MAX));

	/* Get: the list as printed. */
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "tenant.search", buf, sizeof(buf)));
	EXPECT_STREQ("1001,1002,1003", buf);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "tenant.9_lives", buf, sizeof(buf)));
	EXPECT_STREQ("4294967294,7", buf);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "tenant.batch", buf, sizeof(buf)));
	EXPECT_STREQ("0", buf);
	EXPECT_EQ(-ERANGE, kvmemd_config_get(&cfg, "tenant.search", buf, 10));
	EXPECT_EQ(-ERANGE, kvmemd_config_get(&cfg, "tenant.search", buf, 14));
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "tenant.search", buf, 15));
	EXPECT_EQ(-ENOENT, kvmemd_config_get(&cfg, "tenant.nope", buf, sizeof(buf)));
	EXPECT_EQ(-ENOENT, kvmemd_config_get(&cfg, "tenant.", buf, sizeof(buf)));
	EXPECT_EQ(-ENOENT, kvmemd_config_get(&cfg, "tenant", buf, sizeof(buf)));
	EXPECT_EQ(-ENOENT, kvmemd_config_get(&cfg, "tenant.search.x", buf, sizeof(buf)));
}

static const struct bad_file bad_tenants[] = {
	/* names */
	{ "tenant = 1000\n", 1, "unknown key 'tenant'" },
	{ "tenant.a.b = 1000\n", 1, "unknown key 'tenant.a.b'" },
	{ "tenant._a = 1000\n", 1, "tenant name '_a' does not start with a letter or a digit" },
	{ "tenant.abcdefghijklmnopqrstuvwxyz012345 = 1\n", 1,
	  "tenant name in 'tenant.abcdefghijklmnopqrstuvwxyz012345' is longer than 31 bytes" },
	/* the line parser takes keys of [a-z0-9_] only */
	{ "tenant.Team = 1\n", 1, "invalid character 'T' in key 'tenant.Team'" },
	{ "tenant.team-a = 1\n", 1, "invalid character '-' in key 'tenant.team-a'" },
	/* duplicates */
	{ "tenant.a = 1\n\ntenant.a = 2\n", 3,
	  "duplicate key 'tenant.a' (first set at line 1)" },
	/* uid lists */
	{ "tenant.a = \" \"\n", 1, "tenant.a: empty uid list" },
	{ "tenant.a = 1,,2\n", 1, "tenant.a: empty uid in '1,,2'" },
	{ "tenant.a = 1,\n", 1, "tenant.a: empty uid in '1,'" },
	{ "tenant.a = 1, \t\n", 1, "tenant.a: empty uid in '1,'" },
	{ "tenant.a = ,1\n", 1, "tenant.a: empty uid in ',1'" },
	{ "log.level = info\ntenant.a = 1000, bob\n", 2,
	  "tenant.a: 'bob' is not a uid (a decimal number, 0..4294967294)" },
	{ "tenant.a = 4294967295\n", 1, "tenant.a: '4294967295' is not a uid" },
	{ "tenant.a = 99999999999999999999999\n", 1, "'99999999999999999999999' is not a uid" },
	{ "tenant.a = 0x10\n", 1, "'0x10' is not a uid" },
	{ "tenant.a = -1\n", 1, "'-1' is not a uid" },
	{ "tenant.a = +1\n", 1, "'+1' is not a uid" },
	{ "tenant.a = 1 ,2\n", 1, "'1 ' is not a uid" },
	{ "tenant.a = 1;2\n", 1, "'1;2' is not a uid" },
	{ "tenant.a = 5, 6, 5\n", 1, "tenant.a: uid 5 is listed twice" },
	/* a uid in two tenants names both */
	{ "tenant.a = 1000\n# x\ntenant.b = 1001, 1000\n", 3,
	  "tenant.b: uid 1000 is already in tenant 'a' (line 1)" },
	{ "tenant.a = 1\ntenant.b = 2\ntenant.c = 3,4\ntenant.d = 4\n", 4,
	  "tenant.d: uid 4 is already in tenant 'c' (line 3)" },
};

TEST(bad_tenants_name_file_and_line)
{
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX];
	struct kvmemd_config cfg;
	size_t i;

	for (i = 0; i < sizeof(bad_tenants) / sizeof(bad_tenants[0]); i++) {
		memset(&cfg, 0x5a, sizeof(cfg));
		EXPECT_EQ(-EINVAL, load_text(bad_tenants[i].text, &cfg, path, err));
		EXPECT_TRUE(err_is(err, path, bad_tenants[i].line, bad_tenants[i].what));
		EXPECT_EQ(0x5a5a5a5a, cfg.nr_tenants);
	}
}

TEST(at_most_64_uids_per_tenant)
{
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX];
	static char text[2048], buf[TENANT_VALUE_MAX];
	struct kvmemd_config cfg;
	size_t n;
	int i;

	/* The longest value there is: 64 uids of 10 digits. */
	n = (size_t)snprintf(text, sizeof(text), "tenant.big = ");
	for (i = 0; i < KVMEMD_TENANT_UIDS_MAX; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "%s%u", i ? ", " : "",
				      4294967294u - (u32)i);
	snprintf(text + n, sizeof(text) - n, "\n");
	ASSERT_EQ(0, load_text(text, &cfg, path, err));
	ASSERT_EQ(1, cfg.nr_tenants);
	EXPECT_EQ(64, cfg.tenants[0].nr_uids);
	EXPECT_EQ(4294967294u - 63, cfg.tenants[0].uids[63]);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "tenant.big", buf, sizeof(buf)));
	EXPECT_EQ(sizeof(buf) - 1, strlen(buf));
	EXPECT_EQ(-ERANGE, kvmemd_config_get(&cfg, "tenant.big", buf, sizeof(buf) - 1));
	EXPECT_EQ(0, kvmemd_config_tenant(&cfg, 4294967294u - 63));

	snprintf(text + n, sizeof(text) - n, ",1\n");
	EXPECT_EQ(-EINVAL, load_text(text, &cfg, path, err));
	EXPECT_TRUE(err_is(err, path, 1, "tenant.big: more than 64 uids"));
}

TEST(at_most_32_tenants)
{
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX];
	static char text[4096];
	struct kvmemd_config cfg;
	size_t n = 0;
	int i;

	for (i = 0; i < KVMEMD_MAX_TENANTS; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "tenant.t%d = %d, %d\n",
				      i, 2 * i, 2 * i + 1);
	ASSERT_EQ(0, load_text(text, &cfg, path, err));
	ASSERT_EQ(32, cfg.nr_tenants);
	EXPECT_STREQ("t31", cfg.tenants[31].name);
	EXPECT_EQ(31, kvmemd_config_tenant(&cfg, 63));
	EXPECT_EQ(-ENOENT, kvmemd_config_tenant(&cfg, 64));
	snprintf(text + n, sizeof(text) - n, "\ntenant.t32 = 64\n");
	EXPECT_EQ(-EINVAL, load_text(text, &cfg, path, err));
	EXPECT_TRUE(err_is(err, path, 34, "tenant 't32': too many tenants (at most 32)"));
}

TEST(set_refuses_tenants)
{
	struct kvmemd_config cfg, before;
	char err[KV_CONFIG_ERR_MAX];

	ASSERT_EQ(0, kvmemd_config_load_string(&cfg, "a", "tenant.search = 1001\n",
					       err, sizeof(err)));
	before = cfg;
	/* A tenant that is there, or could be: edit the file, then SIGHUP. */
	EXPECT_EQ(-EROFS, kvmemd_config_set(&cfg, "tenant.search", "1001,1002", err,
					    sizeof(err)));
	EXPECT_STREQ("tenant.search: edit the file and reload (SIGHUP)", err);
	EXPECT_EQ(-EROFS, kvmemd_config_set(&cfg, "tenant.batch", "2000", err, sizeof(err)));
	EXPECT_STREQ("tenant.batch: edit the file and reload (SIGHUP)", err);
	/* Not a tenant key at all. */
	EXPECT_EQ(-ENOENT, kvmemd_config_set(&cfg, "tenant._x", "1", err, sizeof(err)));
	EXPECT_STREQ("tenant._x: unknown key", err);
	EXPECT_EQ(-ENOENT, kvmemd_config_set(&cfg, "tenant.a.b", "1", err, sizeof(err)));
	EXPECT_EQ(-ENOENT, kvmemd_config_set(&cfg, "tenant.Search", "1", err, sizeof(err)));
	EXPECT_EQ(-ENOENT, kvmemd_config_set(&cfg, "tenant.", "1", err, sizeof(err)));
	EXPECT_EQ(-ENOENT, kvmemd_config_set(&cfg, "tenant", "1", err, sizeof(err)));
	EXPECT_EQ(-ENOENT, kvmemd_config_set(&cfg,
					     "tenant.abcdefghijklmnopqrstuvwxyz012345", "1",
					     err, sizeof(err)));
	EXPECT_EQ(0, memcmp(&before, &cfg, sizeof(cfg)));
}

TEST(reload_diff_tenants)
{
	static const char ab[] = "tenant.a = 1000, 1001\ntenant.b = 2000\n";
	struct kvmemd_config old, new;
	char err[KV_CONFIG_ERR_MAX];
	u32 changed = 99;

	/* Tenants added: a run-time change. */
	kvmemd_config_defaults(&old);
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new", ab, err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_EQ(KVMEMD_CHANGED_TENANTS, changed);
	EXPECT_STREQ("", err);
	/* ... and removed. */
	EXPECT_EQ(0, kvmemd_config_reload_diff(&new, &old, &changed, err, sizeof(err)));
	EXPECT_EQ(KVMEMD_CHANGED_TENANTS, changed);

	/* The same tenants: no change. */
	ASSERT_EQ(0, kvmemd_config_load_string(&old, "old", ab, err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_EQ(0, changed);

	/* Another uid, another order of uids, of tenants, another name. */
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new",
					       "tenant.a = 1000, 1002\ntenant.b = 2000\n",
					       err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_EQ(KVMEMD_CHANGED_TENANTS, changed);
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new",
					       "tenant.a = 1001, 1000\ntenant.b = 2000\n",
					       err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_EQ(KVMEMD_CHANGED_TENANTS, changed);
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new",
					       "tenant.b = 2000\ntenant.a = 1000, 1001\n",
					       err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_EQ(KVMEMD_CHANGED_TENANTS, changed);
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new",
					       "tenant.a = 1000, 1001\ntenant.c = 2000\n",
					       err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_EQ(KVMEMD_CHANGED_TENANTS, changed);
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new",
					       "tenant.a = 1000, 1001\n"
					       "tenant.b = 2000, 2001\n", err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_EQ(KVMEMD_CHANGED_TENANTS, changed);

	/* With other run-time keys. */
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new",
					       "log.level = debug\ntenant.a = 1000\n",
					       err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_EQ(KVMEMD_CHANGED_TENANTS | KVMEMD_CHANGED_LOG_LEVEL, changed);

	/* A restart-only key still refuses the whole reload. */
	ASSERT_EQ(0, kvmemd_config_load_string(&new, "new",
					       "device.backend = cpu\ntenant.a = 1000\n",
					       err, sizeof(err)));
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&old, &new, &changed, err, sizeof(err)));
	EXPECT_STREQ("device.backend changed from 'auto' to 'cpu'; needs a restart", err);
	EXPECT_EQ(KVMEMD_CHANGED_TENANTS, changed);
}

TEST(print_loads_back)
{
	static const char text[] =
		"socket.path = \"/tmp/a #b/kvmemd.sock\"\n"
		"socket.mode = 0600\n"
		"admin.group = wheel\n"
		"log.level = warn\n"
		"vm.min_free_kbytes = 12345\n"
		GEOM("x", "3") "pool.x.device_mem = 1536K\npool.x.host_mem = 1000000\n"
		"tenant.search = 1001, 1002\n"
		GEOM("y", "1") "pool.y.device_mem = 1G\npool.y.host_mem = 0\n"
		"pool.y.prefix = off\n"
		"tenant.0 = 0\n"
		"pool.x.prefix = global\n";
	struct kvmemd_config cfg, back;
	char err[KV_CONFIG_ERR_MAX];
	char *t1, *t2;

	ASSERT_EQ(0, kvmemd_config_load_string(&cfg, "a", text, err, sizeof(err)));
	EXPECT_STREQ("/tmp/a #b/kvmemd.sock", cfg.socket_path);
	t1 = config_text(&cfg);
	ASSERT_NE_NULL(t1);
	EXPECT_NE_NULL(strstr(t1, "socket.path = \"/tmp/a #b/kvmemd.sock\"\n"));
	EXPECT_NE_NULL(strstr(t1, "# socket.group is not set\n"));
	EXPECT_NE_NULL(strstr(t1, "pool.x.device_mem = 1536K\n"));
	EXPECT_NE_NULL(strstr(t1, "pool.x.host_mem = 1000000\n"));
	EXPECT_NE_NULL(strstr(t1, "pool.y.device_mem = 1G\n"));
	EXPECT_NE_NULL(strstr(t1, "pool.x.prefix = global\n"));
	EXPECT_NE_NULL(strstr(t1, "pool.y.prefix = off\n"));
	EXPECT_NE_NULL(strstr(t1, "tenant.search = 1001,1002\ntenant.0 = 0\npool.x."));
	if (kvmemd_config_load_string(&back, "printed", t1, err, sizeof(err)))
		TH_LOG("%s", err);
	t2 = config_text(&back);
	ASSERT_NE_NULL(t2);
	EXPECT_STREQ(t1, t2);
	EXPECT_EQ(0, memcmp(&cfg, &back, sizeof(cfg)));
	EXPECT_EQ(2, back.nr_tenants);
	EXPECT_EQ(KVMEMD_PREFIX_GLOBAL, back.pools[0].prefix);
	EXPECT_EQ(KVMEMD_PREFIX_OFF, back.pools[1].prefix);
	free(t1);
	free(t2);
}

/* The longest tenant value, and the most tenants, print and load back. */
TEST(print_loads_back_most_tenants)
{
	struct kvmemd_config cfg, back;
	char err[KV_CONFIG_ERR_MAX];
	struct kvmemd_tenant_config *t;
	char *t1, *t2;
	u32 i, j;

	kvmemd_config_defaults(&cfg);
	cfg.nr_tenants = KVMEMD_MAX_TENANTS;
	for (i = 0; i < KVMEMD_MAX_TENANTS; i++) {
		t = &cfg.tenants[i];
		snprintf(t->name, sizeof(t->name), "t%02u_abcdefghijklmnopqrstuvwxyz0", i);
		t->nr_uids = KVMEMD_TENANT_UIDS_MAX;
		for (j = 0; j < KVMEMD_TENANT_UIDS_MAX; j++)
			t->uids[j] = 4294967294u - i * KVMEMD_TENANT_UIDS_MAX - j;
	}
	t1 = config_text(&cfg);
	ASSERT_NE_NULL(t1);
	if (kvmemd_config_load_string(&back, "printed", t1, err, sizeof(err)))
		TH_LOG("%s", err);
	t2 = config_text(&back);
	ASSERT_NE_NULL(t2);
	EXPECT_STREQ(t1, t2);
	EXPECT_EQ(0, memcmp(&cfg, &back, sizeof(cfg)));
	free(t1);
	free(t2);
}

/* ---- pool.NAME.model and pool.NAME.hf_config ---------------------------- */

/* meta-llama/Meta-Llama-3-8B's config.json, as published. */
static const char llama3_8b_json[] =
	"{\n"
	"  \"architectures\": [\n    \"LlamaForCausalLM\"\n  ],\n"
	"  \"attention_bias\": false,\n  \"attention_dropout\": 0.0,\n"
	"  \"bos_token_id\": 128000,\n  \"eos_token_id\": 128001,\n"
	"  \"hidden_act\": \"silu\",\n  \"hidden_size\": 4096,\n"
	"  \"initializer_range\": 0.02,\n  \"intermediate_size\": 14336,\n"
	"  \"max_position_embeddings\": 8192,\n  \"model_type\": \"llama\",\n"
	"  \"num_attention_heads\": 32,\n  \"num_hidden_layers\": 32,\n"
	"  \"num_key_value_heads\": 8,\n  \"pretraining_tp\": 1,\n"
	"  \"rms_norm_eps\": 1e-05,\n  \"rope_scaling\": null,\n"
	"  \"rope_theta\": 500000.0,\n  \"tie_word_embeddings\": false,\n"
	"  \"torch_dtype\": \"bfloat16\",\n  \"transformers_version\": \"4.40.0.dev0\",\n"
	"  \"use_cache\": true,\n  \"vocab_size\": 128256\n}\n";

#define MODEL_POOL(n, model)						\
	"pool." n ".model = " model "\n"				\
	"pool." n ".device_mem = 16G\n"					\
	"pool." n ".host_mem = 0\n"

static void geom_is(struct __test_metadata *_metadata, const struct kv_geometry *g,
		    u32 layers, u32 kv_heads, u32 head_dim, u32 block_tokens, u32 dtype)
{
	EXPECT_EQ(layers, g->layers);
	EXPECT_EQ(kv_heads, g->kv_heads);
	EXPECT_EQ(head_dim, g->head_dim);
	EXPECT_EQ(block_tokens, g->block_tokens);
	EXPECT_EQ(dtype, g->dtype);
}

TEST(pool_model_gives_the_geometry)
{
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX], buf[64];
	struct kvmemd_config cfg;

	ASSERT_EQ(0, load_text(MODEL_POOL("l", "llama3-8b"), &cfg, path, err));
	EXPECT_STREQ("", err);
	ASSERT_EQ(1, cfg.nr_pools);
	EXPECT_STREQ("llama3-8b", cfg.pools[0].model);
	geom_is(_metadata, &cfg.pools[0].geom, 32, 8, 128, 16, KV_DTYPE_BF16);
	/* 2 x 32 x 8 x 128 x 2 bytes a token: 2M blocks of 16 tokens */
	EXPECT_EQ(2ull << 20, kv_frame_bytes(&cfg.pools[0].geom));
	EXPECT_EQ(8192, cfg.pools[0].nr_frames[KV_TIER_DEVICE]);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "pool.l.model", buf, sizeof(buf)));
	EXPECT_STREQ("llama3-8b", buf);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "pool.l.layers", buf, sizeof(buf)));
	EXPECT_STREQ("32", buf);

	/* block_tokens and dtype may be given; the facts only as they are. */
	ASSERT_EQ(0, load_text("pool.m.block_tokens = 32\npool.m.dtype = fp16\n"
			       "pool.m.layers = 32\npool.m.head_dim = 128\n"
			       MODEL_POOL("m", "mistral-7b"), &cfg, path, err));
	geom_is(_metadata, &cfg.pools[0].geom, 32, 8, 128, 32, KV_DTYPE_FP16);
	/* Llama 2 is published in float16, Falcon 7B is multi-query. */
	ASSERT_EQ(0, load_text(MODEL_POOL("a", "llama2-70b") MODEL_POOL("b", "falcon-7b")
			       MODEL_POOL("c", "gemma-2-9b") MODEL_POOL("d", "phi-3-mini"),
			       &cfg, path, err));
	geom_is(_metadata, &cfg.pools[0].geom, 80, 8, 128, 16, KV_DTYPE_FP16);
	geom_is(_metadata, &cfg.pools[1].geom, 32, 1, 64, 16, KV_DTYPE_BF16);
	geom_is(_metadata, &cfg.pools[2].geom, 42, 8, 256, 16, KV_DTYPE_BF16);
	geom_is(_metadata, &cfg.pools[3].geom, 32, 32, 96, 16, KV_DTYPE_BF16);
}

/* Every preset makes a pool: the largest block fits its limits. */
TEST(every_preset_loads)
{
	char text[256], err[KV_CONFIG_ERR_MAX];
	const struct kv_model *m;
	struct kvmemd_config cfg;
	size_t i;

	ASSERT_LT(20, kv_model_count());
	for (i = 0; (m = kv_model_at(i)); i++) {
		snprintf(text, sizeof(text), "pool.p.model = %s\npool.p.device_mem = 64G\n"
			 "pool.p.host_mem = 0\n", m->name);
		EXPECT_EQ(0, kvmemd_config_load_string(&cfg, "presets", text, err, sizeof(err)));
		if (err[0])
			TH_LOG("%s: %s", m->name, err);
		EXPECT_EQ(m->layers, cfg.pools[0].geom.layers);
		EXPECT_EQ(m->kv_heads, cfg.pools[0].geom.kv_heads);
		EXPECT_LE(4, cfg.pools[0].nr_frames[KV_TIER_DEVICE]);
	}
	EXPECT_EQ(i, kv_model_count());
	EXPECT_NULL(kv_model_at(i));
}

TEST(pool_hf_config_gives_the_geometry)
{
	char path[TMP_PATH_MAX], json[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX];
	char text[512], *t1;
	struct kvmemd_config cfg, back;

	ASSERT_EQ(0, tmp_write(json, llama3_8b_json));
	snprintf(text, sizeof(text), "pool.h.hf_config = %s\npool.h.device_mem = 1G\n"
		 "pool.h.host_mem = 0\npool.h.block_tokens = 8\n", json);
	EXPECT_EQ(0, load_text(text, &cfg, path, err));
	EXPECT_STREQ("", err);
	EXPECT_STREQ(json, cfg.pools[0].hf_config);
	geom_is(_metadata, &cfg.pools[0].geom, 32, 8, 128, 8, KV_DTYPE_BF16);
	EXPECT_EQ(1024, cfg.pools[0].nr_frames[KV_TIER_DEVICE]);

	/* Printed: the file and the geometry it gave, which load back. */
	t1 = config_text(&cfg);
	ASSERT_NE_NULL(t1);
	snprintf(text, sizeof(text), "pool.h.hf_config = %s\npool.h.layers = 32\n", json);
	EXPECT_NE_NULL(strstr(t1, text));
	EXPECT_NULL(strstr(t1, "pool.h.model"));
	EXPECT_EQ(0, kvmemd_config_load_string(&back, "printed", t1, err, sizeof(err)));
	EXPECT_EQ(0, memcmp(&cfg, &back, sizeof(cfg)));
	free(t1);
	unlink(json);
}

TEST(pool_model_print_reload)
{
	char err[KV_CONFIG_ERR_MAX], *t1;
	struct kvmemd_config cfg, back, next;

	ASSERT_EQ(0, kvmemd_config_load_string(&cfg, "a", MODEL_POOL("q", "qwen2.5-7b")
					       GEOM("x", "2") "pool.x.device_mem = 1M\n"
					       "pool.x.host_mem = 0\n", err, sizeof(err)));
	t1 = config_text(&cfg);
	ASSERT_NE_NULL(t1);
	EXPECT_NE_NULL(strstr(t1, "pool.q.model = qwen2.5-7b\npool.q.layers = 28\n"
			      "pool.q.kv_heads = 4\npool.q.head_dim = 128\n"
			      "pool.q.block_tokens = 16\npool.q.dtype = bf16\n"));
	EXPECT_NE_NULL(strstr(t1, "\npool.x.layers = 2\n"));
	EXPECT_NULL(strstr(t1, "pool.x.model"));
	EXPECT_NULL(strstr(t1, "hf_config"));
	ASSERT_EQ(0, kvmemd_config_load_string(&back, "printed", t1, err, sizeof(err)));
	EXPECT_EQ(0, memcmp(&cfg, &back, sizeof(cfg)));
	free(t1);

	/* Another model needs a restart. */
	ASSERT_EQ(0, kvmemd_config_load_string(&next, "b", MODEL_POOL("q", "qwen2.5-72b")
					       GEOM("x", "2") "pool.x.device_mem = 1M\n"
					       "pool.x.host_mem = 0\n", err, sizeof(err)));
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&cfg, &next, NULL, err, sizeof(err)));
	EXPECT_STREQ("pool.q.model changed from 'qwen2.5-7b' to 'qwen2.5-72b'; needs a restart",
		     err);
	/* The same geometry given by its keys instead is a change too. */
	ASSERT_EQ(0, kvmemd_config_load_string(&next, "c",
					       "pool.q.layers = 28\npool.q.kv_heads = 4\n"
					       "pool.q.head_dim = 128\npool.q.block_tokens = 16\n"
					       "pool.q.dtype = bf16\npool.q.device_mem = 16G\n"
					       "pool.q.host_mem = 0\n"
					       GEOM("x", "2") "pool.x.device_mem = 1M\n"
					       "pool.x.host_mem = 0\n", err, sizeof(err)));
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&cfg, &next, NULL, err, sizeof(err)));
	EXPECT_STREQ("pool.q.model changed from 'qwen2.5-7b' to ''; needs a restart", err);
}

/* A config.json edited under a running daemon: its geometry needs a restart. */
TEST(pool_hf_config_changed_needs_a_restart)
{
	char json[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX], text[512];
	struct kvmemd_config cfg, next;
	u32 changed;

	ASSERT_EQ(0, tmp_write(json, llama3_8b_json));
	snprintf(text, sizeof(text), "pool.h.hf_config = %s\npool.h.device_mem = 1G\n"
		 "pool.h.host_mem = 0\n", json);
	ASSERT_EQ(0, kvmemd_config_load_string(&cfg, "a", text, err, sizeof(err)));
	ASSERT_EQ(0, kvmemd_config_load_string(&next, "a", text, err, sizeof(err)));
	EXPECT_EQ(0, kvmemd_config_reload_diff(&cfg, &next, &changed, err, sizeof(err)));
	unlink(json);
	ASSERT_EQ(0, tmp_write(json, "{\"num_hidden_layers\": 40, \"num_attention_heads\": 40,"
			       " \"hidden_size\": 5120, \"torch_dtype\": \"float16\"}"));
	snprintf(text, sizeof(text), "pool.h.hf_config = %s\npool.h.device_mem = 1G\n"
		 "pool.h.host_mem = 0\n", json);
	ASSERT_EQ(0, kvmemd_config_load_string(&next, "a", text, err, sizeof(err)));
	geom_is(_metadata, &next.pools[0].geom, 40, 40, 128, 16, KV_DTYPE_FP16);
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&cfg, &next, &changed, err, sizeof(err)));
	EXPECT_NE_NULL(strstr(err, "needs a restart"));
	unlink(json);
}

static const struct bad_file bad_models[] = {
	{ "log.level = info\npool.x.model = foo\n", 2,
	  "pool.x.model: unknown model 'foo' (kvmemctl estimate --list shows the presets)" },
	{ "pool.x.model = Llama3-8B\n", 1, "pool.x.model: unknown model 'Llama3-8B'" },
	{ "pool.x.model = llama3-8b\npool.x.model = llama3-8b\n", 2,
	  "duplicate key 'pool.x.model' (first set at line 1)" },
	{ "pool.x.model = llama3-8b\npool.x.layers = 40\n"
	  "pool.x.device_mem = 1G\npool.x.host_mem = 0\n", 2,
	  "pool.x.layers = 40 disagrees with model 'llama3-8b', which has 32; leave it out" },
	{ "pool.x.kv_heads = 32\n" MODEL_POOL("x", "llama3-8b"), 1,
	  "pool.x.kv_heads = 32 disagrees with model 'llama3-8b', which has 8" },
	{ MODEL_POOL("x", "gemma-2-9b") "pool.x.head_dim = 128\n", 4,
	  "pool.x.head_dim = 128 disagrees with model 'gemma-2-9b', which has 256" },
	{ MODEL_POOL("x", "llama3-8b") "\npool.x.hf_config = /c.json\n", 5,
	  "pool 'x': give pool.x.model or pool.x.hf_config, not both (lines 1 and 5)" },
	{ "pool.x.hf_config = config.json\n", 1,
	  "pool.x.hf_config: 'config.json' is not an absolute path" },
	{ "pool.x.hf_config = /nonexistent/config.json\npool.x.device_mem = 1G\n"
	  "pool.x.host_mem = 0\n", 1,
	  "pool.x.hf_config: /nonexistent/config.json: No such file or directory" },
	{ "pool.x.model = llama3-8b\npool.x.host_mem = 0\n", 1,
	  "pool 'x': missing pool.x.device_mem" },
	{ GEOM("a", "2") "pool.a.device_mem = 1M\npool.a.host_mem = 1M\n"
	  "pool.b.device_mem = 1G\npool.b.host_mem = 0\n", 8,
	  "pool 'b': missing pool.b.layers (or pool.b.model or pool.b.hf_config)" },
	/* 126 layers x 8 heads x 128 x bf16: 7.875M blocks, 3 in 31.5M */
	{ "pool.x.model = llama3.1-405b\npool.x.device_mem = 31M\npool.x.host_mem = 0\n", 2,
	  "pool.x.device_mem: holds 3 frames of 8064K, at least 4 are needed" },
};

TEST(bad_models_name_file_and_line)
{
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX];
	struct kvmemd_config cfg;
	size_t i;

	for (i = 0; i < sizeof(bad_models) / sizeof(bad_models[0]); i++) {
		EXPECT_EQ(-EINVAL, load_text(bad_models[i].text, &cfg, path, err));
		EXPECT_TRUE(err_is(err, path, bad_models[i].line, bad_models[i].what));
	}
}

/* What a broken or unusable config.json says, at the hf_config line. */
TEST(bad_hf_configs)
{
	static const struct {
		const char *json, *what;
	} bad[] = {
		{ "{\n  \"num_hidden_layers\": 32,\n  \"num_attention_heads\" 32\n}\n",
		  ":3:25: expected ':' after the member name \"num_attention_heads\", found '3'" },
		{ "{\"num_hidden_layers\": 32,}", ":1:26: a comma before '}' (no trailing commas" },
		{ "", ":1:1: expected a value, found the end of the text" },
		{ "[32]", ": the top level is an array, not an object" },
		{ "{\"num_attention_heads\": 32, \"hidden_size\": 4096}",
		  ": num_hidden_layers is missing" },
		{ "{\"num_hidden_layers\": 32, \"hidden_size\": 4096}",
		  ": num_attention_heads is missing" },
		{ "{\"num_hidden_layers\": \"32\", \"num_attention_heads\": 32}",
		  ": num_hidden_layers (line 1) is a string, not a positive integer" },
		{ "{\"num_hidden_layers\": 32.0, \"num_attention_heads\": 32}",
		  ": num_hidden_layers (line 1) is 32.0, not a positive integer" },
		{ "{\"num_hidden_layers\": 2000, \"num_attention_heads\": 32}",
		  ": num_hidden_layers (line 1): 2000 is out of range (1..1024)" },
		{ "{\"num_hidden_layers\": 32, \"num_attention_heads\": 32}",
		  ": head_dim and hidden_size are both missing" },
		{ "{\"num_hidden_layers\": 32, \"num_attention_heads\": 48, \"hidden_size\": 4096}",
		  ": hidden_size 4096 is not a multiple of num_attention_heads 48" },
		{ "{\"num_hidden_layers\": 32, \"num_attention_heads\": 32, \"head_dim\": 128,"
		  " \"num_key_value_heads\": 5}",
		  ": num_attention_heads 32 is not a multiple of the 5 key/value heads" },
		{ "{\"num_hidden_layers\": 32, \"num_attention_heads\": 32, \"head_dim\": 128,"
		  " \"torch_dtype\": \"float8_e4m3fn\"}",
		  ": its torch_dtype is none of float16, bfloat16, float32; set pool.x.dtype" },
	};
	char path[TMP_PATH_MAX], json[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX];
	char text[512], want[256];
	struct kvmemd_config cfg;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ASSERT_EQ(0, tmp_write(json, bad[i].json));
		snprintf(text, sizeof(text), "log.level = info\npool.x.hf_config = %s\n"
			 "pool.x.device_mem = 1G\npool.x.host_mem = 0\n", json);
		snprintf(want, sizeof(want), "pool.x.hf_config: %s%s", json, bad[i].what);
		EXPECT_EQ(-EINVAL, load_text(text, &cfg, path, err));
		EXPECT_TRUE(err_is(err, path, 2, want));
		/* A dtype of its own is all the last one needs. */
		if (i == sizeof(bad) / sizeof(bad[0]) - 1) {
			strcat(text, "pool.x.dtype = fp16\n");
			EXPECT_EQ(0, load_text(text, &cfg, path, err));
			geom_is(_metadata, &cfg.pools[0].geom, 32, 32, 128, 16, KV_DTYPE_FP16);
		}
		unlink(json);
	}
}

/* One quantized pool of a geometry given by its keys. */
#define QUANT(n, dtype, hd, dev)					\
	"pool." n ".layers = 32\n"					\
	"pool." n ".kv_heads = 8\n"					\
	"pool." n ".head_dim = " hd "\n"				\
	"pool." n ".block_tokens = 16\n"				\
	"pool." n ".dtype = " dtype "\n"				\
	"pool." n ".device_mem = " dev "\n"				\
	"pool." n ".host_mem = 0\n"

/*
 * pool.NAME.dtype = int8, fp8 and int4: the frames count the scales
 * (kv_frame_bytes()), get and print name the dtype, and it loads back.
 */
TEST(quantized_pools)
{
	char path[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX], buf[64], *t1;
	struct kvmemd_config cfg, back;

	ASSERT_EQ(0, load_text(QUANT("a", "int8", "128", "16M") QUANT("b", "fp8", "128", "16M")
			       QUANT("c", "int4", "128", "16M") QUANT("d", "int4", "32", "1M"),
			       &cfg, path, err));
	EXPECT_STREQ("", err);
	ASSERT_EQ(4, cfg.nr_pools);
	geom_is(_metadata, &cfg.pools[0].geom, 32, 8, 128, 16, KV_DTYPE_INT8);
	geom_is(_metadata, &cfg.pools[1].geom, 32, 8, 128, 16, KV_DTYPE_FP8_E4M3);
	geom_is(_metadata, &cfg.pools[2].geom, 32, 8, 128, 16, KV_DTYPE_INT4);
	/* int8, fp8: 1M of values and 2 x 32 x 8 float scales, in 257 pages */
	EXPECT_EQ(1052672, kv_frame_bytes(&cfg.pools[0].geom));
	EXPECT_EQ(15, cfg.pools[0].nr_frames[KV_TIER_DEVICE]);
	EXPECT_EQ(15, cfg.pools[1].nr_frames[KV_TIER_DEVICE]);
	/* int4: 64 bytes and 4 binary16 scales a vector, 576K a block */
	EXPECT_EQ(589824, kv_frame_bytes(&cfg.pools[2].geom));
	EXPECT_EQ(28, cfg.pools[2].nr_frames[KV_TIER_DEVICE]);
	/* head_dim 32: 16 + 2 bytes a vector, 8192 vectors: 144K */
	EXPECT_EQ(147456, kv_frame_bytes(&cfg.pools[3].geom));
	EXPECT_EQ(7, cfg.pools[3].nr_frames[KV_TIER_DEVICE]);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "pool.a.dtype", buf, sizeof(buf)));
	EXPECT_STREQ("int8", buf);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "pool.b.dtype", buf, sizeof(buf)));
	EXPECT_STREQ("fp8", buf);
	EXPECT_EQ(0, kvmemd_config_get(&cfg, "pool.c.dtype", buf, sizeof(buf)));
	EXPECT_STREQ("int4", buf);
	t1 = config_text(&cfg);
	ASSERT_NE_NULL(t1);
	EXPECT_NE_NULL(strstr(t1, "\npool.b.dtype = fp8\n"));
	EXPECT_EQ(0, kvmemd_config_load_string(&back, "printed", t1, err, sizeof(err)));
	EXPECT_EQ(0, memcmp(&cfg, &back, sizeof(cfg)));
	free(t1);
	/* A model's pool may be quantized: its dtype is the key's. */
	ASSERT_EQ(0, load_text(MODEL_POOL("m", "llama3-8b") "pool.m.dtype = int4\n",
			       &cfg, path, err));
	geom_is(_metadata, &cfg.pools[0].geom, 32, 8, 128, 16, KV_DTYPE_INT4);
	EXPECT_EQ(589824, kv_frame_bytes(&cfg.pools[0].geom));
	/* The dtype is a geometry key: changing it needs a restart. */
	ASSERT_EQ(0, load_text(MODEL_POOL("m", "llama3-8b") "pool.m.dtype = int8\n",
			       &back, path, err));
	EXPECT_EQ(-EPERM, kvmemd_config_reload_diff(&cfg, &back, NULL, err, sizeof(err)));
	EXPECT_NE_NULL(strstr(err, "needs a restart"));
}

/* A quantized pool needs head_dim a multiple of 32: the error names the key. */
TEST(quantized_pool_head_dim)
{
	char path[TMP_PATH_MAX], json[TMP_PATH_MAX], err[KV_CONFIG_ERR_MAX], text[512];
	char want[256];
	struct kvmemd_config cfg;

	EXPECT_EQ(-EINVAL, load_text(QUANT("a", "int4", "48", "16M"), &cfg, path, err));
	EXPECT_TRUE(err_is(err, path, 3,
			   "pool.a.head_dim = 48: a pool of dtype int4 needs head_dim a multiple of 32"));
	EXPECT_EQ(-EINVAL, load_text("log.level = info\n" QUANT("b", "int8", "8", "16M"), &cfg,
				     path, err));
	EXPECT_TRUE(err_is(err, path, 4, "pool.b.head_dim = 8: a pool of dtype int8 needs"));
	EXPECT_EQ(-EINVAL, load_text(QUANT("c", "fp8", "1000", "64M"), &cfg, path, err));
	EXPECT_TRUE(err_is(err, path, 3, "pool.c.head_dim = 1000: a pool of dtype fp8 needs"));
	/* The same head_dims unquantized are fine. */
	EXPECT_EQ(0, load_text(QUANT("a", "bf16", "48", "16M"), &cfg, path, err));
	EXPECT_EQ(0, load_text(QUANT("c", "fp32", "1000", "256M"), &cfg, path, err));
	/* A model's head_dim: the error is on the dtype line. */
	ASSERT_EQ(0, tmp_write(json, "{\"num_hidden_layers\": 32, \"num_attention_heads\": 32,"
			       " \"head_dim\": 80, \"torch_dtype\": \"bfloat16\"}"));
	snprintf(text, sizeof(text), "pool.x.hf_config = %s\npool.x.device_mem = 1G\n"
		 "pool.x.host_mem = 0\npool.x.dtype = int8\n", json);
	EXPECT_EQ(-EINVAL, load_text(text, &cfg, path, err));
	snprintf(want, sizeof(want),
		 "pool.x.head_dim = 80: a pool of dtype int8 needs head_dim a multiple of 32");
	EXPECT_TRUE(err_is(err, path, 4, want));
	unlink(json);
}

/* The example file: as shipped, and with every default uncommented. */
/*
 * pool.NAME.dtype takes exactly lib/kvsize.c's names, for the same dtypes,
 * and they are kv_dtype_name()'s
 */
TEST(dtype_names_are_kvsize_names)
{
	unsigned int i;

	for (i = 0; i < KV_SIZE_NR_DTYPES; i++) {
		EXPECT_STREQ(kv_size_dtypes[i].name, dtype_names[i]);
		EXPECT_EQ(kv_size_dtypes[i].pool_dtype, dtype_values[i]);
		EXPECT_STREQ(kv_dtype_name(dtype_values[i]), dtype_names[i]);
	}
	EXPECT_EQ(NULL, dtype_names[KV_SIZE_NR_DTYPES]);
}

TEST(example_file_holds_the_defaults)
{
	char path[TMP_PATH_MAX + 64], err[KV_CONFIG_ERR_MAX], line[512];
	struct kvmemd_config cfg, def;
	const char *top = getenv("TOP");
	char *text = NULL;
	size_t len = 0;
	int keys = 0;
	FILE *in, *out;

	/* TOP when run by run_kselftest.sh; else from the folder or the root. */
	snprintf(path, sizeof(path), "%s/daemon/kvmemd.conf.example", top ? top : "../..");
	if (!top && access(path, R_OK))
		snprintf(path, sizeof(path), "daemon/kvmemd.conf.example");
	kvmemd_config_defaults(&def);
	ASSERT_EQ(0, kvmemd_config_load(&cfg, path, 0, err, sizeof(err)));
	EXPECT_TRUE(config_equal(&def, &cfg));

	in = fopen(path, "r");
	ASSERT_NE_NULL(in);
	out = open_memstream(&text, &len);
	ASSERT_NE_NULL(out);
	while (fgets(line, sizeof(line), in)) {
		if (line[0] == '#' && line[1] >= 'a' && line[1] <= 'z') {
			fputs(line + 1, out);
			keys++;
		}
	}
	fclose(in);
	fclose(out);
	/*
	 * Every key but the two unset groups and the unset swap.path, and the
	 * pool's model and hf_config (not set: the example gives the geometry).
	 */
	EXPECT_EQ(NR_KEYS - 3 + NR_POOL_KEYS - 2, keys);
	EXPECT_EQ(0, kvmemd_config_load_string(&cfg, "example", text, err, sizeof(err)));
	EXPECT_STREQ("", err);
	EXPECT_TRUE(config_equal(&def, &cfg));
	free(text);
}

TEST_HARNESS_MAIN
