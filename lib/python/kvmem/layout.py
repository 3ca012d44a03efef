# SPDX-License-Identifier: MIT
"""The block layout of uapi/kvmem/layout.h, in Python.

A block holds, for ``block_tokens`` consecutive tokens of one sequence, the
K and V of every layer: per layer, K then V, each
``[kv_heads][block_tokens][head_dim]`` elements. Frame ``f`` starts at
``f * frame_bytes`` of the arena; a slot is ``frame * block_tokens +
token-in-block``.
"""

from collections import namedtuple

from . import _lib

DTYPE_NAMES = {_lib.KV_DTYPE_FP16: "fp16", _lib.KV_DTYPE_BF16: "bf16", _lib.KV_DTYPE_FP32: "fp32"}
DTYPE_SIZES = {_lib.KV_DTYPE_FP16: 2, _lib.KV_DTYPE_BF16: 2, _lib.KV_DTYPE_FP32: 4}


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
        return DTYPE_SIZES.get(self.dtype, 0)

    @property
    def head_bytes(self):
        """kv_head_bytes(): one head's K (or V) of one layer in one block."""
        return self.block_tokens * self.head_dim * self.dtype_size

    @property
    def layer_bytes(self):
        """kv_layer_bytes(): one layer, K and V, in one block."""
        return 2 * self.kv_heads * self.head_bytes

    @property
    def block_bytes(self):
        """kv_block_bytes(): the KV of one block."""
        return self.layers * self.layer_bytes

    @property
    def frame_bytes(self):
        """kv_frame_bytes(): the block rounded up to KV_FRAME_ALIGN."""
        a = _lib.KV_FRAME_ALIGN
        return (self.block_bytes + a - 1) // a * a

    def elem_offset(self, layer, kv, head, token):
        """kv_elem_offset(): byte offset of a head vector inside a block."""
        return (layer * self.layer_bytes + (kv * self.kv_heads + head) * self.head_bytes +
                token * self.head_dim * self.dtype_size)

    def token_offset(self, slot, layer, kv, head):
        """kv_token_offset(): byte offset of a token's K (kv=0) or V (kv=1)
        head vector from the start of the arena."""
        frame, token = divmod(slot, self.block_tokens)
        return frame * self.frame_bytes + self.elem_offset(layer, kv, head, token)

    def blocks_for(self, tokens):
        """Blocks that @tokens tokens fill."""
        return -(-tokens // self.block_tokens)
