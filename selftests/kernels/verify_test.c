// SPDX-License-Identifier: MIT
/*
 * CPU speculative verification against a plain loop: every dtype, vocab
 * sizes 1, 7 and 32000, ragged drafts (0 up to max_draft), batches where
 * everything, nothing or a random prefix is accepted, ties (the first
 * index wins), NaN (the first NaN wins), rows of -inf and of signed zeros;
 * bad drafts (that sequence alone gets accepted 0, next -1, status
 * -EINVAL) and the host-checked arguments (-EINVAL, nothing written).
 *
 * Outputs are poisoned before every call, so an output left unwritten
 * fails. Draft tokens past a sequence's length are out of the vocabulary:
 * reading them as drafts fails too.
 */
#include <errno.h>

#include "kselftest_harness.h"
#include "kv_test.h"

#define POISON	((__s32)0x5a5a5a5a)

enum { ACCEPT_ALL, ACCEPT_NONE, ACCEPT_MIXED };

static const __u32 dtypes[] = { KV_DTYPE_FP32, KV_DTYPE_FP16, KV_DTYPE_BF16 };
static const __u32 vocabs[] = { 1, 7, 32000 };

/* One verification problem and the outputs the plain loop wants. */
struct vcase {
	__u32 batch, max_draft, vocab, dtype;
	__s32 *draft;
	__u32 *lens;
	void *logits;
	__s32 *accepted, *next;
	__s32 *want_acc, *want_next;
};

static void *row_of(const struct vcase *c, __u32 b, __u32 j)
{
	return (char *)c->logits + (((__u64)b * (c->max_draft + 1) + j) * c->vocab) *
	       kv_dtype_size(c->dtype);
}

static void put(const struct vcase *c, __u32 b, __u32 j, __u32 i, float v)
{
	kv_store_f32(row_of(c, b, j), c->dtype, i, v);
}

/* The obvious argmax of row (b, j) (kvt_argmax()). */
static __s32 ref_argmax(const struct vcase *c, __u32 b, __u32 j)
{
	return kvt_argmax(row_of(c, b, j), c->dtype, 0, c->vocab);
}

/* The obvious verification of every sequence into want_acc / want_next. */
static int ref_verify(struct vcase *c)
{
	int bad_any = 0;
	__u32 b, j;

	for (b = 0; b < c->batch; b++) {
		const __s32 *d = c->draft + (__u64)b * c->max_draft;
		__u32 n = c->lens[b];
		int bad = n > c->max_draft;

		for (j = 0; !bad && j < n; j++)
			if (d[j] < 0 || d[j] >= (__s32)c->vocab)
				bad = 1;
		if (bad) {
			c->want_acc[b] = 0;
			c->want_next[b] = -1;
			bad_any = 1;
			continue;
		}
		j = 0;
		while (j < n && d[j] == ref_argmax(c, b, j))
			j++;
		c->want_acc[b] = (__s32)j;
		c->want_next[b] = ref_argmax(c, b, j);
	}
	return bad_any;
}

static void vcase_free(struct vcase *c)
{
	free(c->draft);
	free(c->lens);
	free(c->logits);
	free(c->accepted);
	free(c->next);
	free(c->want_acc);
	free(c->want_next);
}

/*
 * Give row (b, j) a special shape now and then: a tie between two equal
 * maxima, one or two NaNs, all -inf, all equal, or zeros of both signs.
 */
static void shape_row(struct vcase *c, __u32 b, __u32 j)
{
	__u32 v = c->vocab, i, k1 = kvt_below(v), k2 = kvt_below(v);

	switch (kvt_below(12)) {
	case 0:
	case 1:
	case 2:		/* tie: 8 is exact in every dtype and above the fill */
		put(c, b, j, k1, 8.0f);
		put(c, b, j, k2, 8.0f);
		break;
	case 3:
		put(c, b, j, k1, NAN);
		break;
	case 4:		/* two NaNs, and a larger number after them */
		put(c, b, j, k1, NAN);
		put(c, b, j, k2, NAN);
		put(c, b, j, kvt_below(v), INFINITY);
		break;
	case 5:
		for (i = 0; i < v; i++)
			put(c, b, j, i, -INFINITY);
		break;
	case 6:
		for (i = 0; i < v; i++)
			put(c, b, j, i, -3.0f);
		break;
	case 7:
		for (i = 0; i < v; i++)
			put(c, b, j, i, kvt_below(2) ? 0.0f : -0.0f);
		put(c, b, j, k1, -1.0f);
		break;
	default:
		break;
	}
}

