# SPDX-License-Identifier: MIT
"""kvmem for Hugging Face transformers.

A model's KV cache lives in kvmem blocks and decode attention runs kvmem's
paged kernel on them:

    cache = kvmem.hf.KvmemCache(client, "llama", model)
    out = model.generate(input_ids, attention_mask=mask,
                         past_key_values=cache, max_new_tokens=64)
    cache.close()

``KvmemCache`` is a transformers ``Cache``: every layer's ``update()``
writes the new tokens' K and V into the slots kvmemd handed out for them
(``kv_append``, one call per layer), and returns only the new tokens. The
attention function registered as ``"kvmem"`` (``KvmemCache`` switches the
model to it) computes a decode step (one query token per sequence) with
``kv_decode`` over each sequence's block table, and a step of several
tokens (a prompt, a chunk of one onto cached tokens, a speculative draft)
with ``kv_prefill``: each sequence's real new tokens attend causally to
its cached tokens and to each other. Left padding is honoured: pad
positions get no slot, so each kvmem sequence holds exactly its real
tokens, as the model's attention mask says (pad rows' outputs are zero).

The pool must have the model's geometry: layers, KV heads, head_dim and
dtype (bf16 or fp16), or a quantized dtype (int8, fp8, int4) with the model
in bf16 or fp16: K and V are quantized as they are appended. Works with the
cuda backend (GPU tensors) and with the cpu backend (CPU tensors).

Not supported: beam search (reorder_cache), sliding windows.
"""

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from . import kernels
from ._lib import KV_DTYPE_BF16, KV_DTYPE_FP16

__all__ = ["KvmemCache", "attention", "register"]

_DTYPES = {KV_DTYPE_BF16: torch.bfloat16, KV_DTYPE_FP16: torch.float16}


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The "kvmem" attention function: paged attention on the module's cache.

    @query: [batch, q_heads, q_len, head_dim]. With a KvmemCache attached
    to @module: kv_decode over the block tables when q_len == 1, else
    kv_prefill of every row's real new tokens (pad rows give zeros);
    without one, SDPA over @key and @value. Returns ([batch, q_len, q_heads,
    head_dim], None), as SDPA's does.
    """
    cache = getattr(module, "_kvmem_cache", None)
    if cache is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if query.shape[2] == 1:
        q = query[:, :, 0, :].to(cache.dtype).contiguous()
        out = kernels.decode(cache.arena, module.layer_idx, q, cache.block_tables,
                             cache.ctx_lens, scale=scaling)
        return out.to(query.dtype).unsqueeze(1), None
    rows, cols = cache.q_index
    q = query.transpose(1, 2)[rows, cols].to(cache.dtype).contiguous()
    part = kernels.prefill(cache.arena, module.layer_idx, q, cache.q_start,
                           cache.block_tables, cache.ctx_lens, scale=scaling,
                           max_q_len=cache.max_q_len)
    batch, heads, t, hd = query.shape
    out = query.new_zeros(batch, t, heads, hd)
    out[rows, cols] = part.to(out.dtype)
    return out, None


def register():
    """Register "kvmem" with transformers (attention and mask); idempotent."""
    AttentionInterface.register("kvmem", attention)
    AttentionMaskInterface.register("kvmem", sdpa_mask)


class _Layer(CacheLayerMixin):
    """One model layer's view of the cache: K/V go to kvmem blocks."""

    is_compileable = False
    is_sliding = False
    is_croppable = False

    def __init__(self, owner, idx):
        super().__init__()
        self.owner = owner
        self.idx = idx
        self.length = 0         # positions seen (padding included), as HF counts

    def lazy_initialization(self, key_states, value_states):
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.owner._store(self.idx, key_states, value_states)
        self.length += key_states.shape[-2]
        return key_states, value_states

    def get_mask_sizes(self, query_length):
        return self.length + query_length, 0

    def get_seq_length(self):
        return self.length

    def get_max_length(self):
        return -1

    def reset(self):
        self.length = 0

    def reorder_cache(self, beam_idx):
        raise NotImplementedError("kvmem: beam search is not supported")


