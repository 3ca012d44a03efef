// SPDX-License-Identifier: MIT
/*
 * Paged prefill attention on Hopper's warpgroup tensor cores (wgmma,
 * sm_90a), for pools of head_dim 128, 16-bit or quantized: kv_prefill_ws().
 *
 * A CTA takes tiles of queries of one (sequence, kv head), one or a few
 * (cta_qtile()): 128 (query, query head) rows each of the kv head's GQA
 * group, query major, so that every K and V tile serves the whole group.
 * It is warp-specialized: warpgroup 0
 * copies, warpgroups 1 and 2 compute 64 rows each. The context is taken in
 * tiles of 128 tokens; the copying warpgroup moves a tile's K and V rows
 * into one of two stages with cp.async (each row found through the block
 * table once, by one lane, for the lanes that copy it), or, for a
 * quantized pool, loads and widens them to binary16.
 * Tiles and the queries are stored in wgmma's 128-byte swizzled layout: per
 * 64 dims a [rows][128 B] atom with the 16-byte chunks of row r XOR-ed by
 * r % 8.
 *
 * Per tile, each computing warpgroup:
 *   S = Q K^T   8 x wgmma m64n128k16, Q and K from shared memory (K-major);
 *   softmax     on S as accumulators (softmax_tile(), shared with the
 *               mma.sync kernel: the layouts are the same), P to registers;
 *               the masks only in tiles that need them (their own code);
 *   O += P V    8 x wgmma m64n128k16, P from registers, V from shared
 *               memory read N-major (dims contiguous), O in registers.
 * The two take turns to issue S, so that one's softmax runs beside the
 * other's products. Measured on an H100 (Documentation/performance.md):
 * a third stage, a kernel whose warpgroups all copy and compute, and a
 * warpgroup overlapping its own softmax and products were all slower.
 *
 * Built for sm_90a only; elsewhere the kernel is empty (it sets *status to
 * -EOPNOTSUPP). wgmma_ready() tells the launch which one the device runs.
 */
#include <errno.h>
#include <stdint.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <type_traits>

#include "kernels/kvkernels.h"
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/attn.cuh"
#include "kernels/cuda/prefill.cuh"

/* the host pass and sm_90a see the kernel's body; other archs an empty one */
#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define KV_WGMMA 1
#endif

