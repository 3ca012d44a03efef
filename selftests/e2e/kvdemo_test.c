// SPDX-License-Identifier: MIT
/*
 * kvdemo end to end, against a real kvmemd on the cpu backend with the
 * arenas of `make run' (daemon/demo/kvdemo.conf: 64 device, 32 host and
 * 1024 swap blocks): a short stream with --check passes (every step's
 * logits equal to the dense recomputation) and goes through preemption;
 * the tokens do not depend on the batch size nor on the K/V path (in place
 * or staged through kvc_frame_read/write, as on GPU memory); weights saved
 * to safetensors and read back give the same tokens; a V vector
 * overwritten in the pool makes --check fail; a missing weights file, a
 * file that is not safetensors, and tensors of the wrong shape or count
 * are refused with messages that name the file and the tensor; bad options
 * are refused; INT8 and INT4 pools pass --check within their tolerances and
 * still catch a corrupted block; pools with no room below the device tier
 * preempt by recompute; on a pool of 8 blocks, requests that could never
 * finish are refused at admission, and the rest pass --check; the last
 * request left gets the frames of kvdemo's own reserve before kvdemo gives
 * up; two clients on one small pool both finish.
 *
 * A small model (dim 64, vocab 128) keeps each run short, under ASan too.
 */
#include <fcntl.h>
#include "kselftest_harness.h"
#include "daemon/daemon_test.h"

#define DEMO_POOL							\
	"pool.default.layers = 4\npool.default.kv_heads = 4\n"		\
	"pool.default.head_dim = 64\npool.default.block_tokens = 16\n"	\
	"pool.default.dtype = fp16\npool.default.device_mem = 4M\n"	\
	"pool.default.host_mem = 2M\npool.default.swap_mem = 64M\n"	\
	"pool.q.layers = 4\npool.q.kv_heads = 4\npool.q.head_dim = 64\n"	\
	"pool.q.block_tokens = 16\npool.q.dtype = int8\n"		\
	"pool.q.device_mem = 2M\npool.q.host_mem = 0\n"		\
	"pool.q4.layers = 4\npool.q4.kv_heads = 4\npool.q4.head_dim = 64\n"	\
	"pool.q4.block_tokens = 16\npool.q4.dtype = int4\n"		\
	"pool.q4.device_mem = 2M\npool.q4.host_mem = 0\n"		\
	"pool.tiny.layers = 4\npool.tiny.kv_heads = 4\n"			\
	"pool.tiny.head_dim = 64\npool.tiny.block_tokens = 16\n"		\
	"pool.tiny.dtype = fp16\npool.tiny.device_mem = 1792K\n"		\
	"pool.tiny.host_mem = 0\n"						\
	"pool.low.layers = 4\npool.low.kv_heads = 4\n"			\
	"pool.low.head_dim = 64\npool.low.block_tokens = 16\n"		\
	"pool.low.dtype = fp16\npool.low.device_mem = 1792K\n"		\
	"pool.low.host_mem = 256K\n"						\
	"pool.cramped.layers = 4\npool.cramped.kv_heads = 4\n"		\
	"pool.cramped.head_dim = 64\npool.cramped.block_tokens = 16\n"	\
	"pool.cramped.dtype = fp16\npool.cramped.device_mem = 512K\n"	\
	"pool.cramped.host_mem = 0\n"						\
	"pool.snug.layers = 4\npool.snug.kv_heads = 4\n"			\
	"pool.snug.head_dim = 64\npool.snug.block_tokens = 16\n"		\
	"pool.snug.dtype = fp16\npool.snug.device_mem = 1M\n"		\
	"pool.snug.host_mem = 0\n"
#define SMALL	"--dim", "64", "--ffn", "128", "--vocab", "128", "-q"
#define OUT_MAX	(64 << 10)

FIXTURE(kvdemo) {
	struct daemon d;
	char dir[64];		/* the swap file, weights, kvdemo's output */
	char out[OUT_MAX];	/* kvdemo's stdout and stderr of the last run */
};

FIXTURE_SETUP(kvdemo)
{
	char conf[2048];

	snprintf(self->dir, sizeof(self->dir), "/tmp/kvdemo-test-XXXXXX");
	ASSERT_NE_NULL(mkdtemp(self->dir));
	ASSERT_GT(sizeof(conf), (size_t)snprintf(conf, sizeof(conf), "%sswap.path = %s/swap\n",
						 DEMO_POOL, self->dir));
	ASSERT_EQ(0, daemon_start(&self->d, conf));
}

