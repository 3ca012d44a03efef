# SPDX-License-Identifier: MIT
"""kvmem's kernels (kernels/kvkernels.h) on torch tensors, through ctypes.

The kernels run on a pool's arena in place: paged decode attention
(:func:`decode`), paged prefill attention of a ragged batch of new tokens
(:func:`prefill`), writing new tokens' K and V into their slots
(:func:`append`), whole-block copies (:func:`copy_blocks`) and the
gather/scatter of blocks to and from one buffer (:func:`gather`,
:func:`scatter`); :func:`verify` accepts speculative drafts greedily. CPU tensors go to the C implementations
(``libkvkernels.so``), CUDA tensors to the CUDA ones
(``libkvkernels_cuda.so``, built where nvcc was found), on the current
torch stream of the tensors' device unless a stream is given.

An :class:`Arena` names the memory: a pool's device arena
(:meth:`Arena.from_pool`), or any contiguous torch tensor used as one
(:meth:`Arena.from_tensor`, :meth:`Arena.empty`).

Without torch, ``import kvmem.kernels`` still works: the argument structs
(:class:`DecodeArgs`, ...) and :func:`call` take raw addresses, and every
tensor function raises ImportError saying that it needs PyTorch.

The libraries are found as libkvclient is (see kvmem._lib):
``$KVMEM_LIBKVKERNELS`` / ``$KVMEM_LIBKVKERNELS_CUDA``, the source tree's
``build/``, the installed package's folder.
"""

import ctypes
import math
import threading

from . import _lib
from .client import KvmemError, Pool
from .layout import Geometry

__all__ = ["Arena", "ArenaRef", "DecodeArgs", "PrefillArgs", "AppendArgs", "CopyArgs",
           "GatherArgs", "VerifyArgs", "decode", "prefill", "append", "copy_blocks", "gather",
           "scatter", "verify", "kv_view", "call", "library", "torch_available",
           "cuda_library_available"]


# ---- argument structs (kernels/kvkernels.h) --------------------------------
class ArenaRef(ctypes.Structure):
    """struct kv_arena_ref."""
    _fields_ = [
        ("base", ctypes.c_void_p),
        ("frames", ctypes.c_uint64),
        ("g", _lib.KvGeometry),
    ]


# the fields decode and prefill start with, in the same order
_ATTN_FIELDS = [
    ("arena", ArenaRef),
    ("layer", ctypes.c_uint32),
    ("batch", ctypes.c_uint32),
    ("q_heads", ctypes.c_uint32),
    ("window", ctypes.c_uint32),
    ("scale", ctypes.c_float),
    ("table_stride", ctypes.c_uint32),
]