namespace kv_prefill {
namespace {

constexpr int kHd = 128;			/* head_dim */
constexpr int kTk = 128;			/* tokens per K/V tile */
constexpr int kThreads = 384;			/* a copying, two computing warpgroups */
constexpr int kStages = 2;			/* of K/V tiles */
constexpr int kRows = 128;			/* (query, head) rows per CTA */
constexpr uint32_t kAtom = kTk * 128;		/* 64 dims of a tile: [kTk][128 B] */
constexpr uint32_t kStage = 4 * kAtom;		/* K (two atoms), then V */
constexpr uint32_t kQBytes = 2 * kRows * 128;	/* an item's queries */
constexpr int kQSlots = 2;			/* of queries */
static_assert(kHd == 2 * 64 && kTk == 128, "two 64-dim atoms; S is m64n128");

#ifdef KV_WGMMA
/* byte offset of 16-byte chunk @c (of 16) of row @r in a tile of R rows */
template <uint32_t R>
__device__ __forceinline__ uint32_t sw128(uint32_t r, uint32_t c)
{
	return (c >> 3) * R * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4);
}

/*
 * A wgmma shared-memory matrix descriptor: 128-byte swizzle, start
 * address, leading and stride byte offsets (see the PTX ISA, "Matrix
 * Descriptor Format"). Atoms are 1024-byte aligned, so the base offset is 0.
 */
__device__ __forceinline__ uint64_t sm_desc(uint32_t addr, uint32_t lbo, uint32_t sbo)
{
	return (uint64_t)((addr & 0x3ffff) >> 4) | (uint64_t)((lbo & 0x3ffff) >> 4) << 16 |
	       (uint64_t)((sbo & 0x3ffff) >> 4) << 32 | 1ull << 62;
}

#define WG_D64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, "	\
	"%15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, "	\
	"%30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, "	\
	"%45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, "	\
	"%60, %61, %62, %63}"
#define WG_R4(d, i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define WG_ACC(d) WG_R4(d, 0), WG_R4(d, 1), WG_R4(d, 2), WG_R4(d, 3), WG_R4(d, 4),	\
	WG_R4(d, 5), WG_R4(d, 6), WG_R4(d, 7), WG_R4(d, 8), WG_R4(d, 9), WG_R4(d, 10),	\
	WG_R4(d, 11), WG_R4(d, 12), WG_R4(d, 13), WG_R4(d, 14), WG_R4(d, 15)

/*
 * wg_mma<T> - D (64 x 128, fp32, 16 n8 tiles of four per thread) += A B
 * for one k-step of 16, T = __nv_bfloat16 or __half:
 * ss(): A and B in shared memory, both K-major; @acc 0 overwrites D.
 * rs(): A in registers (m16n8k16 A fragments of the warp's 16 rows), B in
 * shared memory N-major.
 */
template <typename T> struct wg_mma;

#define WG_MMA_TRAITS(T, PTX)								\
template <> struct wg_mma<T> {								\
	static __device__ __forceinline__ void ss(float (&d)[16][4], uint64_t da,	\
						  uint64_t db, int acc)			\
	{										\
		asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"		\
			     "wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX "." PTX	\
			     " " WG_D64 ", %64, %65, p, 1, 1, 0, 0;\n}\n"		\
			     : WG_ACC(d) : "l"(da), "l"(db), "r"(acc));			\
	}										\
	static __device__ __forceinline__ void rs(float (&d)[16][4],			\
						  const uint32_t (&a)[4], uint64_t db)	\
	{										\
		asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"		\
			     "wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX "." PTX	\
			     " " WG_D64 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"	\
			     : WG_ACC(d)						\
			     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db),	\
			       "r"(1));							\
	}										\
}

WG_MMA_TRAITS(__nv_bfloat16, "bf16");
WG_MMA_TRAITS(__half, "f16");

#undef WG_MMA_TRAITS

__device__ __forceinline__ void wg_fence(void)
{
	asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void wg_commit(void)
{
	asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void wg_wait_all(void)
{
	asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}

/* the compiler may not move uses of @d across this point */
__device__ __forceinline__ void reg_fence(float (&d)[16][4])
{
#pragma unroll
	for (int i = 0; i < 16; i++)
		asm volatile("" : "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
			     :: "memory");
}

__device__ __forceinline__ void reg_fence(uint32_t (&a)[8][4])
{
#pragma unroll
	for (int i = 0; i < 8; i++)
		asm volatile("" : "+r"(a[i][0]), "+r"(a[i][1]), "+r"(a[i][2]), "+r"(a[i][3])
			     :: "memory");
}

/* ---- mbarriers and named barriers (the warp-specialized kernel) ------- */

__device__ __forceinline__ void mbar_init(uint64_t *bar, uint32_t count)
{
	asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n"
		     :: "r"(kv_smem_addr(bar)), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t *bar)
{
	asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n"
		     :: "r"(kv_smem_addr(bar)) : "memory");
}

/* arrive on @bar once this thread's cp.async copies so far have landed */
__device__ __forceinline__ void mbar_arrive_cp_async(uint64_t *bar)
{
	asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n"
		     :: "r"(kv_smem_addr(bar)) : "memory");
}

/*
 * The computing warpgroups' turns (kv_prefill_ws()): warpgroup @cw (0 or
 * 1) waits for its turn on named barrier 1 + @cw, which takes its own 128
 * threads and the other's 128 arrivals; it passes the turn by arriving on
 * the other's.
 */
__device__ __forceinline__ void turn_wait(int cw)
{
	if (cw)
		asm volatile("bar.sync 2, 256;\n" ::: "memory");
	else
		asm volatile("bar.sync 1, 256;\n" ::: "memory");
}

__device__ __forceinline__ void turn_pass(int cw)
{
	if (cw)
		asm volatile("bar.arrive 1, 256;\n" ::: "memory");
	else
		asm volatile("bar.arrive 2, 256;\n" ::: "memory");
}

/*
 * K and V of tokens [t, t + kTk) into a stage; tokens outside [lo, hi)
 * zero. By the copying warpgroup, this thread @tid of it: 16-byte chunk
 * tid % 16 of rows tid / 16 + 8 k. Each lane looks one row of its warp's
 * 32 up in the block table (row 2 w + L % 2 + 8 (L / 2) for warp w, lane
 * L) and hands it to the lanes that copy it.
 */
__device__ __forceinline__ void load_kv(const params &p, const uint32_t *table, uint64_t koff,
					uint32_t t, uint32_t lo, uint32_t hi, char *sk, int tid)
{
	char *const sv = sk + 2 * kAtom;
	const int lane = tid & 31, h = lane >> 4, c = lane & 15;
	const uint32_t r0 = (tid >> 5) * 2, tok = t + r0 + (lane & 1) + 8 * (lane >> 1);
	const char *const own = tok >= lo && tok < hi ? k_row<kHd>(p, table, koff, tok) : nullptr;

#pragma unroll
	for (int k = 0; k < kTk / 8; k++) {
		const uint32_t r = r0 + h + 8 * k;
		const char *src = reinterpret_cast<const char *>(
			__shfl_sync(0xffffffff, reinterpret_cast<unsigned long long>(own), 2 * k + h));
		const bool ok = src;

		src = ok ? src + c * 16 : p.kv.arena;
		cp_async16(sk + sw128<kTk>(r, c), src, ok);
		cp_async16(sv + sw128<kTk>(r, c), ok ? src + p.kv.voff : src, ok);
	}
}

/* the CTA's query rows [0, nrows) into shared memory, the others zero; as load_kv() */
template <typename T>
__device__ __forceinline__ void load_q(const params &p, const seq &s, uint32_t nrows, char *sq,
				       int tid)
{
	for (int i = tid; i < kRows * 16; i += 128) {
		uint32_t r = i >> 4, c = i & 15;
		bool ok = r < nrows;

		cp_async16(sq + sw128<kRows>(r, c), ok ? q_row<T, kHd>(p, s, r) + c * 8 : p.q, ok);
	}
}

/*
 * struct qrow - a thread's token row of a quantized tile in registers,
 * between qrow_fetch() and qrow_store(): the K and V words (zeros for a
 * token outside [lo, hi)) and their scales as binary16 pairs (INT8/FP8:
 * scale_h2() of the block's; INT4: the row's four group scales).
 */
template <int DT> struct qrow {
	static constexpr int W = DT == KV_DTYPE_INT4 ? 4 : 8;	/* 16-byte words */
	uint4 raw[2][W];
	uint32_t sc[2][4];
};

/*
 * Load the row of token @t + @tid (of 128 threads, a row each) of a
 * quantized pool into @q, its K (KV0 0) and V (KV1 2), or one of them;
 * @sk_off: the head's K scales in a frame. The loads are only issued:
 * qrow_store() is the first to wait on them, so that the caller can widen
 * the tile before this one while they are in flight.
 */
template <int DT, int KV0 = 0, int KV1 = 2>
__device__ __forceinline__ void qrow_fetch(const params &p, const uint32_t *table,
					   uint64_t koff, uint64_t sk_off, uint32_t t,
					   uint32_t lo, uint32_t hi, int tid, qrow<DT> &q)
{
	constexpr int W = qrow<DT>::W;
	static_assert(kTk == 128, "a token row per thread");
	const uint32_t tok = t + tid;

#pragma unroll
	for (int kv = KV0; kv < KV1; kv++) {
#pragma unroll
		for (int j = 0; j < W; j++)
			q.raw[kv][j] = make_uint4(0, 0, 0, 0);
		q.sc[kv][0] = q.sc[kv][1] = q.sc[kv][2] = q.sc[kv][3] = 0;
	}
	if (tok < lo || tok >= hi)
		return;

	uint32_t tib, blk = block_of(p, tok, tib);
	const char *fb = p.kv.arena + table[blk] * p.kv.frame_bytes;

#pragma unroll
	for (int kv = KV0; kv < KV1; kv++) {
		const uint4 *row = reinterpret_cast<const uint4 *>(
			fb + koff + kv * p.kv.voff + (uint64_t)tib * W * 16);
		const char *so = fb + sk_off + kv * p.kv_heads * p.hsb;

#pragma unroll
		for (int j = 0; j < W; j++)
			q.raw[kv][j] = __ldg(row + j);
		if constexpr (DT == KV_DTYPE_INT4) {
			const unsigned short *hs = reinterpret_cast<const unsigned short *>(
				so + (uint64_t)tib * (kHd / 16));
#pragma unroll
			for (int gi = 0; gi < 4; gi++)
				q.sc[kv][gi] = h2_both(hs[gi]);
		} else {
			q.sc[kv][0] = scale_h2(__ldg(reinterpret_cast<const float *>(so)));
		}
	}
}

/*
 * load_kv() of a quantized pool, second half: the row @q (qrow_fetch()),
 * its K and V or (KV0, KV1) one of them, widened times its scales to
 * binary16 and stored in the stage @sk as a 16-bit pool's row would be.
 */
template <int DT, int KV0 = 0, int KV1 = 2>
__device__ __forceinline__ void qrow_store(const qrow<DT> &q, char *sk, int tid)
{
#pragma unroll
	for (int kv = KV0; kv < KV1; kv++) {
#pragma unroll
		for (int c = 0; c < 16; c++) {
			const uint4 &x = q.raw[kv][DT == KV_DTYPE_INT4 ? c >> 2 : c >> 1];
			uint2 w;

			if constexpr (DT == KV_DTYPE_INT4)
				w = make_uint2((c & 3) == 0 ? x.x : (c & 3) == 1 ? x.y :
					       (c & 3) == 2 ? x.z : x.w, 0);
			else
				w = c & 1 ? make_uint2(x.z, x.w) : make_uint2(x.x, x.y);
			*reinterpret_cast<uint4 *>(sk + kv * 2 * kAtom + sw128<kTk>(tid, c)) =
				widen8<DT>(w, q.sc[kv][DT == KV_DTYPE_INT4 ? c >> 2 : 0]);
		}
	}
}

/* two bf16 as a binary16 pair */
__device__ __forceinline__ uint32_t bf2_to_h2(uint32_t x)
{
	float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&x));

