// SPDX-License-Identifier: MIT
/*
 * The binaries: `kvmemctl estimate' with no daemon (a preset, a
 * config.json, a geometry; a dtype or the table of all; tensor parallel;
 * --list; its usage errors), and `kvmemctl advise' against a kvmemd whose
 * pool saw sequences end (freed, and left to a client that went):
 * KVMEM_STATS_SEQLEN counts them, and the advice follows from their
 * lengths.
 */
#include "kselftest_harness.h"
#include "daemon/daemon_test.h"

static char text[KVMEM_MSG_MAX];

/* Run kvmemctl with @args (stderr too) into text; its exit status. */
static int kvmemctl(const char *args)
{
	char cmd[1024];
	size_t n;
	FILE *f;
	int status;

	build_path("kvmemctl", cmd, sizeof(cmd));
	snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " %s 2>&1", args);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	status = pclose(f);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The line of @text that starts with @head, or NULL. */
static const char *line_of(const char *head)
{
	size_t n = strlen(head);
	const char *p;

	for (p = text; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (!strncmp(p, head, n))
			return p;
	}
	return NULL;
}

/* Does the line starting with @head hold @what? Print the text when not. */
static int line_has(const char *head, const char *what)
{
	const char *l = line_of(head), *e;

	e = l ? strchrnul(l, '\n') : NULL;
	if (l && memmem(l, (size_t)(e - l), what, strlen(what)))
		return 1;
	printf("# no line '%s...%s' in:\n%s", head, what, text);
	return 0;
}

TEST(estimate_one_dtype)
{
	ASSERT_EQ(0, kvmemctl("estimate --model llama3-8b --memory 60G --context 8192 "
			      "--kv-dtype bf16 --batch 4"));
	EXPECT_TRUE(line_has("model:", "llama3-8b (meta-llama/Meta-Llama-3-8B)"));
	EXPECT_TRUE(line_has("per token:", "131072 bytes (128 KiB)"));
	EXPECT_TRUE(line_has("per block:", "2097152 bytes (2 MiB)"));
	EXPECT_TRUE(line_has("frame:", "2097152 bytes (2 MiB)"));
	EXPECT_TRUE(line_has("memory:", "60 GiB holds 30720 frames, 491520 tokens"));
	EXPECT_TRUE(line_has("batch:", "60 sequences of 8192 tokens (512 blocks each)"));
	EXPECT_TRUE(line_has("context:", "122880 tokens for each of 4 sequences"));
	EXPECT_NULL(line_of("note:"));
	/* Quantized: the scales are counted, and the note names the pool dtypes. */
	ASSERT_EQ(0, kvmemctl("estimate --model llama3-8b --memory 60G --context 8192 "
			      "--kv-dtype int8"));
	EXPECT_TRUE(line_has("per token:", "65664 bytes"));
	EXPECT_TRUE(line_has("per block:", "1050624 bytes (1026 KiB), 2048 of them scales"));
	EXPECT_TRUE(line_has("frame:", "1052672 bytes (1028 KiB)"));
	EXPECT_TRUE(line_has("batch:", "119 sequences"));
	EXPECT_TRUE(line_has("note:", "(pool.NAME.dtype = int8, fp8 or int4)"));
	EXPECT_NULL(line_of("note: head_dim"));
	/* A head_dim no quantized pool takes is noted; the sizes still come. */
	ASSERT_EQ(0, kvmemctl("estimate --layers 4 --kv-heads 4 --head-dim 80 --kv-dtype int4"));
	EXPECT_TRUE(line_has("per block:", "23552 bytes (23 KiB), 3072 of them scales"));
	EXPECT_TRUE(line_has("note: head_dim 80", "not a multiple of 32"));
	ASSERT_EQ(0, kvmemctl("estimate --layers 4 --kv-heads 4 --head-dim 80 --kv-dtype bf16"));
	EXPECT_NULL(line_of("note:"));
}

