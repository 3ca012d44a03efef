# SPDX-License-Identifier: MIT
"""The block layout of uapi/kvmem/layout.h, in Python.

A block holds, for ``block_tokens`` consecutive tokens of one sequence, the
K and V of every layer: per layer, K then V, each
``[kv_heads][block_tokens][head_dim]`` values. Frame ``f`` starts at
``f * frame_bytes`` of the arena; a slot is ``frame * block_tokens +
token-in-block``.

A quantized pool (``int8``, ``fp8`` E4M3, ``int4``) stores its values in the
same order, ``head_dim * bits / 8`` bytes a token vector (int4: two values a
byte, the even one in the low nibble), and after the last layer the scales
(:meth:`Geometry.scale_offset`): int8 and fp8 one float per layer, K or V,
and KV head of the block; int4 one binary16 per layer, K or V, KV head,
token and group of ``KV_INT4_GROUP`` (32) values.
"""

from collections import namedtuple

from . import _lib

DTYPE_NAMES = {_lib.KV_DTYPE_FP16: "fp16", _lib.KV_DTYPE_BF16: "bf16", _lib.KV_DTYPE_FP32: "fp32",
               _lib.KV_DTYPE_INT8: "int8", _lib.KV_DTYPE_FP8_E4M3: "fp8",
               _lib.KV_DTYPE_INT4: "int4"}
# kv_dtype_size(): bytes of an unquantized element (the quantized dtypes have none)
DTYPE_SIZES = {_lib.KV_DTYPE_FP16: 2, _lib.KV_DTYPE_BF16: 2, _lib.KV_DTYPE_FP32: 4}
# kv_dtype_bits(): bits of a stored value, of any pool dtype
DTYPE_BITS = {_lib.KV_DTYPE_FP16: 16, _lib.KV_DTYPE_BF16: 16, _lib.KV_DTYPE_FP32: 32,
              _lib.KV_DTYPE_INT8: 8, _lib.KV_DTYPE_FP8_E4M3: 8, _lib.KV_DTYPE_INT4: 4}
QUANTIZED = frozenset((_lib.KV_DTYPE_INT8, _lib.KV_DTYPE_FP8_E4M3, _lib.KV_DTYPE_INT4))
# the dtypes by name, as kvmemd.conf writes them
DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}

# struct kv_geometry's limits (layout.h)
KV_MAX_LAYERS = 1024
KV_MAX_KV_HEADS = 1024
KV_MAX_HEAD_DIM = 1024
KV_MAX_BLOCK_TOKENS = 4096


class Geometry(namedtuple("Geometry", "layers kv_heads head_dim block_tokens dtype")):
    """A pool's KV geometry (struct kv_geometry); dtype is a KV_DTYPE_* value."""
    __slots__ = ()

    @classmethod
    def from_struct(cls, g):
        return cls(g.layers, g.kv_heads, g.head_dim, g.block_tokens, g.dtype)

    def to_struct(self):
        return _lib.KvGeometry(self.layers, self.kv_heads, self.head_dim, self.block_tokens,
                               self.dtype, 0)

    @property
    def dtype_name(self):
        return DTYPE_NAMES.get(self.dtype, "dtype%d" % self.dtype)

    @property
    def dtype_size(self):
        """kv_dtype_size(): bytes of an element; 0 for a quantized dtype."""
        return DTYPE_SIZES.get(self.dtype, 0)

    @property
    def dtype_bits(self):
        """kv_dtype_bits(): bits of a stored value (16, 32, 8 or 4); 0 if unknown."""
        return DTYPE_BITS.get(self.dtype, 0)

    @property
    def quantized(self):
        """kv_dtype_quantized(): the pool stores scaled values (int8, fp8, int4)."""
        return self.dtype in QUANTIZED

    @property
    def valid(self):
        """kv_geometry_valid(): every field in range (a quantized pool's
        head_dim a multiple of KV_INT4_GROUP)."""
        return (0 < self.layers <= KV_MAX_LAYERS and 0 < self.kv_heads <= KV_MAX_KV_HEADS and
                0 < self.head_dim <= KV_MAX_HEAD_DIM and
                0 < self.block_tokens <= KV_MAX_BLOCK_TOKENS and self.dtype_bits > 0 and
                (not self.quantized or self.head_dim % _lib.KV_INT4_GROUP == 0))

    @property
    def row_bytes(self):
        """kv_row_bytes(): one token's K (or V) vector of one head."""
        return self.head_dim * self.dtype_bits // 8

    @property
    def head_bytes(self):
        """kv_head_bytes(): one head's K (or V) values of one layer in one block."""
        return self.block_tokens * self.row_bytes

    @property
    def layer_bytes(self):
        """kv_layer_bytes(): one layer's values, K and V, in one block."""
        return 2 * self.kv_heads * self.head_bytes

    @property
    def head_scale_bytes(self):
        """kv_head_scale_bytes(): the scales of one head's K (or V) in a
        block: 4 for int8 and fp8, 2 per token and 32 values for int4, 0
        unquantized."""
        if self.dtype in (_lib.KV_DTYPE_INT8, _lib.KV_DTYPE_FP8_E4M3):
            return 4
        if self.dtype == _lib.KV_DTYPE_INT4:
            return 2 * self.block_tokens * (self.head_dim // _lib.KV_INT4_GROUP)
        return 0

    def scale_offset(self, layer, kv, head):
        """kv_scale_offset(): byte offset of one head's scales inside a
        block (quantized pools), after the values of the last layer; int4:
        token t's start 2 * t * head_dim / KV_INT4_GROUP bytes further."""
        return (self.layers * self.layer_bytes +
                ((layer * 2 + kv) * self.kv_heads + head) * self.head_scale_bytes)

    @property
    def scale_bytes(self):
        """The scales of one block (0 unquantized)."""
        return 2 * self.layers * self.kv_heads * self.head_scale_bytes

    @property
    def block_bytes(self):
        """kv_block_bytes(): the KV of one block, values and scales."""
        return self.layers * self.layer_bytes + self.scale_bytes

    @property
    def frame_bytes(self):
        """kv_frame_bytes(): the block rounded up to KV_FRAME_ALIGN."""
        a = _lib.KV_FRAME_ALIGN
        return (self.block_bytes + a - 1) // a * a

    def elem_offset(self, layer, kv, head, token):
        """kv_elem_offset(): byte offset of a head vector inside a block."""
        return (layer * self.layer_bytes + (kv * self.kv_heads + head) * self.head_bytes +
                token * self.row_bytes)

    def token_offset(self, slot, layer, kv, head):
        """kv_token_offset(): byte offset of a token's K (kv=0) or V (kv=1)
        head vector from the start of the arena."""
        frame, token = divmod(slot, self.block_tokens)
        return frame * self.frame_bytes + self.elem_offset(layer, kv, head, token)

    def blocks_for(self, tokens):
        """Blocks that @tokens tokens fill."""
        return -(-tokens // self.block_tokens)