class KvmemCache(Cache):
    """A transformers Cache whose KV lives in a kvmem pool.

    @client: a kvmem.Client; @pool: the pool's name (its geometry must be
    the model's); @model: the model (its attention modules get the cache,
    and its attention implementation becomes "kvmem").

    One kvmem sequence per batch row, created at the first forward; each
    forward makes one STEP for the whole batch (slots for the real new
    tokens, with their ids for the prefix cache), then every layer appends
    its K and V. close() frees the sequences (after the current stream's
    work is done: the ordering rule of libkvclient(3)).
    """

    def __init__(self, client, pool, model):
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") \
            else model.config
        layers = cfg.num_hidden_layers
        super().__init__(layers=[_Layer(self, i) for i in range(layers)])
        self.client = client
        self.pool = client.pool(pool)
        g = self.pool.geometry
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        if (g.layers, g.kv_heads, g.head_dim) != (layers, kv_heads, head_dim):
            raise ValueError("kvmem: pool %s holds %d layers x %d KV heads x %d, the model "
                             "%d x %d x %d" % (pool, g.layers, g.kv_heads, g.head_dim,
                                                layers, kv_heads, head_dim))
        if g.dtype in _DTYPES:
            self.dtype = _DTYPES[g.dtype]
        elif g.quantized and getattr(model, "dtype", None) in _DTYPES.values():
            self.dtype = model.dtype        # the kernels' io_dtype
        else:
            raise ValueError("kvmem: pool %s: the kernels take bf16 or fp16 KV, or quantized "
                             "KV (int8, fp8, int4) of a bf16 or fp16 model" % pool)
        self.arena = kernels.Arena.from_pool(self.pool)
        self.device = torch.device(self.arena.device)
        self.seqs = []
        self.real = []          # real tokens per row
        self.block_tables = None
        self.ctx_lens = None
        self._slots = None
        self.q_index = None
        self.q_start = None
        self.max_q_len = 0
        self._new = 0           # tokens of the current forward (layer 0 counted them)
        self._inputs = None     # (input_ids, attention_mask) of the current forward
        register()
        model.set_attn_implementation("kvmem")
        for m in model.modules():
            if hasattr(m, "layer_idx") and hasattr(m, "q_proj"):
                m._kvmem_cache = self
        self._hook = model.register_forward_pre_hook(self._capture, with_kwargs=True)
        self._model = model

    def _capture(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._inputs = (ids, kwargs.get("attention_mask"))

    def _begin(self, batch, t):
        """One STEP for the batch: slots of the real new tokens."""
        ids, mask = self._inputs if self._inputs else (None, None)
        if not self.seqs:
            try:
                for _ in range(batch):
                    self.seqs.append(self.client.seq_create(self.pool))
            except BaseException:
                self._free_seqs()
                raise
            self.real = [0] * batch
        if len(self.seqs) != batch:
            raise ValueError("kvmem: the batch changed from %d to %d rows" %
                             (len(self.seqs), batch))
        if mask is not None and mask.dim() == 2:
            rows = mask[:, -t:].to("cpu", torch.bool).tolist()
            keep = [[i for i, real in enumerate(row) if real] for row in rows]
        else:
            keep = [list(range(t))] * batch
        toks = ids.tolist() if ids is not None and ids.shape[-1] == t else None
        step = [(self.seqs[b], len(keep[b]), [toks[b][i] for i in keep[b]] if toks else None)
                for b in range(batch)]
        slots = self.client.step(step)
        flat = [[-1] * t for _ in range(batch)]
        for b in range(batch):
            for i, s in zip(keep[b], slots[b]):
                flat[b][i] = s
            self.real[b] += len(keep[b])
        self._slots = torch.tensor(flat, dtype=torch.int64).view(-1).to(self.device)
        tables = [self.client.block_table(s) for s in self.seqs]
        width = max(1, max(len(tb) for tb in tables))
        bt = torch.zeros((batch, width), dtype=torch.int32)
        for b, tb in enumerate(tables):
            bt[b, :len(tb)] = torch.tensor(tb, dtype=torch.int32)
        self.block_tables = bt.to(self.device)
        self.ctx_lens = torch.tensor(self.real, dtype=torch.int32).to(self.device)
        # the real new tokens, row-major: what kv_prefill attends for
        self.q_index = (torch.tensor([b for b in range(batch) for _ in keep[b]],
                                     dtype=torch.long, device=self.device),
                        torch.tensor([i for b in range(batch) for i in keep[b]],
                                     dtype=torch.long, device=self.device))
        starts = [0]
        for b in range(batch):
            starts.append(starts[-1] + len(keep[b]))
        self.q_start = torch.tensor(starts, dtype=torch.int32, device=self.device)
        self.max_q_len = max(len(k) for k in keep) if keep else 0

    def _store(self, layer, key_states, value_states):
        batch, kv_heads, t, head_dim = key_states.shape
        if layer == 0:
            self._begin(batch, t)
        k = key_states.transpose(1, 2).reshape(batch * t, kv_heads, head_dim)
        v = value_states.transpose(1, 2).reshape(batch * t, kv_heads, head_dim)
        kernels.append(self.arena, layer, k.to(self.dtype).contiguous(),
                       v.to(self.dtype).contiguous(), self._slots)

    def _free_seqs(self):
        for s in self.seqs:
            self.client.seq_free(s)
        self.seqs = []
        self.real = []

    def close(self):
        """Free the sequences and detach from the model."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        self._free_seqs()
        self._hook.remove()
        for m in self._model.modules():
            if getattr(m, "_kvmem_cache", None) is self:
                del m._kvmem_cache