TEST(estimate_table_and_tp)
{
	ASSERT_EQ(0, kvmemctl("estimate --model llama3-8b --memory 60G --context 8192"));
	EXPECT_TRUE(line_has("kv dtype ", "batch@8192"));
	EXPECT_TRUE(line_has("bf16 ", "2 MiB      30720      491520           60   (the model's)"));
	EXPECT_TRUE(line_has("fp32 ", "15360"));
	EXPECT_TRUE(line_has("int8 ", "1026 KiB"));
	EXPECT_TRUE(line_has("int4 ", "576 KiB"));
	/* 4 GPUs: 2 heads each, 512K blocks, 4 times the batch per GPU's 60G. */
	ASSERT_EQ(0, kvmemctl("estimate --model llama3-8b --memory 60G --context 8192 --tp 4"));
	EXPECT_TRUE(line_has("tp:", "4 GPUs, 2 of the 8 kv heads on each"));
	EXPECT_TRUE(line_has("bf16 ", "512 KiB     122880     1966080          240"));
	/* 16 GPUs for 8 heads: replicated. */
	ASSERT_EQ(0, kvmemctl("estimate --model llama3-8b --tp 16 --kv-dtype bf16"));
	EXPECT_TRUE(line_has("tp:", "each head is replicated on 2 GPUs"));
	EXPECT_TRUE(line_has("per token:", "16384 bytes (16 KiB) per GPU, 262144 bytes (256 KiB) "
			     "over the 16 GPUs"));
	EXPECT_EQ(2, kvmemctl("estimate --model llama3-8b --tp 3"));
	EXPECT_NE_NULL(strstr(text, "the 8 kv heads do not split evenly over 3 GPUs"));
	/* Sliding windows and contexts past the model's are noted. */
	ASSERT_EQ(0, kvmemctl("estimate --model gemma-2-9b --kv-dtype bf16 --memory 80G "
			      "--context 200000"));
	EXPECT_TRUE(line_has("note: 21 of the 42 layers", "4096-token sliding window"));
	EXPECT_TRUE(line_has("note: --context 200000", "the model's 8192 tokens"));
}

TEST(estimate_sources)
{
	char path[] = "/tmp/kvmem-hf-XXXXXX", args[256];
	FILE *f;
	int fd;

	/* A geometry given by hand: the default pool's. */
	ASSERT_EQ(0, kvmemctl("estimate --layers 4 --kv-heads 4 --head-dim 64 --kv-dtype fp16 "
			      "--memory 64M --batch 3"));
	EXPECT_TRUE(line_has("geometry:", "4 layers, 4 kv heads, head_dim 64"));
	EXPECT_TRUE(line_has("per block:", "65536 bytes (64 KiB)"));
	EXPECT_TRUE(line_has("memory:", "holds 1024 frames, 16384 tokens"));
	EXPECT_TRUE(line_has("context:", "5456 tokens for each of 3 sequences"));
	/* A config.json. */
	fd = mkstemp(path);
	ASSERT_LE(0, fd);
	f = fdopen(fd, "w");
	fputs("{\"model_type\": \"qwen2\", \"num_hidden_layers\": 28, \"num_attention_heads\": 28,"
	      " \"num_key_value_heads\": 4, \"hidden_size\": 3584, \"torch_dtype\": \"bfloat16\"}",
	      f);
	fclose(f);
	snprintf(args, sizeof(args), "estimate --hf-config %s --kv-dtype bf16 --block-tokens 32",
		 path);
	ASSERT_EQ(0, kvmemctl(args));
	EXPECT_TRUE(line_has("hf_config:", "(qwen2)"));
	EXPECT_TRUE(line_has("per token:", "57344 bytes (56 KiB)"));
	EXPECT_TRUE(line_has("block_tokens:", "32"));
	f = fopen(path, "w");
	fputs("{\"num_hidden_layers\": 28,}", f);
	fclose(f);
	EXPECT_EQ(1, kvmemctl(args));
	EXPECT_NE_NULL(strstr(text, ":1:26: a comma before '}'"));
	unlink(path);
	/* --list: every preset, one line each. */
	ASSERT_EQ(0, kvmemctl("estimate --list"));
	EXPECT_TRUE(line_has("llama3-8b ", "128 KiB        2 MiB"));
	EXPECT_TRUE(line_has("falcon-7b ", "multi-query"));
	EXPECT_TRUE(line_has("mistral-7b ", "sliding window 4096"));
	EXPECT_NE_NULL(line_of("qwen2.5-72b "));
	EXPECT_NE_NULL(line_of("gemma-2-27b "));
	EXPECT_NE_NULL(line_of("phi-3-mini "));
}

