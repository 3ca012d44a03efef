# SPDX-License-Identifier: MIT
"""kvmem.kernels: the C kernels through ctypes.

RawKernelTest needs neither torch nor numpy: it calls libkvkernels.so with
the argument structs on ctypes buffers and on a real pool's arena, against
a reference in plain Python. TorchKernelTest runs the tensor wrappers on
CPU tensors against a torch reference (skipped without torch), and
TorchQuantTest on quantized pools, fp16 or bf16 activations passed as
io_dtype, against the arena dequantized here; the CUDA ones run where
torch sees a GPU and libkvkernels_cuda.so was built.
"""

import ctypes
import errno
import math
import random
import struct
import unittest

import kvmem
from kvmem import _lib, kernels
from kvmemd_fixture import DaemonTestCase

try:
    import torch
except ImportError:
    torch = None

F32 = kvmem.KV_DTYPE_FP32


def ref_attention(q_heads, kv_heads, keys, values, q, scale):
    """Plain-Python attention for one sequence: keys/values [t][kv_head][d],
    q [q_head][d] -> [q_head][d]."""
    group = q_heads // kv_heads
    out = []
    for h in range(q_heads):
        kh = h // group
        if not keys:
            out.append([0.0] * len(q[h]))
            continue
        s = [sum(a * b for a, b in zip(k[kh], q[h])) * scale for k in keys]
        m = max(s)
        p = [math.exp(x - m) for x in s]
        z = sum(p)
        out.append([sum(p[t] * values[t][kh][i] for t in range(len(keys))) / z
                    for i in range(len(q[h]))])
    return out


class AlignedArena:
    """A page-aligned, zeroed ctypes buffer of @frames frames."""

    def __init__(self, geometry, frames):
        self.g = geometry
        self.frames = frames
        n = frames * geometry.frame_bytes
        self.buf = ctypes.create_string_buffer(n + 4096)
        self.base = (ctypes.addressof(self.buf) + 4095) & ~4095
        self.arena = kernels.Arena(self.base, frames, geometry)

    def read_vec(self, slot, layer, kv, head):
        off = self.g.token_offset(slot, layer, kv, head)
        return list(struct.unpack("%df" % self.g.head_dim,
                                  ctypes.string_at(self.base + off, 4 * self.g.head_dim)))


def floats(values):
    return (ctypes.c_float * len(values))(*values)


class RawKernels:
    """Calls with the argument structs on raw addresses; no torch."""

    g = kvmem.Geometry(2, 2, 16, 4, F32)

    def setUp(self):
        self.rng = random.Random(7)

    def rand(self, *shape):
        if len(shape) == 1:
            return [self.rng.uniform(-1, 1) for _ in range(shape[0])]
        return [self.rand(*shape[1:]) for _ in range(shape[0])]

    def append(self, arena, layer, k, v, slots):
        flat = lambda x: [e for t in x for h in t for e in h]   # noqa: E731
        kb, vb = floats(flat(k)), floats(flat(v))
        sb = (ctypes.c_int64 * len(slots))(*slots)
        a = kernels.AppendArgs()
        a.arena = arena.ref()
        a.layer = layer
        a.tokens = len(slots)
        a.k = ctypes.addressof(kb)
        a.v = ctypes.addressof(vb)
        a.slots = ctypes.addressof(sb)
        return kernels.call("append", a)

    def decode(self, arena, layer, q, tables, lens, scale, window=0):
        batch, qh, hd = len(q), len(q[0]), len(q[0][0])
        stride = max(len(t) for t in tables)
        qb = floats([e for s in q for h in s for e in h])
        ob = (ctypes.c_float * (batch * qh * hd))()
        tb = (ctypes.c_uint32 * (batch * stride))(*[f for t in tables
                                                    for f in t + [0] * (stride - len(t))])
        lb = (ctypes.c_uint32 * batch)(*lens)
        a = kernels.DecodeArgs()
        a.arena = arena.ref()
        a.layer = layer
        a.batch = batch
        a.q_heads = qh
        a.window = window
        a.scale = scale
        a.table_stride = stride
        a.q = ctypes.addressof(qb)
        a.out = ctypes.addressof(ob)
        a.block_table = ctypes.addressof(tb)
        a.ctx_lens = ctypes.addressof(lb)
        kernels.call("decode", a)
        return [[list(ob[(b * qh + h) * hd:(b * qh + h + 1) * hd]) for h in range(qh)]
                for b in range(batch)]

    def check_decode(self, got, want):
        for b, (gs, ws) in enumerate(zip(got, want)):
            for h, (gh, wh) in enumerate(zip(gs, ws)):
                for i, (x, y) in enumerate(zip(gh, wh)):
                    self.assertAlmostEqual(x, y, delta=1e-4, msg="seq %d head %d [%d]" % (b, h, i))