	return kv_mma<__half>::pack(f.x, f.y);
}

/*
 * load_q() for a quantized pool: the queries as binary16; by 128 threads,
 * 16 chunks each (column tid % 16 of rows tid / 16 + 8 k), in two
 * batches whose loads are all issued before the first is converted
 */
template <typename T>
__device__ __forceinline__ void load_q_half(const params &p, const seq &s, uint32_t nrows,
					    char *sq, int tid)
{
	constexpr int N = kRows * 16 / 128 / 2;
	const uint32_t c = tid & 15;

#pragma unroll
	for (int b = 0; b < 2; b++) {
		uint4 x[N];

#pragma unroll
		for (int k = 0; k < N; k++) {
			const uint32_t r = (tid >> 4) + 8 * (b * N + k);

			x[k] = r < nrows ? __ldg(reinterpret_cast<const uint4 *>(
						q_row<T, kHd>(p, s, r) + c * 8)) :
					   make_uint4(0, 0, 0, 0);
		}
#pragma unroll
		for (int k = 0; k < N; k++) {
			if constexpr (!std::is_same<T, __half>::value)
				x[k] = make_uint4(bf2_to_h2(x[k].x), bf2_to_h2(x[k].y),
						  bf2_to_h2(x[k].z), bf2_to_h2(x[k].w));
			*reinterpret_cast<uint4 *>(sq + sw128<kRows>((tid >> 4) + 8 * (b * N + k),
								     c)) = x[k];
		}
	}
}