TEST(estimate_usage_errors)
{
	static const struct {
		const char *args, *what;
	} bad[] = {
		{ "estimate", "give --model, --hf-config, or --layers, --kv-heads and --head-dim" },
		{ "estimate --model foo", "unknown model 'foo' (kvmemctl estimate --list shows the presets)" },
		{ "estimate --model llama3-8b --hf-config /x.json", "give one of --model and --hf-config" },
		{ "estimate --model llama3-8b --layers 3", "go without --model or --hf-config" },
		{ "estimate --layers 3 --kv-heads 2", "give --model, --hf-config, or" },
		{ "estimate --model llama3-8b --kv-dtype int2", "--kv-dtype int2: not fp16" },
		{ "estimate --model llama3-8b --memory 60GB", "--memory 60GB: not a size" },
		{ "estimate --model llama3-8b --context 0", "--context 0: out of range" },
		{ "estimate --model llama3-8b --tp 0", "--tp 0: out of range" },
		{ "estimate --model llama3-8b --nope", "unknown option or missing value: --nope" },
		{ "estimate --model llama3-8b extra", "unexpected 'extra'" },
		{ "estimate --model", "unknown option or missing value: --model" },
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		EXPECT_EQ(2, kvmemctl(bad[i].args));
		if (!strstr(text, bad[i].what)) {
			TH_LOG("%s: no '%s' in: %s", bad[i].args, bad[i].what, text);
			EXPECT_TRUE(0);
		}
	}
	/* No daemon is asked: an unreachable socket does not matter. */
	ASSERT_EQ(0, kvmemctl("-s /nonexistent/sock estimate --model falcon-7b --kv-dtype bf16"));
	EXPECT_TRUE(line_has("per token:", "8192 bytes (8 KiB)"));
}

/* Bad advise arguments are usage errors, found before the daemon is asked. */
TEST(advise_usage_errors)
{
	static const char *const bad[] = {
		"advise --max-waste", "advise t --max-waste", "advise --max-waste 0 t",
		"advise --max-waste 101", "advise --max-waste 18446744073709551616",
		"advise --max-waste x", "advise --nope", "advise t u",
	};
	char args[128];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(args, sizeof(args), "-s /nonexistent/sock %s", bad[i]);
		EXPECT_EQ(2, kvmemctl(args));
		EXPECT_NE_NULL(strstr(text, "usage"));
	}
	EXPECT_EQ(3, kvmemctl("-s /nonexistent/sock advise --max-waste 20 t"));
}

/* ---- advise through a daemon ------------------------------------------- */

/* 2 layers x 2 heads x 8 x fp16: 128 bytes a token, 16-token blocks of 2K in 4K frames. */
#define ADVISE_CONF							\
	"pool.t.layers = 2\npool.t.kv_heads = 2\npool.t.head_dim = 8\n"	\
	"pool.t.block_tokens = 16\npool.t.dtype = fp16\n"		\
	"pool.t.device_mem = 2M\npool.t.host_mem = 0\n"			\
	"pool.u.model = llama3.2-1b\npool.u.device_mem = 64M\npool.u.host_mem = 0\n"