class RawKernelTest(RawKernels, unittest.TestCase):
    """No torch: libkvkernels.so on ctypes buffers."""

    def test_append_decode(self):
        g = self.g
        ar = AlignedArena(g, 8)
        T = 6
        k, v = self.rand(T, 2, 16), self.rand(T, 2, 16)
        frames = [5, 2]
        slots = [frames[t // 4] * 4 + t % 4 for t in range(T)]
        self.assertEqual(self.append(ar.arena, 1, k, v, slots), 0)
        for t in range(T):
            for h in range(2):
                for got, want in ((ar.read_vec(slots[t], 1, kvmem.KV_K, h), k[t][h]),
                                  (ar.read_vec(slots[t], 1, kvmem.KV_V, h), v[t][h])):
                    for x, y in zip(got, want):
                        self.assertAlmostEqual(x, y, places=6)
        self.assertEqual(ar.read_vec(slots[0], 0, kvmem.KV_K, 0), [0.0] * 16)   # layer 0
        q = self.rand(2, 4, 16)                         # GQA: 4 query heads on 2 KV heads
        scale = 1 / math.sqrt(16)
        got = self.decode(ar.arena, 1, q, [frames, frames], [6, 3], scale)
        want = [ref_attention(4, 2, k[:6], v[:6], q[0], scale),
                ref_attention(4, 2, k[:3], v[:3], q[1], scale)]
        self.check_decode(got, want)
        got = self.decode(ar.arena, 1, q, [frames, frames], [6, 0], scale, window=2)
        want = [ref_attention(4, 2, k[4:6], v[4:6], q[0], scale),
                [[0.0] * 16 for _ in range(4)]]
        self.check_decode(got, want)

    def test_errors(self):
        ar = AlignedArena(self.g, 4)
        k = self.rand(1, 2, 16)
        with self.assertRaises(kvmem.KvmemError) as cm:     # a slot past the arena
            self.append(ar.arena, 0, k, k, [4 * 4])
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        with self.assertRaises(kvmem.KvmemError) as cm:     # a layer past the geometry
            self.append(ar.arena, 2, k, k, [0])
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        q = self.rand(1, 4, 16)
        with self.assertRaises(kvmem.KvmemError) as cm:     # a frame past the arena
            self.decode(ar.arena, 0, q, [[9]], [1], 0.25)
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        with self.assertRaises(kvmem.KvmemError) as cm:     # 3 query heads on 2 KV heads
            self.decode(ar.arena, 0, [q[0][:3]], [[0]], [1], 0.25)
        self.assertEqual(cm.exception.errno, errno.EINVAL)


class PoolKernelTest(RawKernels, DaemonTestCase):
    """The C kernels on a pool's arena, with slots and tables from kvmemd."""

    def test_on_pool(self):
        with kvmem.Client(self.daemon.sock) as c:
            pool = c.pool("default")
            self.assertEqual(pool.geometry, self.g)
            arena = kernels.Arena.from_pool(pool)
            self.assertEqual(arena.base, pool.device_ptr)
            self.assertEqual(arena.frames, 64)
            a, b = c.seq_create(pool), c.seq_create(pool)
            sa, sb = c.step([(a, 7), (b, 2)])
            ka, va = self.rand(7, 2, 16), self.rand(7, 2, 16)
            kb, vb = self.rand(2, 2, 16), self.rand(2, 2, 16)
            self.append(arena, 0, ka + kb, va + vb, sa + sb)
            # what the kernel wrote is what the client reads from the frames
            frame, off = pool.slot_location(sa[5], 0, kvmem.KV_V, 1)
            got = struct.unpack("16f", pool.frame_read(frame, 64, off))
            for x, y in zip(got, va[5][1]):
                self.assertAlmostEqual(x, y, places=6)
            q = self.rand(2, 2, 16)
            got = self.decode(arena, 0, q, [c.block_table(a), c.block_table(b)], [7, 2], 0.3)
            want = [ref_attention(2, 2, ka, va, q[0], 0.3), ref_attention(2, 2, kb, vb, q[1], 0.3)]
            self.check_decode(got, want)
            c.seq_free(a)
            c.seq_free(b)


# ---- torch ------------------------------------------------------------------
def torch_ref_decode(kv, layer, q, tables, lens, scale, window=0):
    """kv: kernels.kv_view(); float32 reference of paged decode."""
    batch, qh, hd = q.shape
    kvh = kv.shape[3]
    bt = kv.shape[4]
    out = torch.zeros(batch, qh, hd, dtype=torch.float32)
    for b in range(batch):
        n = int(lens[b])
        lo = max(0, n - window) if window else 0
        if n == lo:
            continue
        ks = torch.stack([kv[tables[b][t // bt], layer, 0, :, t % bt] for t in range(lo, n)])
        vs = torch.stack([kv[tables[b][t // bt], layer, 1, :, t % bt] for t in range(lo, n)])
        ks, vs = ks.float(), vs.float()
        for h in range(qh):
            j = h // (qh // kvh)
            p = torch.softmax((ks[:, j] @ q[b, h].float()) * scale, 0)
            out[b, h] = p @ vs[:, j]
    return out


TOL = {kvmem.KV_DTYPE_FP32: 1e-4, kvmem.KV_DTYPE_FP16: 5e-3, kvmem.KV_DTYPE_BF16: 3e-2}


@unittest.skipIf(torch is None, "torch is not installed")
class TorchKernelTest(unittest.TestCase):

    device = "cpu"

    def dtype(self, d):
        return {kvmem.KV_DTYPE_FP16: torch.float16, kvmem.KV_DTYPE_BF16: torch.bfloat16,
                kvmem.KV_DTYPE_FP32: torch.float32}[d]

    def run_case(self, g, q_heads, lens, window=0, frames=48):
        torch.manual_seed(1)
        arena = kernels.Arena.empty(g, frames, self.device)
        dt = self.dtype(g.dtype)
        perm = torch.randperm(frames).tolist()
        tables, allslots, nk = [], [], []
        for n in lens:
            nb = g.blocks_for(n)
            t = [perm.pop() for _ in range(nb)]
            tables.append(t)
            allslots += [t[i // g.block_tokens] * g.block_tokens + i % g.block_tokens
                         for i in range(n)]
        T = len(allslots)
        for layer in range(g.layers):
            k = torch.randn(T, g.kv_heads, g.head_dim).to(dt).to(self.device)
            v = torch.randn(T, g.kv_heads, g.head_dim).to(dt).to(self.device)
            kernels.append(arena, layer, k, v, allslots)
            nk.append((k, v))
        kv = kernels.kv_view(arena).cpu() if self.device == "cpu" else \
            kernels.kv_view(kernels.Arena.from_tensor(arena.tensor().cpu(), g))
        # the view shows what append wrote
        k, v = nk[-1]
        s = allslots[-1]
        self.assertTrue(torch.equal(kv[s // g.block_tokens, g.layers - 1, 1, :,
                                       s % g.block_tokens], v[-1].cpu()))
        stride = max(len(t) for t in tables)
        padded = [t + [0] * (stride - len(t)) for t in tables]
        q = torch.randn(len(lens), q_heads, g.head_dim).to(dt).to(self.device)
        layer = g.layers - 1
        out = kernels.decode(arena, layer, q, padded, lens, window=window)
        self.assertEqual(out.dtype, dt)
        want = torch_ref_decode(kv, layer, q.cpu(), tables, lens,
                                1 / math.sqrt(g.head_dim), window)
        err = (out.cpu().float() - want).abs().max().item()
        self.assertLess(err, TOL[g.dtype], "max error %g" % err)
        return arena, tables

    def test_decode_fp32(self):
        self.run_case(kvmem.Geometry(2, 2, 16, 4, kvmem.KV_DTYPE_FP32), 4, [13, 1, 0, 8])

    def test_decode_fp16(self):
        self.run_case(kvmem.Geometry(2, 2, 64, 16, kvmem.KV_DTYPE_FP16), 8, [40, 17, 3])

    def test_decode_bf16_window(self):
        self.run_case(kvmem.Geometry(1, 4, 64, 16, kvmem.KV_DTYPE_BF16), 4, [50, 20], window=24)

    def prefill_case(self, g, q_heads, cached, new, window=0, frames=64):
        """Sequences of cached[b] + new[b] tokens, all appended; the new
        ones attend through kernels.prefill(), each against a decode of the
        context up to its position (torch_ref_decode)."""
        torch.manual_seed(5)
        arena = kernels.Arena.empty(g, frames, self.device)
        dt = self.dtype(g.dtype)
        perm = torch.randperm(frames).tolist()
        lens = [c + n for c, n in zip(cached, new)]
        tables, allslots = [], []
        for n in lens:
            t = [perm.pop() for _ in range(g.blocks_for(n))]
            tables.append(t)
            allslots += [t[i // g.block_tokens] * g.block_tokens + i % g.block_tokens
                         for i in range(n)]
        k = torch.randn(len(allslots), g.kv_heads, g.head_dim).to(dt).to(self.device)
        v = torch.randn(len(allslots), g.kv_heads, g.head_dim).to(dt).to(self.device)
        kernels.append(arena, 0, k, v, allslots)
        kv = kernels.kv_view(kernels.Arena.from_tensor(arena.tensor().cpu(), g))
        q = torch.randn(sum(new), q_heads, g.head_dim).to(dt).to(self.device)
        q_start = [0]
        for n in new:
            q_start.append(q_start[-1] + n)
        stride = max(len(t) for t in tables)
        padded = [t + [0] * (stride - len(t)) for t in tables]
        out = kernels.prefill(arena, 0, q, q_start, padded, lens, window=window,
                              max_q_len=max(new))
        self.assertEqual(out.shape, q.shape)
        scale = 1 / math.sqrt(g.head_dim)
        for b, n in enumerate(new):
            for i in range(n):
                row = q_start[b] + i
                want = torch_ref_decode(kv, 0, q[row:row + 1].cpu(), [tables[b]],
                                        [lens[b] - n + i + 1], scale, window)
                err = (out[row].cpu().float() - want[0]).abs().max().item()
                self.assertLess(err, TOL[g.dtype], "seq %d row %d: error %g" % (b, i, err))

    def test_prefill_fp32(self):
        self.prefill_case(kvmem.Geometry(1, 2, 16, 4, kvmem.KV_DTYPE_FP32), 4, [0, 5, 16],
                          [7, 3, 20])

    def test_prefill_fp16_window(self):
        self.prefill_case(kvmem.Geometry(1, 2, 64, 16, kvmem.KV_DTYPE_FP16), 8, [0, 1, 70],
                          [33, 16, 70], window=40)

    def test_prefill_bf16(self):
        self.prefill_case(kvmem.Geometry(1, 1, 128, 16, kvmem.KV_DTYPE_BF16), 7, [15, 0],
                          [80, 1])

    def test_verify(self):
        torch.manual_seed(9)
        batch, width, vocab = 5, 4, 50
        logits = torch.randn(batch, width + 1, vocab, device=self.device)
        logits = logits.to(torch.bfloat16).float()      # exact in every dtype below
        best = logits.argmax(-1).cpu()
        lens = [4, 0, 3, 4, 2]
        draft = best[:, :width].clone()
        draft[2, 1] = (draft[2, 1] + 1) % vocab      # rejected at 1
        draft[3, 3] = (draft[3, 3] + 1) % vocab      # rejected at 3
        acc, nxt = kernels.verify(draft, lens, logits)
        want_acc = [4, 0, 1, 3, 2]
        self.assertEqual(acc.cpu().tolist(), want_acc)
        self.assertEqual(nxt.cpu().tolist(), [int(best[b, a]) for b, a in enumerate(want_acc)])
        for dt in (torch.float16, torch.bfloat16):
            acc2, nxt2 = kernels.verify(draft, lens, logits.to(dt))
            lo = logits.to(dt).float().argmax(-1).cpu()
            for b, a in enumerate(acc2.cpu().tolist()):
                self.assertTrue(all(int(draft[b, j]) == int(lo[b, j]) for j in range(a)))
                self.assertEqual(int(nxt2[b]), int(lo[b, a]))
        with self.assertRaises(ValueError):
            kernels.verify(draft[:, :2], lens, logits)
        acc, nxt = kernels.verify(draft[:0], [], logits[:0])
        self.assertEqual((acc.numel(), nxt.numel()), (0, 0))
        with self.assertRaises(ValueError):     # no vocab, even with no sequence
            kernels.verify(draft[:0], [], logits[:0, :, :0])
        # no drafts at all (an empty tensor's address is 0): row 0's argmax
        acc, nxt = kernels.verify(draft[:, :0], [0] * batch, logits[:, :1])
        self.assertEqual(acc.cpu().tolist(), [0] * batch)
        self.assertEqual(nxt.cpu().tolist(), best[:, 0].tolist())

    def test_blocks(self):
        g = kvmem.Geometry(2, 2, 16, 4, kvmem.KV_DTYPE_FP32)
        arena = kernels.Arena.empty(g, 16, self.device)
        t = arena.tensor()
        t.copy_(torch.randint(0, 255, t.shape, dtype=torch.uint8))
        blocks = lambda: t.view(16, g.frame_bytes)[:, :g.block_bytes].cpu()   # noqa: E731
        before = blocks().clone()
        kernels.copy_blocks(arena, [1, 3], [7, 8])
        after = blocks()
        self.assertTrue(torch.equal(after[7], before[1]))
        self.assertTrue(torch.equal(after[8], before[3]))
        self.assertTrue(torch.equal(after[9], before[9]))
        buf = kernels.gather(arena, [2, 5])
        self.assertEqual(buf.numel(), 2 * g.block_bytes)
        self.assertTrue(torch.equal(buf.cpu().view(2, -1)[1], before[5]))
        kernels.scatter(arena, [10, 11], buf)
        after = blocks()
        self.assertTrue(torch.equal(after[10], before[2]))
        self.assertTrue(torch.equal(after[11], before[5]))
        # kv_view addresses the same bytes as layout.token_offset()
        kv = kernels.kv_view(arena)
        off = g.token_offset(3 * 4 + 2, 1, kvmem.KV_V, 1)
        want = t[off:off + 64].cpu().view(torch.float32)
        self.assertTrue(torch.equal(kv[3, 1, 1, 1, 2].cpu().view(torch.uint8),
                                    want.view(torch.uint8)))

    def test_errors(self):
        g = kvmem.Geometry(2, 2, 16, 4, kvmem.KV_DTYPE_FP16)
        arena = kernels.Arena.empty(g, 4, self.device)
        q = torch.zeros(1, 2, 16, dtype=torch.float32, device=self.device)
        with self.assertRaises(TypeError):                  # not the pool's dtype
            kernels.decode(arena, 0, q, [[0]], [1])
        with self.assertRaises(ValueError):                 # head_dim
            kernels.decode(arena, 0, torch.zeros(1, 2, 8, dtype=torch.float16,
                                                 device=self.device), [[0]], [1])
        if self.device == "cpu":
            with self.assertRaises(kvmem.KvmemError) as cm:
                kernels.decode(arena, 0, q.half(), [[9]], [1])
            self.assertEqual(cm.exception.errno, errno.EINVAL)
            st = torch.zeros(1, dtype=torch.int32)
            with self.assertRaises(kvmem.KvmemError):
                kernels.decode(arena, 0, q.half(), [[9]], [1], status=st)
            self.assertEqual(int(st), -errno.EINVAL)
        for bad in (torch.zeros(1, dtype=torch.float16, device=self.device),   # 2 bytes
                    torch.zeros(0, dtype=torch.int32, device=self.device), 0):
            with self.assertRaises(ValueError):             # status: one int32
                kernels.decode(arena, 0, q.half(), [[0]], [1], status=bad)
        for layer, kw in ((0, {"threads": -1}), (0, {"window": -1}), (-1, {})):
            with self.assertRaises(ValueError):             # not a __u32
                kernels.decode(arena, layer, q.half(), [[0]], [1], **kw)
        k = torch.zeros(1, 2, 16, dtype=torch.float16, device=self.device)
        with self.assertRaises(ValueError):
            kernels.append(arena, 0, k, k, [0, 1])
        with self.assertRaises(ValueError):
            kernels.gather(arena, [0], threads=-1)


def dequant_head(t, g, frame, layer, kv, head):
    """The values of one head's K (kv 0) or V of a block of a quantized
    pool, [block_tokens, head_dim] float32, from the arena's bytes @t (a
    uint8 CPU tensor) as uapi/kvmem/layout.h lays them out."""
    base = frame * g.frame_bytes
    off = base + g.elem_offset(layer, kv, head, 0)
    raw = t[off:off + g.head_bytes]
    so = base + g.scale_offset(layer, kv, head)
    sc = t[so:so + g.head_scale_bytes]
    if g.dtype == kvmem.KV_DTYPE_INT4:
        lo = (raw & 15).to(torch.int32) - 8
        hi = (raw >> 4).to(torch.int32) - 8
        q = torch.stack([lo, hi], 1).view(g.block_tokens, g.head_dim).float()
        scale = sc.view(torch.float16).float().view(g.block_tokens, -1)
        return q * scale.repeat_interleave(_lib.KV_INT4_GROUP, 1)
    scale = sc.view(torch.float32)[0]
    if g.dtype == kvmem.KV_DTYPE_INT8:
        q = raw.view(torch.int8).float()
    else:
        q = raw.view(torch.float8_e4m3fn).float()
    return q.view(g.block_tokens, g.head_dim) * scale


def dequant_view(arena):
    """kv_view() of a quantized pool, dequantized to float32: [frames,
    layers, 2, kv_heads, block_tokens, head_dim]."""
    g = arena.geometry
    t = arena.tensor().cpu()
    out = torch.empty(arena.frames, g.layers, 2, g.kv_heads, g.block_tokens, g.head_dim)
    for f in range(arena.frames):
        for layer in range(g.layers):
            for kv in range(2):
                for h in range(g.kv_heads):
                    out[f, layer, kv, h] = dequant_head(t, g, f, layer, kv, h)
    return out


# the largest error of a quantized value, as a fraction of the block's largest
QTOL = {kvmem.KV_DTYPE_INT8: 1.5 / 127, kvmem.KV_DTYPE_FP8_E4M3: 1 / 16,
        kvmem.KV_DTYPE_INT4: 1.5 / 7}


@unittest.skipIf(torch is None, "torch is not installed")
class TorchQuantTest(unittest.TestCase):
    """Quantized pools (int8, fp8, int4): append, decode and prefill take
    fp16 or bf16 activations, which the wrappers pass as io_dtype."""

    device = "cpu"

    def quant_case(self, dtype, act, frames=12):
        g = kvmem.Geometry(2, 2, 64, 16, dtype)
        self.assertTrue(g.quantized and g.valid)
        torch.manual_seed(11)
        arena = kernels.Arena.empty(g, frames, self.device)
        lens = [37, 5]
        tables = [[3, 7, 1], [10]]
        slots = [tables[b][i // 16] * 16 + i % 16 for b, n in enumerate(lens) for i in range(n)]
        k = torch.randn(len(slots), 2, 64).to(act).to(self.device)
        v = torch.randn(len(slots), 2, 64).to(act).to(self.device)
        kernels.append(arena, 1, k, v, slots)
        kv = dequant_view(arena)
        # what append stored is the input, to within the quantization step
        for i, s in enumerate(slots):
            f, t = divmod(s, 16)
            for h in range(2):
                for j, x in enumerate((k, v)):
                    want = x[i, h].cpu().float()
                    amax = x[:, h].cpu().float().abs().max()
                    err = (kv[f, 1, j, h, t] - want).abs().max().item()
                    self.assertLessEqual(err, QTOL[dtype] * amax, "slot %d" % s)
        # decode and prefill attend over the dequantized values
        scale = 1 / math.sqrt(64)
        q = torch.randn(2, 4, 64).to(act).to(self.device)
        padded = [tables[0], tables[1] + [0, 0]]
        out = kernels.decode(arena, 1, q, padded, lens)
        self.assertEqual(out.dtype, act)
        want = torch_ref_decode(kv, 1, q.cpu(), tables, lens, scale)
        tol = 1e-2 if act == torch.float16 else 4e-2
        self.assertLess((out.cpu().float() - want).abs().max().item(), tol)
        qp = torch.randn(3, 4, 64).to(act).to(self.device)
        out = kernels.prefill(arena, 1, qp, [0, 2, 3], padded, lens, max_q_len=2)
        self.assertEqual(out.dtype, act)
        for row, (b, n) in enumerate(((0, 36), (0, 37), (1, 5))):
            want = torch_ref_decode(kv, 1, qp[row:row + 1].cpu(), [tables[b]], [n], scale)
            err = (out[row].cpu().float() - want[0]).abs().max().item()
            self.assertLess(err, tol, "row %d" % row)
        return arena

    def test_int8_fp16(self):
        self.quant_case(kvmem.KV_DTYPE_INT8, torch.float16)

    def test_fp8_bf16(self):
        self.quant_case(kvmem.KV_DTYPE_FP8_E4M3, torch.bfloat16)

    def test_int4_fp16(self):
        self.quant_case(kvmem.KV_DTYPE_INT4, torch.float16)

    def test_int4_bf16(self):
        self.quant_case(kvmem.KV_DTYPE_INT4, torch.bfloat16)

    def test_io_dtype(self):
        g = kvmem.Geometry(1, 2, 64, 4, kvmem.KV_DTYPE_INT8)     # CUDA: head_dim 64 up
        arena = kernels.Arena.empty(g, 4, self.device)
        self.assertEqual(kernels._io_dtype(torch, g, torch.zeros(1, dtype=torch.bfloat16), "x"),
                         (torch.bfloat16, kvmem.KV_DTYPE_BF16))
        self.assertEqual(kernels._io_dtype(torch, g, torch.zeros(1, dtype=torch.float16), "x"),
                         (torch.float16, kvmem.KV_DTYPE_FP16))
        # an unquantized pool's activations are its own dtype, io_dtype 0
        g16 = g._replace(dtype=kvmem.KV_DTYPE_BF16)
        self.assertEqual(kernels._io_dtype(torch, g16, torch.zeros(1, dtype=torch.float16), "x"),
                         (torch.bfloat16, 0))
        k = torch.zeros(1, 2, 64, dtype=torch.float32, device=self.device)
        with self.assertRaises(TypeError):                  # fp32 on a quantized pool
            kernels.append(arena, 0, k, k, [0])
        with self.assertRaises(TypeError):                  # k and v of two dtypes
            kernels.append(arena, 0, k.half(), k.bfloat16(), [0])
        with self.assertRaises(TypeError):
            kernels.decode(arena, 0, torch.zeros(1, 2, 64, device=self.device), [[0]], [1])
        with self.assertRaises(ValueError):                 # no tensor of one dtype
            kernels.kv_view(arena)
        kernels.append(arena, 0, k.bfloat16(), k.bfloat16(), [0])
        out = kernels.decode(arena, 0, torch.ones(1, 2, 64, dtype=torch.bfloat16,
                                                  device=self.device), [[0]], [1])
        self.assertEqual(out.dtype, torch.bfloat16)
        self.assertEqual(out.abs().max().item(), 0)


@unittest.skipIf(torch is None, "torch is not installed")
class TorchPoolTest(DaemonTestCase):
    """Decode on a pool's arena with BlockManager's tables and slots."""

    def test_block_manager_decode(self):
        bm = kvmem.BlockManager(self.daemon.sock, "half")
        try:
            g = bm.pool.geometry
            arena = kernels.Arena.from_pool(bm.pool)
            torch.manual_seed(3)
            slots1 = bm.allocate(1, list(range(40)))
            slots2 = bm.allocate(2, list(range(100, 121)))
            r = bm.append_slots_batch([(1, [40]), (2, [121])])
            slots1 += r[0].slots
            slots2 += r[1].slots
            allslots = slots1 + slots2
            for layer in range(g.layers):
                k = torch.randn(len(allslots), g.kv_heads, g.head_dim, dtype=torch.float16)
                v = torch.randn(len(allslots), g.kv_heads, g.head_dim, dtype=torch.float16)
                kernels.append(arena, layer, k, v, allslots)
            tables = [bm.get_block_table(1), bm.get_block_table(2)]
            stride = max(map(len, tables))
            q = torch.randn(2, 4, g.head_dim, dtype=torch.float16)
            out = kernels.decode(bm.pool, 1, q, [t + [0] * (stride - len(t)) for t in tables],
                                 [41, 22])
            want = torch_ref_decode(kernels.kv_view(arena), 1, q, tables, [41, 22],
                                    1 / math.sqrt(g.head_dim))
            self.assertLess((out.float() - want).abs().max().item(), 5e-3)
            # what the kernel wrote is what the client reads
            s = slots2[-1]
            frame, off = bm.pool.slot_location(s, g.layers - 1, kvmem.KV_V, 1)
            raw = bm.pool.frame_read(frame, g.head_dim * 2, off)
            self.assertEqual(raw, v[-1, 1].contiguous().numpy().tobytes())
        finally:
            bm.close()


def _cuda_ok():
    return (torch is not None and torch.cuda.is_available() and
            kernels.cuda_library_available())


@unittest.skipUnless(_cuda_ok(), "no torch with a GPU, or no libkvkernels_cuda.so")
class CudaKernelTest(TorchKernelTest):
    device = "cuda"

    def test_decode_fp32(self):
        self.skipTest("the CUDA decode covers fp16 and bf16")

    def test_prefill_fp32(self):
        self.skipTest("the CUDA prefill covers fp16 and bf16")


@unittest.skipUnless(_cuda_ok(), "no torch with a GPU, or no libkvkernels_cuda.so")
class CudaQuantTest(TorchQuantTest):
    device = "cuda"


if __name__ == "__main__":
    unittest.main()