/*
 * Build a case: random logits (some rows shaped), ragged lengths (0 and
 * max_draft among them), drafts accepted as @mode says. Draft slots past
 * a sequence's length hold tokens outside the vocabulary.
 */
static int vcase_init(struct vcase *c, __u32 dtype, __u32 vocab, __u32 batch,
		      __u32 max_draft, int mode)
{
	__u64 rows = (__u64)batch * (max_draft + 1), n = rows * vocab;
	__u32 b, j;

	memset(c, 0, sizeof(*c));
	c->batch = batch;
	c->max_draft = max_draft;
	c->vocab = vocab;
	c->dtype = dtype;
	c->draft = malloc(sizeof(__s32) * (batch * max_draft + 1));
	c->lens = malloc(sizeof(__u32) * batch);
	c->logits = malloc(n * kv_dtype_size(dtype));
	c->accepted = malloc(sizeof(__s32) * batch);
	c->next = malloc(sizeof(__s32) * batch);
	c->want_acc = malloc(sizeof(__s32) * batch);
	c->want_next = malloc(sizeof(__s32) * batch);
	if (!c->draft || !c->lens || !c->logits || !c->accepted || !c->next ||
	    !c->want_acc || !c->want_next) {
		vcase_free(c);
		return -1;
	}
	kvt_fill(c->logits, dtype, n, 4.0);
	for (b = 0; b < batch; b++) {
		__s32 *d = c->draft + (__u64)b * max_draft;
		__u32 len = b == 0 ? 0 : b == 1 ? max_draft : kvt_below(max_draft + 1);
		__u32 keep;

		c->lens[b] = len;
		keep = mode == ACCEPT_ALL ? len : mode == ACCEPT_NONE ? 0 :
		       kvt_below(len + 1);
		for (j = 0; j <= max_draft; j++)
			shape_row(c, b, j);
		for (j = 0; j < max_draft; j++)
			d[j] = j % 2 ? -1 - (__s32)kvt_below(9) : (__s32)(vocab + kvt_below(9));
		for (j = 0; j < len; j++) {
			__s32 top = ref_argmax(c, b, j);

			/* with one token there is nothing to reject with */
			if (j < keep || vocab == 1)
				d[j] = top;
			else
				d[j] = (__s32)((top + 1 + kvt_below(vocab - 1)) % vocab);
		}
	}
	return 0;
}

static struct kv_verify_args vcase_args(struct vcase *c, __s32 *status)
{
	struct kv_verify_args a = {
		.batch = c->batch, .max_draft = c->max_draft, .vocab = c->vocab,
		/* no drafts at all: NULL, as an empty tensor's address is */
		.dtype = c->dtype, .draft = c->max_draft ? c->draft : NULL, .draft_lens = c->lens,
		.logits = c->logits, .accepted = c->accepted, .next = c->next,
		.status = status,
	};
	return a;
}

static void poison(struct vcase *c)
{
	__u32 b;

	for (b = 0; b < c->batch; b++)
		c->accepted[b] = c->next[b] = POISON;
}

static int poisoned(const struct vcase *c)
{
	__u32 b;

	for (b = 0; b < c->batch; b++)
		if (c->accepted[b] != POISON || c->next[b] != POISON)
			return 0;
	return 1;
}