/*
 * The descriptor of @d's matrix moved on by @off bytes (a multiple of 16):
 * its start address field, the low 14 bits, holds the address over 16,
 * and shared memory addresses stay below 2^18, so the sum does not carry
 * out of it. One add per product instead of a new descriptor.
 */
__device__ __forceinline__ uint64_t desc_at(uint64_t d, uint32_t off)
{
	return d + (off >> 4);
}

/* issue S = Q K^T for the warpgroup's 64 rows and a stage's kTk tokens */
template <typename T>
__device__ __forceinline__ void qk(float (&sc)[16][4], uint32_t q_base, uint32_t k_base)
{
	const uint64_t dq = sm_desc(q_base, 16, 1024), dk = sm_desc(k_base, 16, 1024);

	wg_fence();
#pragma unroll
	for (int ks = 0; ks < kHd / 16; ks++)
		wg_mma<T>::ss(sc, desc_at(dq, (ks >> 2) * kRows * 128 + (ks & 3) * 32),
			      desc_at(dk, (ks >> 2) * kAtom + (ks & 3) * 32), ks);
	wg_commit();
}

/* issue O += P V for the warpgroup's 64 rows; V read N-major (dims contiguous) */
template <typename T>
__device__ __forceinline__ void pv(float (&o)[16][4], const uint32_t (&pa)[8][4],
				   uint32_t v_base)
{
	const uint64_t dv = sm_desc(v_base, kAtom, 1024);

	reg_fence(o);
	wg_fence();
#pragma unroll
	for (int kk = 0; kk < kTk / 16; kk++)
		wg_mma<T>::rs(o, pa[kk], desc_at(dv, kk * 16 * 128));
	wg_commit();
}

