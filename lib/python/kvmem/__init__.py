# SPDX-License-Identifier: MIT
"""kvmem: Python binding of libkvclient, the client library of kvmemd.

Pure Python over ctypes: no compiler is needed, only libkvclient.so (and,
for kvmem.kernels, libkvkernels.so and PyTorch).

    import kvmem

    with kvmem.Client("/run/kvmemd/kvmemd.sock") as c:
        pool = c.pool("default")
        seq = c.seq_create(pool)
        [slots] = c.step([(seq, 3, [101, 102, 103])])
        print(c.block_table(seq), slots)

Modules: kvmem.client (Client, Pool, KvmemError), kvmem.block_manager
(BlockManager, AllocStatus: vLLM's block manager interface), kvmem.kernels
(the attention and block kernels on torch tensors), kvmem.layout
(Geometry: uapi/kvmem/layout.h). See Documentation/python.md.
"""

from ._lib import (
    KVMEM_TIER_DEVICE, KVMEM_TIER_HOST, KVMEM_NR_TIERS, KVMEM_BACKEND_CPU, KVMEM_BACKEND_CUDA,
    KVMEM_NOWAIT, KVMEM_STEP_NOSLOTS, KVMEM_STEP_MAX_SEQS, KVMEM_STEP_MAX_TOKENS,
    KVMEM_STATS_MEMINFO, KVMEM_STATS_VMSTAT, KVMEM_STATS_ZONEINFO, KVMEM_STATS_PREFIX,
    KVMEM_STATS_TOPOLOGY, KVMEM_DROP_DEMOTE, KVMEM_DROP_PREFIX, KV_DTYPE_FP16, KV_DTYPE_BF16,
    KV_DTYPE_FP32, KV_DTYPE_INT8, KV_DTYPE_FP8_E4M3, KV_DTYPE_INT4, KV_K, KV_V,
)
from .client import Client, Pool, KvmemError, PrefixMatch, connect
from .block_manager import AllocStatus, AppendedSlots, BlockManager
from .layout import Geometry

__version__ = "0.1.0"

__all__ = [
    "Client", "Pool", "KvmemError", "PrefixMatch", "connect", "AllocStatus", "AppendedSlots",
    "BlockManager", "Geometry", "kernels",
    "KVMEM_TIER_DEVICE", "KVMEM_TIER_HOST", "KVMEM_NR_TIERS", "KVMEM_BACKEND_CPU",
    "KVMEM_BACKEND_CUDA", "KVMEM_NOWAIT", "KVMEM_STEP_NOSLOTS", "KVMEM_STEP_MAX_SEQS",
    "KVMEM_STEP_MAX_TOKENS", "KVMEM_STATS_MEMINFO", "KVMEM_STATS_VMSTAT", "KVMEM_STATS_ZONEINFO",
    "KVMEM_STATS_PREFIX", "KVMEM_STATS_TOPOLOGY", "KVMEM_DROP_DEMOTE", "KVMEM_DROP_PREFIX",
    "KV_DTYPE_FP16", "KV_DTYPE_BF16", "KV_DTYPE_FP32", "KV_DTYPE_INT8", "KV_DTYPE_FP8_E4M3",
    "KV_DTYPE_INT4", "KV_K", "KV_V",
]


def __getattr__(name):
    # kvmem.kernels on first use: importing kvmem never imports torch
    if name == "kernels":
        import importlib
        return importlib.import_module(".kernels", __name__)
    raise AttributeError("module 'kvmem' has no attribute %r" % name)