/* Run @c through kv_verify_cpu() and compare with the plain loop. */
static void check_case(struct __test_metadata *_metadata, struct vcase *c, int mode)
{
	struct kv_verify_args a = vcase_args(c, NULL);
	__s32 status = 1;
	__u32 b;
	int bad = ref_verify(c);

	poison(c);
	a.status = &status;
	EXPECT_EQ(bad ? -EINVAL : 0, kv_verify_cpu(&a));
	EXPECT_EQ(bad ? -EINVAL : 1, status);
	for (b = 0; b < c->batch; b++) {
		if (c->accepted[b] != c->want_acc[b] || c->next[b] != c->want_next[b])
			TH_LOG("dtype %u vocab %u max_draft %u mode %d: seq %u of %u (len %u): accepted %d next %d, want %d %d",
			       c->dtype, c->vocab, c->max_draft, mode, b, c->batch,
			       c->lens[b], c->accepted[b], c->next[b], c->want_acc[b],
			       c->want_next[b]);
		EXPECT_EQ(c->want_acc[b], c->accepted[b]);
		EXPECT_EQ(c->want_next[b], c->next[b]);
		if (bad)
			continue;
		/* the case was built to be accepted this far */
		if (mode == ACCEPT_ALL || c->vocab == 1)
			EXPECT_EQ((__s32)c->lens[b], c->accepted[b]);
		else if (mode == ACCEPT_NONE)
			EXPECT_EQ(0, c->accepted[b]);
		EXPECT_LE(c->accepted[b], (__s32)c->lens[b]);
		EXPECT_TRUE(c->next[b] >= 0 && c->next[b] < (__s32)c->vocab);
	}
	/* without a status pointer: the same outputs */
	poison(c);
	a.status = NULL;
	EXPECT_EQ(bad ? -EINVAL : 0, kv_verify_cpu(&a));
	for (b = 0; b < c->batch; b++) {
		EXPECT_EQ(c->want_acc[b], c->accepted[b]);
		EXPECT_EQ(c->want_next[b], c->next[b]);
	}
}

TEST(matches_loop)
{
	unsigned int di, vi, mode, rep;

	kvt_seed(__func__);
	for (di = 0; di < 3; di++) {
		for (vi = 0; vi < 3; vi++) {
			for (mode = ACCEPT_ALL; mode <= ACCEPT_MIXED; mode++) {
				for (rep = 0; rep < 3; rep++) {
					__u32 md = rep == 0 ? 0 : 1 + kvt_below(8);
					__u32 batch = 2 + kvt_below(vocabs[vi] > 1000 ? 4 : 12);
					struct vcase c;

					ASSERT_EQ(0, vcase_init(&c, dtypes[di], vocabs[vi],
								batch, md, mode));
					check_case(_metadata, &c, mode);
					vcase_free(&c);
				}
			}
		}
	}
}

/* Vocab sizes around the CPU's chunk and lane widths, and long drafts. */
TEST(odd_shapes)
{
	static const __u32 v[] = { 2, 15, 16, 17, 1023, 1024, 1025, 2049, 50257 };
	unsigned int di, vi;

	kvt_seed(__func__);
	for (di = 0; di < 3; di++) {
		for (vi = 0; vi < sizeof(v) / sizeof(v[0]); vi++) {
			struct vcase c;

			ASSERT_EQ(0, vcase_init(&c, dtypes[di], v[vi], 3, 1 + kvt_below(16),
						kvt_below(3)));
			check_case(_metadata, &c, ACCEPT_MIXED);
			vcase_free(&c);
		}
	}
}

/* A batch without drafts (max_draft 0, draft NULL): the argmax of row 0. */
TEST(no_drafts)
{
	unsigned int di, vi;

	kvt_seed(__func__);
	for (di = 0; di < 3; di++) {
		for (vi = 0; vi < sizeof(vocabs) / sizeof(vocabs[0]); vi++) {
			struct vcase c;

			ASSERT_EQ(0, vcase_init(&c, dtypes[di], vocabs[vi], 5, 0, ACCEPT_MIXED));
			check_case(_metadata, &c, ACCEPT_MIXED);
			vcase_free(&c);
		}
	}
}

/*
 * Bad drafts: a length past max_draft, a negative token, a token equal to
 * vocab (after a rejection: every draft token is checked). That sequence
 * gets accepted 0 and next -1; the others are verified as usual.
 */