class DecodeArgs(ctypes.Structure):
    """struct kv_decode_args."""
    _fields_ = _ATTN_FIELDS + [
        ("q", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("block_table", ctypes.c_void_p),
        ("ctx_lens", ctypes.c_void_p),
        ("status", ctypes.c_void_p),
        ("workspace", ctypes.c_void_p),
        ("workspace_bytes", ctypes.c_uint64),
        ("threads", ctypes.c_uint32),
        ("io_dtype", ctypes.c_uint32),
        ("stream", ctypes.c_void_p),
    ]


class PrefillArgs(ctypes.Structure):
    """struct kv_prefill_args."""
    _fields_ = _ATTN_FIELDS + [
        ("tokens", ctypes.c_uint32),
        ("max_q_len", ctypes.c_uint32),
        ("threads", ctypes.c_uint32),
        ("io_dtype", ctypes.c_uint32),
        ("q", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("q_start", ctypes.c_void_p),
        ("block_table", ctypes.c_void_p),
        ("ctx_lens", ctypes.c_void_p),
        ("status", ctypes.c_void_p),
        ("stream", ctypes.c_void_p),
    ]


class VerifyArgs(ctypes.Structure):
    """struct kv_verify_args."""
    _fields_ = [
        ("batch", ctypes.c_uint32),
        ("max_draft", ctypes.c_uint32),
        ("vocab", ctypes.c_uint32),
        ("dtype", ctypes.c_uint32),
        ("draft", ctypes.c_void_p),
        ("draft_lens", ctypes.c_void_p),
        ("logits", ctypes.c_void_p),
        ("accepted", ctypes.c_void_p),
        ("next", ctypes.c_void_p),
        ("status", ctypes.c_void_p),
        ("stream", ctypes.c_void_p),
    ]


class AppendArgs(ctypes.Structure):
    """struct kv_append_args."""
    _fields_ = [
        ("arena", ArenaRef),
        ("layer", ctypes.c_uint32),
        ("tokens", ctypes.c_uint32),
        ("k", ctypes.c_void_p),
        ("v", ctypes.c_void_p),
        ("slots", ctypes.c_void_p),
        ("status", ctypes.c_void_p),
        ("threads", ctypes.c_uint32),
        ("io_dtype", ctypes.c_uint32),
        ("stream", ctypes.c_void_p),
    ]


class CopyArgs(ctypes.Structure):
    """struct kv_copy_args."""
    _fields_ = [
        ("arena", ArenaRef),
        ("pairs", ctypes.c_uint32),
        ("threads", ctypes.c_uint32),
        ("src", ctypes.c_void_p),
        ("dst", ctypes.c_void_p),
        ("status", ctypes.c_void_p),
        ("stream", ctypes.c_void_p),
    ]


class GatherArgs(ctypes.Structure):
    """struct kv_gather_args."""
    _fields_ = [
        ("arena", ArenaRef),
        ("nframes", ctypes.c_uint32),
        ("threads", ctypes.c_uint32),
        ("frames", ctypes.c_void_p),
        ("buf", ctypes.c_void_p),
        ("status", ctypes.c_void_p),
        ("stream", ctypes.c_void_p),
    ]


_OPS = {
    "decode": DecodeArgs,
    "prefill": PrefillArgs,
    "verify": VerifyArgs,
    "append": AppendArgs,
    "copy_blocks": CopyArgs,
    "gather": GatherArgs,
    "scatter": GatherArgs,
}

# ---- the libraries ---------------------------------------------------------
_libs = {}
_libs_lock = threading.Lock()


def library(device="cpu"):
    """The loaded libkvkernels.so ("cpu") or libkvkernels_cuda.so ("cuda");
    ImportError when it cannot be loaded."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    with _libs_lock:
        if kind in _libs:
            return _libs[kind]
        if kind == "cpu":
            paths = _lib.candidates("KVMEM_LIBKVKERNELS", "libkvkernels.so", "LIBKVKERNELS")
            handle, _ = _lib.load_library("libkvkernels", paths)
        else:
            paths = _lib.candidates("KVMEM_LIBKVKERNELS_CUDA", "libkvkernels_cuda.so",
                                    "LIBKVKERNELS_CUDA")
            handle, _ = _lib.load_library("libkvkernels_cuda", paths)
        for op, args in _OPS.items():
            name = "kv_%s_%s" % (op, kind)
            fn = getattr(handle, name)
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.POINTER(args)]
        handle.kv_decode_workspace_bytes.restype = ctypes.c_uint64
        handle.kv_decode_workspace_bytes.argtypes = [ctypes.POINTER(DecodeArgs)]
        _libs[kind] = handle
        return handle


def cuda_library_available():
    try:
        library("cuda")
        return True
    except ImportError:
        return False


def call(op, args, device="cpu"):
    """Call kv_<op>_cpu or kv_<op>_cuda with the argument struct @args (raw
    addresses; no torch needed). Returns 0; raises KvmemError on -errno."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    fn = getattr(library(kind), "kv_%s_%s" % (op, kind))
    ret = fn(ctypes.byref(args))
    if ret < 0:
        raise KvmemError(-ret, "kv_%s_%s" % (op, kind))
    return ret


# ---- torch -----------------------------------------------------------------
_torch = None
_torch_error = None


def _import_torch():
    global _torch, _torch_error
    if _torch is None and _torch_error is None:
        try:
            import torch
            _torch = torch
        except ImportError as e:
            _torch_error = e
    return _torch


def torch_available():
    return _import_torch() is not None


def _need_torch(what):
    torch = _import_torch()
    if torch is None:
        raise ImportError("kvmem.kernels.%s needs PyTorch, which could not be imported "
                          "(%s); the client API and BlockManager work without it"
                          % (what, _torch_error))
    return torch


def _torch_dtype(torch, dtype):
    return {_lib.KV_DTYPE_FP16: torch.float16, _lib.KV_DTYPE_BF16: torch.bfloat16,
            _lib.KV_DTYPE_FP32: torch.float32}[dtype]


def _io_dtype(torch, g, x, what):
    """(torch dtype, io_dtype) of the activations @x (q, k, v) of a kernel
    on a pool of geometry @g: an unquantized pool's own dtype, io_dtype 0
    (kv_io_dtype() takes the pool's); a quantized pool's: @x's, fp16
    (KV_DTYPE_FP16) or bf16 (KV_DTYPE_BF16), fp16 for @x not a tensor."""
    if not g.quantized:
        return _torch_dtype(torch, g.dtype), 0
    io = {torch.float16: _lib.KV_DTYPE_FP16, torch.bfloat16: _lib.KV_DTYPE_BF16}
    dt = x.dtype if torch.is_tensor(x) else torch.float16
    if dt not in io:
        raise TypeError("%s: dtype %s; a pool of %s takes float16 or bfloat16" %
                        (what, dt, g.dtype_name))
    return dt, io[dt]


class Arena:
    """The memory a kernel works on: address of frame 0, frame count,
    geometry, and the torch device ("cpu" or "cuda:N") that holds it."""

    def __init__(self, base, frames, geometry, device="cpu", owner=None):
        self.base = int(base)
        self.frames = int(frames)
        self.geometry = geometry if isinstance(geometry, Geometry) else Geometry(*geometry)
        self.device = str(device)
        self._owner = owner         # keeps a tensor or pool alive

    @classmethod
    def from_pool(cls, pool):
        """A pool's device arena (its device tier): maps it first on the
        cuda backend (kvc_pool_map())."""
        if not isinstance(pool, Pool):
            raise TypeError("Arena.from_pool: a kvmem.Pool")
        if pool.backend == "cuda":
            ptr = pool.map()
            device = "cuda:%d" % pool.gpu
        else:
            ptr = pool.device_ptr
            device = "cpu"
        return cls(ptr, pool.nr_frames[_lib.KVMEM_TIER_DEVICE], pool.geometry, device, pool)

    @classmethod
    def from_tensor(cls, tensor, geometry):
        """A contiguous tensor (any dtype) used as an arena of whole frames."""
        _need_torch("Arena.from_tensor")
        geometry = geometry if isinstance(geometry, Geometry) else Geometry(*geometry)
        if not tensor.is_contiguous():
            raise ValueError("Arena.from_tensor: the tensor must be contiguous")
        nbytes = tensor.numel() * tensor.element_size()
        frames = nbytes // geometry.frame_bytes
        if not frames:
            raise ValueError("Arena.from_tensor: %d bytes hold no frame of %d bytes" %
                             (nbytes, geometry.frame_bytes))
        return cls(tensor.data_ptr(), frames, geometry, tensor.device, tensor)

    @classmethod
    def empty(cls, geometry, frames, device="cpu"):
        """A new zeroed arena of @frames frames in a torch tensor."""
        torch = _need_torch("Arena.empty")
        geometry = geometry if isinstance(geometry, Geometry) else Geometry(*geometry)
        t = torch.zeros(frames * geometry.frame_bytes, dtype=torch.uint8, device=device)
        return cls.from_tensor(t, geometry)

    def ref(self):
        return ArenaRef(self.base, self.frames, self.geometry.to_struct())

    @property
    def is_cuda(self):
        return self.device.startswith("cuda")

    def tensor(self):
        """The arena's bytes as a uint8 tensor (a view, no copy)."""
        torch = _need_torch("Arena.tensor")
        o = self._owner
        if o is not None and not isinstance(o, Pool):
            return o.view(-1).view(torch.uint8)[:self.frames * self.geometry.frame_bytes]
        if self.is_cuda:
            raise ValueError("Arena.tensor: a CUDA pool's arena has no tensor; use "
                             "kvmem.kernels functions, or Arena.from_tensor")
        n = self.frames * self.geometry.frame_bytes
        buf = (ctypes.c_uint8 * n).from_address(self.base)
        t = torch.frombuffer(buf, dtype=torch.uint8)
        t._kvmem_owner = (buf, o)   # noqa: keep the mapping's owner alive
        return t

    def __repr__(self):
        return "<kvmem.kernels.Arena %#x: %d frames on %s, %r>" % (self.base, self.frames,
                                                                  self.device, self.geometry)


def _as_arena(arena):
    if isinstance(arena, Arena):
        return arena
    if isinstance(arena, Pool):
        return Arena.from_pool(arena)
    raise TypeError("an Arena or a kvmem.Pool")


def kv_view(arena):
    """The arena as a tensor of shape [frames, layers, 2 (K, V), kv_heads,
    block_tokens, head_dim] of the pool's dtype (a strided view, no copy):
    ``kv_view(a)[frame, layer, 0, head, token]`` is a K vector. Not for a
    quantized pool (ValueError): its bytes are in Arena.tensor(), where
    Geometry.elem_offset() and scale_offset() find them."""
    torch = _need_torch("kv_view")
    a = _as_arena(arena)
    g = a.geometry
    if g.quantized:
        raise ValueError("kv_view: a pool of %s holds quantized values and their scales, "
                         "not a tensor of one dtype; see Arena.tensor() and "
                         "Geometry.elem_offset(), scale_offset()" % g.dtype_name)
    es = g.dtype_size
    flat = a.tensor().view(_torch_dtype(torch, g.dtype))
    return flat.as_strided((a.frames, g.layers, 2, g.kv_heads, g.block_tokens, g.head_dim),
                           (g.frame_bytes // es, g.layer_bytes // es,
                            g.kv_heads * g.head_bytes // es, g.head_bytes // es,
                            g.head_dim, 1))


def _tensor(torch, x, dtype, device, what):
    if not torch.is_tensor(x):
        x = torch.tensor(x, dtype=dtype)
    if x.dtype != dtype:
        if x.is_floating_point() or dtype.is_floating_point:
            raise TypeError("%s: dtype %s, wanted %s" % (what, x.dtype, dtype))
        x = x.to(dtype)
    if x.device != device:
        if x.device.type == "cpu" and device.type == "cuda" and not x.is_floating_point():
            x = x.to(device)    # small index tensors only
        else:
            raise ValueError("%s: on %s, the arena is on %s" % (what, x.device, device))
    return x.contiguous()


def _status(torch, status, device, what):
    """The address of @status for the kernels' __s32 *status: None, or an
    int32 tensor of one element at least on @device (ValueError else)."""
    if status is None:
        return None
    if (not torch.is_tensor(status) or status.dtype != torch.int32 or
            status.device != device or status.numel() < 1):
        raise ValueError("%s: status must be an int32 tensor of one element, on %s" %
                         (what, device))
    return status.data_ptr()


def _u32(what, **values):
    """ValueError unless each of @values fits the __u32 of its argument."""
    for name, v in values.items():
        if not 0 <= v <= 0xffffffff:
            raise ValueError("%s: %s = %r (0..4294967295)" % (what, name, v))


def _stream(torch, arena, stream):
    """(cudaStream_t handle, torch stream) to launch on; (None, None) on the CPU."""
    return _stream_on(torch, arena.device, stream)


def _stream_on(torch, device, stream):
    """_stream() for a device given as a string ("cpu", "cuda:N")."""
    if not str(device).startswith("cuda"):
        return None, None
    dev = torch.device(device)
    if stream is None:
        st = torch.cuda.current_stream(dev)
    elif isinstance(stream, int):
        st = torch.cuda.ExternalStream(stream, device=dev)
    else:
        st = stream
    return st.cuda_stream, st


def _run(torch, op, args, arena, stream, temps, status, check):
    """Call the kernel; on CUDA, keep @temps (tensors made here) alive for
    the stream the kernel runs on, and with @check wait and read @status."""
    _run_on(torch, op, args, arena.device, stream, temps, status, check)


def _run_on(torch, op, args, device, stream, temps, status, check):
    """_run() for a device given as a string."""
    if not str(device).startswith("cuda"):
        call(op, args, "cpu")
        return
    dev = torch.device(device)
    with torch.cuda.device(dev):
        call(op, args, "cuda")
    if stream is not None and stream != torch.cuda.current_stream(dev):
        for t in temps:
            if t is not None:
                t.record_stream(stream)
    if check:
        stream.synchronize()
        if status is not None:
            err = int(status.item())
            if err < 0:
                raise KvmemError(-err, "kv_%s_cuda (status)" % op)


def decode(arena, layer, q, block_tables, ctx_lens, scale=None, window=0, out=None,
           status=None, check=False, threads=0, stream=None, workspace=True):
    """Paged decode attention of one query token per sequence.

    @arena: an Arena or a Pool; @q: [batch, q_heads, head_dim] of the
    pool's dtype (a quantized pool's: float16 or bfloat16, passed as
    io_dtype), on the arena's device; @block_tables: [batch, stride]
    frames (int32, or anything that converts); @ctx_lens: [batch] tokens of
    context; @scale: default 1/sqrt(head_dim); @window: sliding window (0:
    all). Returns @out ([batch, q_heads, head_dim]).

    CUDA: asynchronous on @stream (default: the current torch stream).
    Faults found on the device (a frame past the arena) go to @status (an
    int32 tensor of one element) when given; @check waits for the stream and
    raises on a nonzero status. @workspace lets the kernel split long
    contexts (allocated here, kv_decode_workspace_bytes()).
    """
    torch = _need_torch("decode")
    _u32("decode", layer=layer, window=window, threads=threads)
    a = _as_arena(arena)
    g = a.geometry
    dev = torch.device(a.device)
    dt, io_dtype = _io_dtype(torch, g, q, "decode: q")
    q = _tensor(torch, q, dt, dev, "decode: q")
    if q.dim() != 3 or q.shape[2] != g.head_dim:
        raise ValueError("decode: q must be [batch, q_heads, %d], not %s" %
                         (g.head_dim, tuple(q.shape)))
    batch, q_heads = q.shape[0], q.shape[1]
    bt = _tensor(torch, block_tables, torch.int32, dev, "decode: block_tables")
    if bt.dim() == 1:
        bt = bt.view(batch, -1)
    if bt.dim() != 2 or bt.shape[0] != batch:
        raise ValueError("decode: block_tables must be [%d, stride]" % batch)
    cl = _tensor(torch, ctx_lens, torch.int32, dev, "decode: ctx_lens").view(-1)
    if cl.numel() != batch:
        raise ValueError("decode: ctx_lens must have %d entries" % batch)
    if out is None:
        out = torch.empty_like(q)
    elif (out.shape != q.shape or out.dtype != q.dtype or out.device != q.device or
          not out.is_contiguous()):
        raise ValueError("decode: out must be a contiguous tensor like q")
    if scale is None:
        scale = 1.0 / math.sqrt(g.head_dim)
    args = DecodeArgs()
    args.arena = a.ref()
    args.layer = layer
    args.batch = batch
    args.q_heads = q_heads
    args.window = window
    args.scale = scale
    args.table_stride = bt.shape[1]
    args.q = q.data_ptr()
    args.out = out.data_ptr()
    args.block_table = bt.data_ptr()
    args.ctx_lens = cl.data_ptr()
    args.status = _status(torch, status, dev, "decode")
    args.threads = threads
    args.io_dtype = io_dtype
    args.stream, st = _stream(torch, a, stream)
    ws = None
    if a.is_cuda and workspace:
        nb = library("cuda").kv_decode_workspace_bytes(ctypes.byref(args))
        if nb:
            ws = torch.empty(nb, dtype=torch.uint8, device=dev)
            args.workspace = ws.data_ptr()
            args.workspace_bytes = nb
    _run(torch, "decode", args, a, st, (q, bt, cl, out, ws), status, check)
    return out


def prefill(arena, layer, q, q_start, block_tables, ctx_lens, scale=None, window=0,
            out=None, max_q_len=0, status=None, check=False, threads=0, stream=None):
    """Paged prefill attention of a ragged batch of new tokens.

    @q: [tokens, q_heads, head_dim] of the pool's dtype (a quantized
    pool's: float16 or bfloat16, as for decode()), the new tokens of
    every sequence one after the other; @q_start: [batch + 1] where each
    sequence's rows start (0 first, tokens last); @block_tables: [batch,
    stride]; @ctx_lens: [batch] tokens in each sequence, the new ones
    included (append their K and V first: the new tokens are each
    sequence's last ones and attend causally to it); @max_q_len: the most
    new tokens of one sequence (0: tokens), which sizes the CUDA launch.
    Returns @out ([tokens, q_heads, head_dim]). CUDA, @status, @check as
    for decode().
    """
    torch = _need_torch("prefill")
    _u32("prefill", layer=layer, window=window, max_q_len=max_q_len, threads=threads)
    a = _as_arena(arena)
    g = a.geometry
    dev = torch.device(a.device)
    dt, io_dtype = _io_dtype(torch, g, q, "prefill: q")
    q = _tensor(torch, q, dt, dev, "prefill: q")
    if q.dim() != 3 or q.shape[2] != g.head_dim:
        raise ValueError("prefill: q must be [tokens, q_heads, %d], not %s" %
                         (g.head_dim, tuple(q.shape)))
    qs = _tensor(torch, q_start, torch.int32, dev, "prefill: q_start").view(-1)
    batch = qs.numel() - 1
    if batch < 0:
        raise ValueError("prefill: q_start needs batch + 1 entries")
    bt = _tensor(torch, block_tables, torch.int32, dev, "prefill: block_tables")
    if bt.dim() == 1:
        bt = bt.view(max(batch, 1), -1)
    if bt.dim() != 2 or (batch and bt.shape[0] != batch):
        raise ValueError("prefill: block_tables must be [%d, stride]" % batch)
    cl = _tensor(torch, ctx_lens, torch.int32, dev, "prefill: ctx_lens").view(-1)
    if cl.numel() != batch:
        raise ValueError("prefill: ctx_lens must have %d entries" % batch)
    if out is None:
        out = torch.empty_like(q)
    elif (out.shape != q.shape or out.dtype != q.dtype or out.device != q.device or
          not out.is_contiguous()):
        raise ValueError("prefill: out must be a contiguous tensor like q")
    args = PrefillArgs()
    args.arena = a.ref()
    args.layer = layer
    args.batch = batch
    args.q_heads = q.shape[1]
    args.window = window
    args.scale = 1.0 / math.sqrt(g.head_dim) if scale is None else scale
    args.table_stride = bt.shape[1]
    args.tokens = q.shape[0]
    args.max_q_len = max_q_len
    args.threads = threads
    args.io_dtype = io_dtype
    args.q = q.data_ptr()
    args.out = out.data_ptr()
    args.q_start = qs.data_ptr()
    args.block_table = bt.data_ptr()
    args.ctx_lens = cl.data_ptr()
    args.status = _status(torch, status, dev, "prefill")
    args.stream, st = _stream(torch, a, stream)
    _run(torch, "prefill", args, a, st, (q, qs, bt, cl, out), status, check)
    return out


def verify(draft, draft_lens, logits, status=None, check=False, stream=None):
    """Greedy acceptance of speculative drafts: (accepted, next), two int32
    tensors of [batch].

    @draft: [batch, max_draft] token ids; @draft_lens: [batch] drafts of
    each sequence; @logits: [batch, max_draft + 1, vocab] (fp32, fp16 or
    bf16) of the target model, row j predicting the token after draft j-1.
    accepted[b] is the longest prefix of drafts that are each their row's
    argmax, next[b] the argmax of the row after it. CUDA tensors run
    kv_verify_cuda on the current stream; @status, @check as for decode().
    """
    torch = _need_torch("verify")
    dtypes = {torch.float32: _lib.KV_DTYPE_FP32, torch.float16: _lib.KV_DTYPE_FP16,
              torch.bfloat16: _lib.KV_DTYPE_BF16}
    if not torch.is_tensor(logits) or logits.dtype not in dtypes or logits.dim() != 3:
        raise ValueError("verify: logits must be [batch, max_draft + 1, vocab] of float")
    dtype = dtypes[logits.dtype]
    dev = logits.device
    batch, rows, vocab = logits.shape
    if rows < 1 or vocab < 1:
        raise ValueError("verify: logits must have a row per draft and a vocab")
    if batch == 0:          # nothing to verify (and no [0, -1] views)
        return (torch.empty(0, dtype=torch.int32, device=dev),
                torch.empty(0, dtype=torch.int32, device=dev))
    lg = logits.contiguous()
    dr = _tensor(torch, draft, torch.int32, dev, "verify: draft").view(batch, -1)
    if dr.shape[1] != rows - 1:
        raise ValueError("verify: draft must be [%d, %d]" % (batch, rows - 1))
    dl = _tensor(torch, draft_lens, torch.int32, dev, "verify: draft_lens").view(-1)
    if dl.numel() != batch:
        raise ValueError("verify: draft_lens must have %d entries" % batch)
    acc = torch.empty(batch, dtype=torch.int32, device=dev)
    nxt = torch.empty(batch, dtype=torch.int32, device=dev)
    args = VerifyArgs()
    args.batch = batch
    args.max_draft = rows - 1
    args.vocab = vocab
    args.dtype = dtype
    args.draft = dr.data_ptr()
    args.draft_lens = dl.data_ptr()
    args.logits = lg.data_ptr()
    args.accepted = acc.data_ptr()
    args.next = nxt.data_ptr()
    args.status = _status(torch, status, dev, "verify")
    args.stream, st = _stream_on(torch, str(dev), stream)
    _run_on(torch, "verify", args, str(dev), st, (lg, dr, dl, acc, nxt), status, check)
    return acc, nxt


def append(arena, layer, k, v, slots, status=None, check=False, threads=0, stream=None):
    """Write the K and V of new tokens of one layer into their slots.

    @k, @v: [tokens, kv_heads, head_dim] of the pool's dtype (a quantized
    pool's: both float16 or both bfloat16, quantized as they are written);
    @slots: [tokens] (int64; a negative slot skips the token), e.g. from
    Client.step() or BlockManager.append_slots(). CUDA as for decode().
    """
    torch = _need_torch("append")
    _u32("append", layer=layer, threads=threads)
    a = _as_arena(arena)
    g = a.geometry
    dev = torch.device(a.device)
    dt, io_dtype = _io_dtype(torch, g, k, "append: k")
    k = _tensor(torch, k, dt, dev, "append: k")
    v = _tensor(torch, v, dt, dev, "append: v")
    want = (g.kv_heads, g.head_dim)
    if k.dim() != 3 or tuple(k.shape[1:]) != want or v.shape != k.shape:
        raise ValueError("append: k and v must be [tokens, %d, %d]" % want)
    s = _tensor(torch, slots, torch.int64, dev, "append: slots").view(-1)
    if s.numel() != k.shape[0]:
        raise ValueError("append: %d slots for %d tokens" % (s.numel(), k.shape[0]))
    args = AppendArgs()
    args.arena = a.ref()
    args.layer = layer
    args.tokens = k.shape[0]
    args.k = k.data_ptr()
    args.v = v.data_ptr()
    args.slots = s.data_ptr()
    args.status = _status(torch, status, dev, "append")
    args.threads = threads
    args.io_dtype = io_dtype
    args.stream, st = _stream(torch, a, stream)
    _run(torch, "append", args, a, st, (k, v, s), status, check)


def copy_blocks(arena, src, dst, status=None, check=False, threads=0, stream=None):
    """Copy whole blocks (all layers) from frames @src to frames @dst."""
    torch = _need_torch("copy_blocks")
    _u32("copy_blocks", threads=threads)
    a = _as_arena(arena)
    dev = torch.device(a.device)
    s = _tensor(torch, src, torch.int32, dev, "copy_blocks: src").view(-1)
    d = _tensor(torch, dst, torch.int32, dev, "copy_blocks: dst").view(-1)
    if s.numel() != d.numel():
        raise ValueError("copy_blocks: %d sources, %d destinations" % (s.numel(), d.numel()))
    args = CopyArgs()
    args.arena = a.ref()
    args.pairs = s.numel()
    args.threads = threads
    args.src = s.data_ptr()
    args.dst = d.data_ptr()
    args.status = _status(torch, status, dev, "copy_blocks")
    args.stream, st = _stream(torch, a, stream)
    _run(torch, "copy_blocks", args, a, st, (s, d), status, check)


def _gather_args(torch, what, arena, frames, buf, status, threads, stream):
    _u32(what, threads=threads)
    a = _as_arena(arena)
    dev = torch.device(a.device)
    f = _tensor(torch, frames, torch.int32, dev, "%s: frames" % what).view(-1)
    need = f.numel() * a.geometry.block_bytes
    if buf is None:
        buf = torch.empty(need, dtype=torch.uint8, device=dev)
    if (buf.device != dev or not buf.is_contiguous() or
            buf.numel() * buf.element_size() < need):
        raise ValueError("%s: buf must be contiguous, on %s, of %d bytes at least" %
                         (what, dev, need))
    args = GatherArgs()
    args.arena = a.ref()
    args.nframes = f.numel()
    args.threads = threads
    args.frames = f.data_ptr()
    args.buf = buf.data_ptr()
    args.status = _status(torch, status, dev, what)
    args.stream, st = _stream(torch, a, stream)
    return a, args, buf, f, st


def gather(arena, frames, buf=None, status=None, check=False, threads=0, stream=None):
    """Copy the blocks of @frames into one buffer (block i of @buf is frame
    frames[i]); returns @buf (a new uint8 tensor when None)."""
    torch = _need_torch("gather")
    a, args, buf, f, st = _gather_args(torch, "gather", arena, frames, buf, status, threads,
                                       stream)
    _run(torch, "gather", args, a, st, (f, buf), status, check)
    return buf


def scatter(arena, frames, buf, status=None, check=False, threads=0, stream=None):
    """Copy block i of @buf into frame frames[i] (no frame twice)."""
    torch = _need_torch("scatter")
    a, args, buf, f, st = _gather_args(torch, "scatter", arena, frames, buf, status, threads,
                                       stream)
    _run(torch, "scatter", args, a, st, (f, buf), status, check)