/*
 * Tile @t's softmax on the scores @sc (softmax_tile(), EDGE its @edge: the
 * masks are compiled only where it is set), then O += P V with V at
 * @v_base, waited for.
 */
template <typename M, bool EDGE>
__device__ __forceinline__ void softmax_pv(const params &p, float (&sc)[16][4],
					   row_state (&rs)[2], float (&o)[16][4], uint32_t t,
					   uint32_t v_base)
{
	uint32_t pa[8][4];
	float corr[2];

	softmax_tile<M, 16, EDGE>(p, sc, rs, pa, corr, t, EDGE);
	rescale<kHd>(o, corr);
	pv<M>(o, pa, v_base);
	wg_wait_all();
	reg_fence(o);
	reg_fence(pa);
}

/*
 * wg_and() - @x of every thread of the copying warpgroup (threadIdx.x <
 * 128, named barrier 3) and-ed together; by all 128 of them
 */
__device__ __forceinline__ bool wg_and(bool x)
{
	uint32_t r;

	asm volatile("{\n.reg .pred p, q;\nsetp.ne.u32 p, %1, 0;\n"
		     "bar.red.and.pred q, 3, 128, p;\nselp.u32 %0, 1, 0, q;\n}\n"
		     : "=r"(r) : "r"((uint32_t)x) : "memory");
	return r;
}

/*
 * cta_qtile() - the query tile of this CTA's @k-th item (k < p.ipc) of
 * each sequence, or -1 for none. With one item per CTA, as seq_begin():
 * the last tiles first. Else a sequence's Q query tiles pair up as
 * (Q - 1 - j, j), a long span and a short one, and CTA x takes pairs
 * x * ipc / 2 on, p.ipc / 2 of them, the long tile of each first: under
 * a causal mask every CTA gets about the same work.
 */
__device__ __forceinline__ int64_t cta_qtile(const params &p, uint32_t k)
{
	const uint64_t q = p.qtiles, j = (uint64_t)blockIdx.x * (p.ipc / 2) + k / 2;

	if (p.ipc == 1)
		return k ? -1 : (int64_t)(q - 1 - blockIdx.x);
	if (2 * j >= q || ((k & 1) && 2 * j + 1 == q))
		return -1;	/* past the last pair; the middle tile's twin */
	return (int64_t)(k & 1 ? j : q - 1 - j);
}

/*
 * struct item - a query tile as the copying warpgroup hands it to the
 * computing ones beside its queries: its sequence @s, the CTA's @nrows
 * rows of it, the position of their first query (cta_span()), the K/V
 * tiles (cta_tiles()); @end: no items follow.
 */
struct item {
	seq s;
	uint32_t nrows, first, t0;
	int ntiles;
	bool end;
};

/*
 * struct ws_bars - the warp-specialized kernel's mbarriers and hand-over:
 * @full, @empty: the K/V stages (cp.async or the widening copies complete
 * @full, the computing warpgroups @empty); @qfull, @qempty: the query
 * slots and @desc, each slot's item (the copying warpgroup's 128 threads
 * and thread 0's @desc complete @qfull, the computing warpgroups @qempty
 * once done with the queries)
 */
struct ws_bars {
	uint64_t full[kStages], empty[kStages];
	uint64_t qfull[kQSlots], qempty[kQSlots];
	item desc[kQSlots];
};

/*
 * Query slot @qit % kQSlots for the item @d by the copying warpgroup
 * (this thread @tid of it): wait for it to be free, hand over @d and, for
 * an item with tiles, its queries.
 */
template <typename T, int DT>
__device__ __forceinline__ void publish(const params &p, ws_bars &w, char *sq, uint32_t qit,
					const item &d, int tid)
{
	const uint32_t slot = qit % kQSlots, use = qit / kQSlots;
	char *const q = sq + slot * kQBytes;

	if (use)
		mbar_wait(&w.qempty[slot], (use - 1) & 1);
	if (!tid) {
		w.desc[slot] = d;
		mbar_arrive(&w.qfull[slot]);
	}
	if constexpr (DT != 0) {
		if (d.ntiles)
			load_q_half<T>(p, d.s, d.nrows, q, tid);
		fence_async_smem();
		mbar_arrive(&w.qfull[slot]);
	} else {
		if (d.ntiles)
			load_q<T>(p, d.s, d.nrows, q, tid);
		mbar_arrive_cp_async(&w.qfull[slot]);
	}
}