TEST(bad_data)
{
	unsigned int di, kind;

	kvt_seed(__func__);
	for (di = 0; di < 3; di++) {
		for (kind = 0; kind < 3; kind++) {
			struct vcase c;
			struct kv_verify_args a;
			__u32 b, victim;
			__s32 status = 0, *d;

			ASSERT_EQ(0, vcase_init(&c, dtypes[di], 7 + kvt_below(100), 6, 5,
						ACCEPT_MIXED));
			victim = 2 + kvt_below(3);
			d = c.draft + victim * 5;
			/* a full draft of valid tokens, the first one rejected */
			c.lens[victim] = 5;
			for (b = 0; b < 5; b++)
				d[b] = (__s32)kvt_below(c.vocab);
			d[0] = (ref_argmax(&c, victim, 0) + 1) % (__s32)c.vocab;
			if (kind == 0) {
				/* one too long; the slot past it (the next draft's first) valid */
				c.lens[victim] = 6;
				c.lens[victim + 1] = 5;
				for (b = 0; b < 5; b++)
					d[5 + b] = (__s32)kvt_below(c.vocab);
			} else {
				/* the last token bad, past the rejection */
				d[4] = kind == 1 ? -1 : (__s32)c.vocab;
			}
			ASSERT_EQ(1, ref_verify(&c));
			poison(&c);
			a = vcase_args(&c, &status);
			EXPECT_EQ(-EINVAL, kv_verify_cpu(&a));
			EXPECT_EQ(-EINVAL, status);
			for (b = 0; b < c.batch; b++) {
				EXPECT_EQ(c.want_acc[b], c.accepted[b]);
				EXPECT_EQ(c.want_next[b], c.next[b]);
			}
			EXPECT_EQ(0, c.accepted[victim]);
			EXPECT_EQ(-1, c.next[victim]);
			vcase_free(&c);
		}
	}
}

/* Arguments checked on the host: -EINVAL and nothing written, status included. */
TEST(bad_args)
{
	struct vcase c;
	struct kv_verify_args a, good;
	__s32 status = POISON;
	unsigned int k;

	kvt_seed(__func__);
	ASSERT_EQ(0, vcase_init(&c, KV_DTYPE_BF16, 7, 3, 2, ACCEPT_MIXED));
	good = vcase_args(&c, &status);
	for (k = 0; k < 12; k++) {
		a = good;
		switch (k) {
		case 0:
			a.draft = NULL;
			break;
		case 1:
			a.draft_lens = NULL;
			break;
		case 2:
			a.logits = NULL;
			break;
		case 3:
			a.accepted = NULL;
			break;
		case 4:
			a.next = NULL;
			break;
		case 5:
			a.vocab = 0;
			break;
		case 6:
			a.dtype = 0;
			break;
		case 7:
			a.dtype = 4;
			break;
		case 8:
			a.dtype = 0xffffffffu;
			break;
		case 9:
			a.max_draft = 0xffffffffu;
			break;
		case 10:	/* token ids are __s32 */
			a.vocab = 0x80000000u;
			break;
		default:	/* logits past 64-bit addresses */
			a.batch = 0xffffffffu;
			a.max_draft = 0xfffffffeu;
			break;
		}
		poison(&c);
		if (kv_verify_cpu(&a) != -EINVAL || !poisoned(&c) || status != POISON)
			TH_LOG("bad argument case %u", k);
		EXPECT_EQ(-EINVAL, kv_verify_cpu(&a));
		EXPECT_TRUE(poisoned(&c));
		EXPECT_EQ(POISON, status);
	}
	/* an empty batch is nothing to do, whatever the pointers */
	a = (struct kv_verify_args){ .vocab = 1, .dtype = KV_DTYPE_FP16,
				     .status = &status };
	EXPECT_EQ(0, kv_verify_cpu(&a));
	a = good;
	a.batch = 0;
	poison(&c);
	EXPECT_EQ(0, kv_verify_cpu(&a));
	EXPECT_TRUE(poisoned(&c));
	EXPECT_EQ(POISON, status);
	/* the arguments were fine all along */
	EXPECT_EQ(0, kv_verify_cpu(&good));
	EXPECT_FALSE(poisoned(&c));
	vcase_free(&c);
}

TEST_HARNESS_MAIN