FIXTURE(advise) {
	struct daemon d;
	struct kvc *c;
	struct kvc_pool *pool;
};

FIXTURE_SETUP(advise)
{
	ASSERT_EQ(0, daemon_start(&self->d, ADVISE_CONF));
	ASSERT_EQ(0, kvc_connect(self->d.sock, &self->c));
	ASSERT_EQ(0, kvc_pool_open(self->c, "t", &self->pool));
}

FIXTURE_TEARDOWN(advise)
{
	kvc_close(self->c);
	EXPECT_EQ(0, daemon_stop(&self->d));
	daemon_cleanup(&self->d);
}

/* A sequence of @n tokens, told to the daemon. */
static int seq_of(struct kvc *c, struct kvc_pool *p, uint32_t n, uint64_t *seq)
{
	static uint64_t slots[1024];
	struct kvc_step_seq s = { .nr_tokens = n, .slots = slots };
	int err = kvc_seq_create(c, p, seq);

	s.seq = *seq;
	return err ?: n ? kvc_step(c, &s, 1, 0, NULL) : 0;
}

/* The SEQLEN text of pool t until it counts @count sequences (2 s at most). */
static int wait_count(struct kvc *c, long long count)
{
	int i;

	for (i = 0; i < 200; i++) {
		if (kvc_stats(c, KVMEM_STATS_SEQLEN, 1, text, sizeof(text)) > 0 &&
		    stat_value(text, "Sequences:") == count)
			return 0;
		usleep(10000);
	}
	return -1;
}

TEST_F(advise, sequence_lengths_and_advice)
{
	char args[256];
	uint64_t seq;
	struct kvc *other;
	struct kvc_pool *p2;
	int i;

	/* Nothing ended yet. */
	snprintf(args, sizeof(args), "-s %s advise t", self->d.sock);
	ASSERT_EQ(0, kvmemctl(args));
	EXPECT_NE_NULL(strstr(text, "Pool t: no sequence with tokens has ended yet"));
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_SEQLEN, 0, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "Pool: t\n"));
	EXPECT_NE_NULL(strstr(text, "Pool: u\n"));
	EXPECT_EQ(16, stat_value(text, "BlockTokens:"));
	EXPECT_EQ(128, stat_value(text, "TokenBytes:"));
	EXPECT_EQ(0, stat_value(text, "Sequences:"));

	/* Three of 96 tokens and an empty one freed; two of 64 left to their client. */
	for (i = 0; i < 3; i++) {
		ASSERT_EQ(0, seq_of(self->c, self->pool, 96, &seq));
		ASSERT_EQ(0, kvc_seq_free(self->c, seq));
	}
	ASSERT_EQ(0, seq_of(self->c, self->pool, 0, &seq));
	ASSERT_EQ(0, kvc_seq_free(self->c, seq));
	ASSERT_EQ(0, kvc_connect(self->d.sock, &other));
	ASSERT_EQ(0, kvc_pool_open(other, "t", &p2));
	ASSERT_EQ(0, seq_of(other, p2, 64, &seq));
	ASSERT_EQ(0, seq_of(other, p2, 64, &seq));
	kvc_close(other);
	ASSERT_EQ(0, wait_count(self->c, 6));
	EXPECT_EQ(3 * 96 + 2 * 64, stat_value(text, "\nTokens:"));
	EXPECT_EQ(96, stat_value(text, "MaxTokens:"));
	EXPECT_EQ(1, stat_value(text, "Length 0:"));
	EXPECT_EQ(5, stat_value(text, "Length 64-127:"));
	EXPECT_EQ(3, stat_value(text, "Tail 96:"));
	EXPECT_EQ(2, stat_value(text, "Tail 64:"));
	EXPECT_EQ(1, stat_value(text, "Tail 0:"));
	/* The other pool saw none; one pool at a time. */
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_SEQLEN, 2, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "Pool: u\n"));
	EXPECT_NULL(strstr(text, "Pool: t\n"));
	EXPECT_EQ(0, stat_value(text, "Sequences:"));
	EXPECT_EQ(32768, stat_value(text, "TokenBytes:"));

	/*
	 * 128 bytes a token: blocks of 8 and 16 tokens fill a quarter and a
	 * half of a 4K frame; of 32, the 96s and 64s fill theirs exactly; 64
	 * and 128 leave slots empty. So: 32.
	 */
	ASSERT_EQ(0, kvmemctl(args));
	EXPECT_TRUE(line_has("Pool t:", "6 sequences ended, 416 tokens (mean 69.3, longest 96); "
			     "block_tokens 16 now"));
	EXPECT_TRUE(line_has("advice:", "block_tokens = 32, the largest block"));
	EXPECT_TRUE(line_has("advice:", "within 5% of the KV memory: 0.0% here"));
	EXPECT_TRUE(line_has("  To use it:", "pool.t.block_tokens = 32 in kvmemd.conf"));
	EXPECT_TRUE(line_has("  16 (now)", "50.0%"));
	/* All pools: u has nothing to advise from. */
	snprintf(args, sizeof(args), "-s %s advise --max-waste 20", self->d.sock);
	ASSERT_EQ(0, kvmemctl(args));
	EXPECT_NE_NULL(line_of("Pool t: 6 sequences"));
	EXPECT_NE_NULL(line_of("Pool u: no sequence with tokens has ended yet"));
	/* 64 wastes 96 of 512 slots (18.75%): within 20%, and larger than 32. */
	EXPECT_TRUE(line_has("advice:", "block_tokens = 64"));
	snprintf(args, sizeof(args), "-s %s advise nosuch", self->d.sock);
	EXPECT_EQ(1, kvmemctl(args));
	snprintf(args, sizeof(args), "-s %s advise --max-waste 0 t", self->d.sock);
	EXPECT_EQ(2, kvmemctl(args));
}