/*
 * Whether produce_quant() has a tile's loads in flight while it widens the
 * one before: INT8/FP8. INT4 measured 1-4% faster unpipelined (fewer,
 * smaller loads).
 */
template <int DT> __host__ __device__ constexpr bool qpipe()
{
	return DT != 0 && DT != KV_DTYPE_INT4;
}

/*
 * The copying warpgroup's K/V tiles of the item @d of a quantized pool
 * (its span [@lo, @hi)), widened into the stages from @git on. One row
 * of registers a thread, @q. qpipe(): @q holds the first tile's loads,
 * issued by the caller before the item's queries; the next tile's K loads
 * are in flight while this tile's V is widened, and its V loads while the
 * copying warpgroup waits for the next stage. (Two whole rows, the next
 * loaded before the current is widened, make INT8 and FP8 spill and
 * measured slower.)
 */
template <int DT>
__device__ __forceinline__ void produce_quant(const params &p, ws_bars &w, char *smem,
					      const item &d, uint32_t lo, uint32_t hi,
					      uint32_t &git, int tid, qrow<DT> &q)
{
	const uint64_t koff = p.kv.koff + d.s.h * p.kv.head_bytes;
	const uint64_t sk_off = p.soff + d.s.h * p.hsb;

	for (int it = 0; it < d.ntiles; it++, git++) {
		const uint32_t st = git % kStages, use = git / kStages;
		const uint32_t t = d.t0 + it * kTk;
		const bool more = it + 1 < d.ntiles;
		char *const stage = smem + st * kStage;

		if (use)
			mbar_wait(&w.empty[st], (use - 1) & 1);
		if constexpr (!qpipe<DT>()) {
			qrow_fetch(p, d.s.table, koff, sk_off, t, lo, hi, tid, q);
			qrow_store(q, stage, tid);
		} else {
			/* K, then V: each half's next loads go out once it is stored */
			qrow_store<DT, 0, 1>(q, stage, tid);
			if (more)
				qrow_fetch<DT, 0, 1>(p, d.s.table, koff, sk_off, t + kTk, lo,
						     hi, tid, q);
			qrow_store<DT, 1, 2>(q, stage, tid);
			if (more)
				qrow_fetch<DT, 1, 2>(p, d.s.table, koff, sk_off, t + kTk, lo,
						     hi, tid, q);
		}
		/* widened by this warpgroup: plain stores */
		fence_async_smem();
		mbar_arrive(&w.full[st]);
	}
}

/*
 * The copying warpgroup's part of kv_prefill_ws(): this CTA's items
 * (cta_qtile()) of each sequence in turn, each handed over with its
 * queries (publish()), then its K/V tiles through the stages; an end
 * item last. It runs ahead of the computing warpgroups by as much as the
 * stages and query slots hold, into the next item too.
 */
template <typename T, int DT>
__device__ __forceinline__ void produce(const params &p, ws_bars &w, char *smem, char *sq)
{
	const int tid = threadIdx.x;
	uint32_t git = 0, qit = 0;	/* tiles and items so far */
	item d = {};

	for (uint32_t b = blockIdx.z; b < p.batch; b += gridDim.z) {
		bool ok;

		/* the sequence's checks, once for all of this CTA's items of it */
		seq_init(p, b, blockIdx.y, 0, d.s);
		ok = wg_and(seq_ok(p, d.s, tid, 128));
		for (uint32_t k = 0; k < p.ipc; k++) {
			const int64_t qt = cta_qtile(p, k);
			uint32_t lo, hi;

			if (qt < 0)
				continue;
			seq_init(p, b, blockIdx.y, (uint32_t)qt, d.s);
			if (!seq_enter(p, d.s, ok, !tid && !blockIdx.y && qt + 1 == p.qtiles))
				continue;
			d.nrows = min(p.qpc, d.s.nq - d.s.q0) * p.group;
			d.first = cta_span(p, d.s, d.nrows, lo, hi);
			d.ntiles = cta_tiles(d.s, lo, hi, kTk, d.t0);
			/* qpipe(): the first tile's loads fly while the queries load */
			qrow<DT> q;
			if (qpipe<DT>() && d.ntiles)
				qrow_fetch(p, d.s.table, p.kv.koff + d.s.h * p.kv.head_bytes,
					   p.soff + d.s.h * p.hsb, d.t0, lo, hi, tid, q);
			publish<T, DT>(p, w, sq, qit++, d, tid);

			if constexpr (DT != 0) {
				produce_quant<DT>(p, w, smem, d, lo, hi, git, tid, q);
				continue;
			}

			const uint64_t koff = p.kv.koff + d.s.h * p.kv.head_bytes;
			for (int it = 0; it < d.ntiles; it++, git++) {
				const uint32_t st = git % kStages, use = git / kStages;
				const uint32_t t = d.t0 + it * kTk;

				if (use)
					mbar_wait(&w.empty[st], (use - 1) & 1);
				load_kv(p, d.s.table, koff, t, lo, hi, smem + st * kStage, tid);
				mbar_arrive_cp_async(&w.full[st]);
			}
		}
	}
	d.end = true;
	d.ntiles = 0;
	publish<T, DT>(p, w, sq, qit, d, tid);
	/* no thread leaves with copies in flight */
	cp_async_wait<0>();
}