FIXTURE_TEARDOWN(kvdemo)
{
	char cmd[128];

	EXPECT_EQ(0, daemon_stop(&self->d));
	daemon_cleanup(&self->d);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", self->dir);
	if (system(cmd))
		TH_LOG("could not remove %s", self->dir);
}

/*
 * Run kvdemo on the fixture's daemon with the NULL-terminated options
 * that follow; its output (both streams) lands in self->out. Returns its
 * exit status, or -1.
 */
static int kvdemo(FIXTURE_DATA(kvdemo) *self, ...)
{
	char exe[PATH_MAX], log[128], *argv[48] = { "kvdemo", "-s", self->d.sock };
	va_list ap;
	int n = 3;

	va_start(ap, self);
	while (n < 47 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	build_path("kvdemo", exe, sizeof(exe));
	snprintf(log, sizeof(log), "%s/out", self->dir);
	return run_to_end(exe, argv, log, self->out, OUT_MAX);
}

/* The number after @key in kvdemo's output; -1 when absent. */
static long long out_num(const char *out, const char *key)
{
	const char *p = strstr(out, key);

	return p ? strtoll(p + strlen(key), NULL, 0) : -1;
}

/* The number just before @word in kvdemo's output; -1 when absent. */
static long long num_before(const char *out, const char *word)
{
	const char *p = strstr(out, word);

	if (!p || p == out)
		return -1;
	while (p > out && p[-1] >= '0' && p[-1] <= '9')
		p--;
	return strtoll(p, NULL, 10);
}

/* The token checksum of the summary, as text; "" when absent. */
static void checksum(const char *out, char *sum, size_t len)
{
	const char *p = strstr(out, "token checksum ");

	snprintf(sum, len, "%.16s", p ? p + strlen("token checksum ") : "");
}

TEST_F_TIMEOUT(kvdemo, check_passes_under_pressure, 240)
{
	char sum[17];

	ASSERT_EQ(0, kvdemo(self, "--check", "-n", "25", SMALL, NULL));
	EXPECT_NE_NULL(strstr(self->out, "kvdemo: summary"));
	/* Request 24 asks for more than the device tier holds. */
	EXPECT_NE_NULL(strstr(self->out, "request 24 needs"));
	EXPECT_EQ(24, out_num(self->out, "  requests    "));
	EXPECT_EQ(1, num_before(self->out, " refused (never"));
	EXPECT_EQ(1, num_before(self->out, " never;"));
	EXPECT_LT(0, out_num(self->out, "  check       "));
	EXPECT_LT(0, num_before(self->out, " with 2 samples"));
	EXPECT_LT(0, out_num(self->out, "copy-on-write "));
	EXPECT_LT(0, num_before(self->out, " truncations"));
	EXPECT_LT(0, num_before(self->out, " preemptions"));
	EXPECT_LT(0, out_num(self->out, "blocks demoted "));
	checksum(self->out, sum, sizeof(sum));
	EXPECT_EQ(16, (int)strlen(sum));
	if (!_metadata->passed)
		TH_LOG("kvdemo said:\n%s", self->out);
}

/*
 * The tokens depend on the seed alone: a batch of 3 with K/V staged through
 * kvc_frame_read/write generates what a batch of 16 in place does.
 */
TEST_F_TIMEOUT(kvdemo, tokens_do_not_depend_on_batch_or_kv_path, 240)
{
	char a[17], b[17];

	ASSERT_EQ(0, kvdemo(self, "-n", "12", SMALL, NULL));
	checksum(self->out, a, sizeof(a));
	ASSERT_EQ(0, kvdemo(self, "-n", "12", "--batch", "3", "--staged", "--check", SMALL,
			    NULL));
	checksum(self->out, b, sizeof(b));
	EXPECT_NE_NULL(strstr(self->out, "staged through kvc_frame_read/write"));
	EXPECT_STREQ(a, b);
	ASSERT_EQ(0, kvdemo(self, "-n", "12", "--seed", "2", SMALL, NULL));
	checksum(self->out, b, sizeof(b));
	EXPECT_STRNE(a, b);
}

TEST_F_TIMEOUT(kvdemo, saved_weights_read_back, 240)
{
	char w[128], a[17], b[17];

	snprintf(w, sizeof(w), "%s/w.safetensors", self->dir);
	ASSERT_EQ(0, kvdemo(self, "-n", "6", "--save-weights", w, SMALL, NULL));
	checksum(self->out, a, sizeof(a));
	/* The shape comes from the file; the seed still drives the requests. */
	ASSERT_EQ(0, kvdemo(self, "-n", "6", "--check", "--weights", w, "-q", NULL));
	checksum(self->out, b, sizeof(b));
	EXPECT_STREQ(a, b);
	EXPECT_NE_NULL(strstr(self->out, "0.5M parameters, /tmp/kvdemo-test-"));
}

TEST_F_TIMEOUT(kvdemo, check_catches_a_corrupted_block, 240)
{
	EXPECT_EQ(1, kvdemo(self, "--check", "-n", "12", "--inject-fault", "30", SMALL, NULL));
	EXPECT_NE_NULL(strstr(self->out, "fault injected at step"));
	EXPECT_NE_NULL(strstr(self->out, "logits differ from the dense recomputation"));
	/* Without --check the same fault goes unnoticed: the check is what found it. */
	EXPECT_EQ(0, kvdemo(self, "-n", "12", "--inject-fault", "30", SMALL, NULL));
}

TEST_F_TIMEOUT(kvdemo, missing_weights_file, 120)
{
	char w[128];

	snprintf(w, sizeof(w), "%s/nope.safetensors", self->dir);
	EXPECT_EQ(1, kvdemo(self, "--weights", w, NULL));
	EXPECT_NE_NULL(strstr(self->out, "nope.safetensors: cannot open the weights: No such "
					 "file or directory"));
	EXPECT_NULL(strstr(self->out, "summary"));
}

static int write_bytes(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, buf, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

/*
 * A safetensors file of a Llama-style model with @layers layers (dim 64,
 * 8 query heads and 4 kv heads of 64, ffn 128, vocab 128, F32 zeros), with
 * tensor @bad (or none) given the shape @shape instead.
 */
static int write_model(const char *path, int layers, const char *bad, const char *shape)
{
	static const char *const per_layer[][2] = {
		{ "input_layernorm.weight", "[64]" },
		{ "self_attn.q_proj.weight", "[512,64]" },
		{ "self_attn.k_proj.weight", "[256,64]" },
		{ "self_attn.v_proj.weight", "[256,64]" },
		{ "self_attn.o_proj.weight", "[64,512]" },
		{ "post_attention_layernorm.weight", "[64]" },
		{ "mlp.gate_proj.weight", "[128,64]" },
		{ "mlp.up_proj.weight", "[128,64]" },
		{ "mlp.down_proj.weight", "[64,128]" },
	};
	size_t cap = 1 << 16, at = 0, data;
	char *h = calloc(1, cap), *buf, name[96];
	unsigned long long off = 0, n, a, b;
	const char *sh;
	int l, i, k, err;

	if (!h)
		return -1;
	at += snprintf(h + at, cap - at, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (l = -1; l <= layers; l++) {
		for (i = 0; i < (l < 0 || l == layers ? (l < 0 ? 1 : 2) : 9); i++) {
			if (l < 0) {
				snprintf(name, sizeof(name), "model.embed_tokens.weight");
				sh = "[128,64]";
			} else if (l == layers) {
				snprintf(name, sizeof(name), i ? "lm_head.weight" : "model.norm.weight");
				sh = i ? "[128,64]" : "[64]";
			} else {
				snprintf(name, sizeof(name), "model.layers.%d.%s", l, per_layer[i][0]);
				sh = per_layer[i][1];
			}
			/* Data for the right shape: a bad one may be huge. */
			k = sscanf(sh, "[%llu,%llu]", &a, &b);
			n = (k == 2 ? a * b : a) * 4;
			if (bad && !strcmp(name, bad))
				sh = shape;
			at += snprintf(h + at, cap - at, ",\"%s\":{\"dtype\":\"F32\",\"shape\":%s,"
				       "\"data_offsets\":[%llu,%llu]}", name, sh, off, off + n);
			off += n;
		}
	}
	h[at++] = '}';
	data = 8 + at + off;
	buf = calloc(1, data);
	if (!buf) {
		free(h);
		return -1;
	}
	for (i = 0; i < 8; i++)
		buf[i] = (char)((unsigned long long)at >> (8 * i));
	memcpy(buf + 8, h, at);
	err = write_bytes(path, buf, data);
	free(buf);
	free(h);
	return err;
}

TEST_F_TIMEOUT(kvdemo, safetensors_shapes_are_checked, 240)
{
	char w[128];

	snprintf(w, sizeof(w), "%s/m.safetensors", self->dir);
	/* The good file first: the checks below refuse it for their one change. */
	ASSERT_EQ(0, write_model(w, 4, NULL, NULL));
	EXPECT_EQ(0, kvdemo(self, "--weights", w, "-n", "2", "-q", NULL));
	EXPECT_NE_NULL(strstr(self->out, "dim 64, 8 query heads over 4 kv heads of 64"));

	ASSERT_EQ(0, write_model(w, 4, "model.layers.2.self_attn.v_proj.weight", "[128,64]"));
	EXPECT_EQ(1, kvdemo(self, "--weights", w, NULL));
	EXPECT_NE_NULL(strstr(self->out, "m.safetensors: model.layers.2.self_attn.v_proj.weight "
					 "has shape [128, 64], expected [256, 64]"));

	ASSERT_EQ(0, write_model(w, 4, "model.layers.0.self_attn.k_proj.weight", "[128,64]"));
	EXPECT_EQ(1, kvdemo(self, "--weights", w, NULL));
	EXPECT_NE_NULL(strstr(self->out, "k_proj.weight has 128 rows; the pool holds 4 kv heads "
					 "of 64, 256 rows"));

	ASSERT_EQ(0, write_model(w, 4, "model.layers.3.mlp.down_proj.weight", "[64]"));
	EXPECT_EQ(1, kvdemo(self, "--weights", w, NULL));
	EXPECT_NE_NULL(strstr(self->out, "down_proj.weight has shape [64], expected [64, 128]"));

	ASSERT_EQ(0, write_model(w, 3, NULL, NULL));
	EXPECT_EQ(1, kvdemo(self, "--weights", w, NULL));
	EXPECT_NE_NULL(strstr(self->out, "3 transformer layers; the pool holds K/V of 4"));

	/* Cut short: the last tensors' byte ranges lie past the end. */
	ASSERT_EQ(0, write_model(w, 4, NULL, NULL));
	ASSERT_EQ(0, truncate(w, 8192));
	EXPECT_EQ(1, kvdemo(self, "--weights", w, NULL));
	EXPECT_NE_NULL(strstr(self->out, "data_offsets are not the"));

	/* Sizes of 2^32 and more, and shapes too large to hold, are refused. */
	ASSERT_EQ(0, write_model(w, 4, "model.layers.0.mlp.gate_proj.weight",
				 "[4294967296,64]"));
	EXPECT_EQ(1, kvdemo(self, "--weights", w, NULL));
	EXPECT_NE_NULL(strstr(self->out, "gate_proj.weight: shape has a size that is not a "
					 "number below 2^32"));
	ASSERT_EQ(0, write_model(w, 4, "model.embed_tokens.weight", "[4294967295,4294967295]"));
	EXPECT_EQ(1, kvdemo(self, "--weights", w, NULL));
	EXPECT_NE_NULL(strstr(self->out, "a vocabulary of 4294967295 tokens"));
	ASSERT_EQ(0, write_model(w, 4, "model.layers.0.mlp.gate_proj.weight",
				 "[4294967295,64]"));
	EXPECT_EQ(1, kvdemo(self, "--weights", w, NULL));
	EXPECT_NE_NULL(strstr(self->out, "m.safetensors: cannot hold the model"));

	ASSERT_EQ(0, write_bytes(w, "not a model", 11));
	EXPECT_EQ(1, kvdemo(self, "--weights", w, NULL));
	EXPECT_NE_NULL(strstr(self->out, "m.safetensors: not a safetensors file"));

	ASSERT_EQ(0, write_bytes(w, "\x0b\0\0\0\0\0\0\0{\"a\":[1,}  ", 19));
	EXPECT_EQ(1, kvdemo(self, "--weights", w, NULL));
	EXPECT_NE_NULL(strstr(self->out, "m.safetensors: header: 1:"));
}

TEST_F_TIMEOUT(kvdemo, bad_options_are_refused, 120)
{
	EXPECT_EQ(2, kvdemo(self, "--batch", "0", NULL));
	EXPECT_NE_NULL(strstr(self->out, "--batch: '0' is not a number from 1 to"));
	EXPECT_EQ(2, kvdemo(self, "--requests", "many", NULL));
	EXPECT_EQ(2, kvdemo(self, "extra", NULL));
	EXPECT_EQ(1, kvdemo(self, "--q-heads", "6", NULL));
	EXPECT_NE_NULL(strstr(self->out, "--q-heads 6 query heads: not a multiple of the pool's 4 kv heads"));
	EXPECT_EQ(1, kvdemo(self, "--pool", "nope", NULL));
	EXPECT_NE_NULL(strstr(self->out, "pool nope: no such pool"));
}

/*
 * Quantized pools (INT8, INT4): the model's activations are bf16, the
 * kernels quantize K and V as they store them, and --check holds within
 * the pool dtype's tolerance (2e-2, 1.5e-1; the same run on fp16 holds
 * 2e-2 with errors near 1e-4) and still catches a corrupted block.
 */
TEST_F_TIMEOUT(kvdemo, check_passes_on_quantized_pools, 240)
{
	static const char *const pools[] = { "q", "q4" };
	unsigned int i;

	for (i = 0; i < 2; i++) {
		ASSERT_EQ(0, kvdemo(self, "--pool", pools[i], "--check", "-n", "12", SMALL, NULL));
		EXPECT_LT(0, out_num(self->out, "  check       "));
		EXPECT_NE_NULL(strstr(self->out, i ? "tolerance 0.15)" : "tolerance 0.02)"));
		EXPECT_EQ(1, kvdemo(self, "--pool", pools[i], "--check", "-n", "12",
				    "--inject-fault", "30", SMALL, NULL));
		EXPECT_NE_NULL(strstr(self->out, "fault injected at step"));
		EXPECT_NE_NULL(strstr(self->out, "logits differ from the dense recomputation"));
		if (!_metadata->passed)
			TH_LOG("kvdemo said:\n%s", self->out);
	}
}

/*
 * kvdemo on pool @pool (12 requests, --check) passes, preempts by
 * recompute at least once, and generates the tokens the roomy default
 * pool does; its output says @says.
 */
static void recompute_run(struct __test_metadata *_metadata, FIXTURE_DATA(kvdemo) *self,
			  const char *pool, const char *says)
{
	char a[17], b[17];

	ASSERT_EQ(0, kvdemo(self, "-n", "12", SMALL, NULL));
	checksum(self->out, a, sizeof(a));
	ASSERT_EQ(0, kvdemo(self, "--pool", pool, "--check", "-n", "12", SMALL, NULL));
	checksum(self->out, b, sizeof(b));
	EXPECT_STREQ(a, b);
	EXPECT_LT(0, out_num(self->out, "  check       "));
	EXPECT_LT(0, out_num(self->out, "  recompute   "));
	EXPECT_NE_NULL(strstr(self->out, says));
	if (!_metadata->passed)
		TH_LOG("kvdemo said:\n%s", self->out);
}

/*
 * A pool of 28 device blocks and no host tier: nothing could take a
 * preempted request's blocks, so preemption frees its sequences and resume
 * computes their known tokens again. Before, deactivated requests kept the
 * device tier full and kvdemo stopped with "Cannot allocate memory".
 */
TEST_F_TIMEOUT(kvdemo, tierless_pool_preempts_by_recompute, 240)
{
	recompute_run(_metadata, self, "tiny", " tokens computed again on resume");
}

/*
 * A pool of 28 device blocks over 4 host blocks and no swap: deactivated
 * requests' blocks soon have nowhere to go, and once one request is left
 * without room the preempted ones' sequences are freed (recompute). Before,
 * kvdemo stopped with "Cannot allocate memory" here too.
 */
TEST_F_TIMEOUT(kvdemo, full_lower_tiers_preempt_by_recompute, 240)
{
	recompute_run(_metadata, self, "low", "4 host blocks");
}

/*
 * A pool of 8 device blocks and none below: the min watermark keeps one
 * from STEPs, so ADMIT says never to a request of 8 blocks, which alone on
 * the pool would stop at its 8th. Before, such requests were admitted and
 * the stream stopped with "STEP of 1 sequences: Cannot allocate memory"
 * (15 of 16 seeds of 48 requests).
 */
TEST_F_TIMEOUT(kvdemo, admission_keeps_the_min_watermark, 240)
{
	static const char *const seeds[] = { "1", "2", "3" };
	unsigned int i;

	for (i = 0; i < 3; i++) {
		ASSERT_EQ(0, kvdemo(self, "--pool", "cramped", "--check", "-S", seeds[i],
				    "-n", "48", SMALL, NULL));
		EXPECT_LT(0, out_num(self->out, "  check       "));
		EXPECT_LT(0, num_before(self->out, " never;"));
		EXPECT_NE_NULL(strstr(self->out, "hold above its min watermark: refused"));
		EXPECT_EQ(NULL, strstr(self->out, "Cannot allocate memory"));
		if (!_metadata->passed)
			TH_LOG("kvdemo said:\n%s", self->out);
	}
}

/*
 * A pool of 16 device blocks and none below, a batch of 6: once one
 * request is left and a STEP for it still fails with -ENOMEM, with no
 * preempted request to free, kvdemo gives its reserve back
 * (kvc_reserve_release()) and tries again. Before, the frames idle in its
 * reserve (6 here) were out of the STEP's reach and the stream stopped
 * with "Cannot allocate memory" at step 134.
 */
TEST_F_TIMEOUT(kvdemo, reserve_given_back_before_giving_up, 240)
{
	ASSERT_EQ(0, kvdemo(self, "--pool", "snug", "--check", "-S", "1", "-b", "6", "-n", "40",
			    SMALL, NULL));
	EXPECT_LT(0, out_num(self->out, "  check       "));
	EXPECT_EQ(NULL, strstr(self->out, "Cannot allocate memory"));
	if (!_metadata->passed)
		TH_LOG("kvdemo said:\n%s", self->out);
}

/*
 * Two kvdemo clients on the 16 blocks of one pool: each admitted its
 * requests on its own, and their last requests may each wait for the
 * other's blocks. A client whose STEP finds no room and nothing of its own
 * to free waits a little, then preempts its request to let the other one
 * through, and comes back. Both runs finish and pass --check. Before, one
 * of the two stopped with "Cannot allocate memory" in 5 of 5 runs.
 */
TEST_F_TIMEOUT(kvdemo, two_clients_share_a_small_pool, 240)
{
	char exe[PATH_MAX], log[128], other[OUT_MAX];
	char *argv[] = { "kvdemo", "-s", self->d.sock, "--pool", "snug", "--check", "-S", "2",
			 "-b", "8", "-n", "30", SMALL, NULL };
	int status, rc;
	pid_t pid;

	build_path("kvdemo", exe, sizeof(exe));
	snprintf(log, sizeof(log), "%s/other", self->dir);
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid)
		_exit(run_to_end(exe, argv, log, other, sizeof(other)) & 255);
	rc = kvdemo(self, "--pool", "snug", "--check", "-S", "1", "-b", "8", "-n", "30", SMALL,
		    NULL);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, rc);
	EXPECT_LT(0, out_num(self->out, "  check       "));
	EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	ASSERT_EQ(0, read_file(log, other, sizeof(other)));
	EXPECT_NE_NULL(strstr(other, "  check       "));
	EXPECT_EQ(NULL, strstr(other, "Cannot allocate memory"));
	if (!_metadata->passed)
		TH_LOG("kvdemo said:\n%s\nthe other:\n%s", self->out, other);
}

/*
 * Another client sits on the frames: an inactive sequence of 12 blocks on
 * the 16 of a pool with no tier below, which reclaim cannot take. kvdemo's
 * last request finds no room, nothing pinned and a pool that does not
 * move between its yields: it gives up after 3 of them (YIELDS_ALONE),
 * not 2000.
 */
TEST_F_TIMEOUT(kvdemo, gives_up_when_another_client_sits_on_the_frames, 120)
{
	static uint64_t slots[12 * 16];
	struct kvc_step_seq ss;
	struct kvc_pool *p;
	struct kvc *c;
	uint64_t seq;

	ASSERT_EQ(0, kvc_connect(self->d.sock, &c));
	ASSERT_EQ(0, kvc_pool_open(c, "snug", &p));
	ASSERT_EQ(0, kvc_seq_create(c, p, &seq));
	ss = (struct kvc_step_seq){ .seq = seq, .nr_tokens = 12 * 16, .slots = slots };
	ASSERT_EQ(0, kvc_step(c, &ss, 1, 0, NULL));
	ASSERT_EQ(0, kvc_deactivate(c, &seq, 1));
	EXPECT_NE(0, kvdemo(self, "--pool", "snug", "-S", "1", "-b", "4", "-n", "8", SMALL, NULL));
	EXPECT_NE_NULL(strstr(self->out, "Cannot allocate memory"));
	EXPECT_EQ(3, num_before(self->out, " yields to other clients"));
	if (!_metadata->passed)
		TH_LOG("kvdemo said:\n%s", self->out);
	kvc_close(c);
}

TEST_HARNESS_MAIN