/*
 * `prefix show' without a pool shows every pool's; a refused sysctl says
 * what to do: tenants are reloaded (SIGHUP), pool keys need a restart.
 */
TEST_F(advise, prefix_show_and_sysctl_hints)
{
	char args[256];

	snprintf(args, sizeof(args), "-s %s prefix show", self->d.sock);
	EXPECT_EQ(0, kvmemctl(args));
	snprintf(args, sizeof(args), "-s %s sysctl tenant.a=5", self->d.sock);
	EXPECT_EQ(1, kvmemctl(args));
	EXPECT_NE_NULL(strstr(text, "reload kvmemd (SIGHUP)"));
	EXPECT_NULL(strstr(text, "restart"));
	snprintf(args, sizeof(args), "-s %s sysctl pool.t.layers=5", self->d.sock);
	EXPECT_EQ(1, kvmemctl(args));
	EXPECT_NE_NULL(strstr(text, "restart kvmemd"));
}

/* kvmemd -s takes what socket.path takes: an absolute path that fits. */
TEST(kvmemd_socket_override_is_checked)
{
	static const char *const bad[] = {
		"relative.sock",
		"/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock",	/* 114 bytes */
	};
	static const char *const why[] = {
		"-s: socket.path: 'relative.sock' is not an absolute path",
		"-s: socket.path: longer than 107 bytes",
	};
	char exe[PATH_MAX], log[] = "/tmp/kvmemd-s-XXXXXX";
	size_t i;
	int fd;

	build_path("kvmemd", exe, sizeof(exe));
	fd = mkstemp(log);
	ASSERT_LE(0, fd);
	close(fd);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *const argv[] = { "kvmemd", "-s", (char *)bad[i], NULL };

		EXPECT_EQ(2, run_to_end(exe, argv, log, text, sizeof(text)));
		EXPECT_NE_NULL(strstr(text, why[i]));
	}
	unlink(log);
}

TEST_HARNESS_MAIN