/*
 * The computing warpgroups' part of kv_prefill_ws(): item after item as
 * handed over, each warpgroup 64 of its rows, tile after tile, then their
 * stores. Their turns to issue S run on across items, so that one starts
 * the next item while the other ends the last.
 */
template <typename T, int DT>
__device__ __forceinline__ void consume(const params &p, ws_bars &w, char *smem, char *sq)
{
	typedef typename std::conditional<DT == 0, T, __half>::type M;	/* wgmma type */
	const int warp = threadIdx.x >> 5, cw = (warp >> 2) - 1, cwarp = warp - 4;
	const int g = (threadIdx.x & 31) >> 2;
	uint32_t git = 0;	/* as the copying warpgroup counts */

	/* warpgroup 1 (cw 0) goes first: warpgroup 2 passes it the turn */
	if (cw == 1)
		turn_pass(cw);
	for (uint32_t qit = 0;; qit++) {
		const uint32_t slot = qit % kQSlots;
		const uint32_t q_base = kv_smem_addr(sq + slot * kQBytes) + cw * 64 * 128;
		row_state rs[2];
		float o[16][4];

		mbar_wait(&w.qfull[slot], (qit / kQSlots) & 1);
		const item d = w.desc[slot];
		if (d.end) {
			/* the turn warpgroup 2 passed after its last S */
			if (cw == 0)
				turn_wait(cw);
			break;
		}
		row_init(p, d.s, d.nrows, cwarp * 16 + g, rs[0]);
		row_init(p, d.s, d.nrows, cwarp * 16 + g + 8, rs[1]);
#pragma unroll
		for (int dt = 0; dt < 16; dt++)
			o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
		for (int it = 0; it < d.ntiles; it++, git++) {
			const uint32_t st = git % kStages, t = d.t0 + it * kTk;
			const uint32_t k_base = kv_smem_addr(smem + st * kStage);
			float sc[16][4];

			mbar_wait(&w.full[st], (git / kStages) & 1);
			fence_async_smem();
			turn_wait(cw);
			qk<M>(sc, q_base, k_base);
			turn_pass(cw);	/* the other's turn, in this item or the next */
			wg_wait_all();
			reg_fence(sc);
			/* most tiles need no mask: their own code */
			if (t + kTk > d.first + 1 || p.window)
				softmax_pv<M, true>(p, sc, rs, o, t, k_base + 2 * kAtom);
			else
				softmax_pv<M, false>(p, sc, rs, o, t, k_base + 2 * kAtom);
			mbar_arrive(&w.empty[st]);
		}
		mbar_arrive(&w.qempty[slot]);
		store_rows<T, kHd>(p, d.s, rs, o);
	}
}

#endif /* KV_WGMMA */

#ifndef KV_WGMMA
/* a kernel compiled without sm_90a's instructions: its caller learns it */
__device__ __forceinline__ void not_built(const params &p)
{
	if (!threadIdx.x && p.status)
		atomicExch(p.status, -EOPNOTSUPP);
}
#endif

/*
 * Warpgroup 0 copies: each item's queries into one of kQSlots slots, K/V
 * tiles into kStages stages (struct ws_bars says who completes which
 * mbarrier). Warpgroups 1 and 2 compute, in 168 registers (384 threads
 * share the SM's 64K), taking turns (turn_wait(), turn_pass()) to issue
 * S = Q K^T. A CTA takes p.ipc query tiles (cta_qtile()) of a sequence
 * and kv head; the copying warpgroup loads the next one's queries and
 * first tiles while the last one is computed. The mbarriers are static
 * shared memory: wgmma_ready() finds them in the kernel's attributes
 * where its body was built (the empty body built for other architectures
 * must keep none).
 */
template <typename T, int DT>
__global__ void __launch_bounds__(kThreads, 1) kv_prefill_ws(const params p)
{
#ifdef KV_WGMMA
	extern __shared__ char smem_raw[];
	__shared__ ws_bars w;
	char *const smem = smem_raw + ((1024 - (kv_smem_addr(smem_raw) & 1023)) & 1023);
	char *const sq = smem + kStages * kStage;

	if (threadIdx.x == 0) {
		for (int i = 0; i < kStages; i++) {
			mbar_init(&w.full[i], 128);
			mbar_init(&w.empty[i], 2 * 128);
		}
		for (int i = 0; i < kQSlots; i++) {
			mbar_init(&w.qfull[i], 128 + 1);
			mbar_init(&w.qempty[i], 2 * 128);
		}
	}
	__syncthreads();
	if (threadIdx.x < 128)
		produce<T, DT>(p, w, smem, sq);
	else
		consume<T, DT>(p, w, smem, sq);
#else
	not_built(p);
#endif
}

/*
 * Query tiles per CTA for @tiles query tiles of a sequence on device @d
 * (launch_grid()): kv_cuda_prefill_ipc where set (an odd one above 1
 * less one). Else as many as make a CTA's work about 64 K/V tiles in a
 * plain prefill of p.max_q queries (16384 / max_q, at most 8), as long as
 * the grid still fills the SMs three times. The copying warpgroup loads
 * the next tile's queries and first K/V tiles while the last is computed,
 * which short spans gain most from; long ones lose to the coarser tail
 * (measured on an H100, Documentation/performance.md). The launch does
 * not read the context lengths: a large batch of chunks on long contexts
 * takes several tiles a CTA too, where one would do.
 */
static uint32_t ws_ipc(const params &p, uint64_t tiles, const struct kv_cuda_dev &d)
{
	const uint64_t pairs = (tiles + 1) / 2 * (p.q_heads / p.group) * p.batch;
	uint32_t ipc = 8;

	if (kv_cuda_prefill_ipc > 0)
		return kv_cuda_prefill_ipc > 1 ? kv_cuda_prefill_ipc & ~1 : 1;
	while (ipc > 1 && ((uint64_t)ipc * p.max_q > 16384 || pairs / (ipc / 2) < 3ull * d.sms))
		ipc /= 2;
	return ipc;
}

template <typename T, int DT = 0>
int launch_ws(const params &p, cudaStream_t st)
{
	static bool attr_set[KV_CUDA_MAX_DEVICES];

	/* + 1024: the stages' alignment */
	return launch_grid(kv_prefill_ws<T, DT>, p, kRows, kThreads,
			   kStages * kStage + kQSlots * kQBytes + 1024, attr_set, ws_ipc, st);
}

} /* namespace */

bool wgmma_ready(const struct kv_cuda_dev &d)
{
	static signed char ready[KV_CUDA_MAX_DEVICES];	/* 0 unknown, 1 yes, -1 no */
	signed char r;

	if (d.major != 9 || d.minor != 0)
		return false;
	r = __atomic_load_n(&ready[d.id], __ATOMIC_RELAXED);
	if (!r) {
		cudaFuncAttributes fa;

		r = cudaFuncGetAttributes(&fa, kv_prefill_ws<__half, 0>) == cudaSuccess &&
		    fa.sharedSizeBytes >= 2 * kStages * sizeof(uint64_t) ? 1 : -1;
		__atomic_store_n(&ready[d.id], r, __ATOMIC_RELAXED);
	}
	return r > 0;
}

template <typename T>
int launch_sm90(const params &p, uint32_t dtype, cudaStream_t st)
{
	switch (dtype) {
	case KV_DTYPE_INT8:
		return launch_ws<T, KV_DTYPE_INT8>(p, st);
	case KV_DTYPE_FP8_E4M3:
		return launch_ws<T, KV_DTYPE_FP8_E4M3>(p, st);
	case KV_DTYPE_INT4:
		return launch_ws<T, KV_DTYPE_INT4>(p, st);
	}
	return launch_ws<T>(p, st);
}

template int launch_sm90<__nv_bfloat16>(const params &, uint32_t, cudaStream_t);
template int launch_sm90<__half>(const params &, uint32_t, cudaStream_t);

} /* namespace kv_prefill */
