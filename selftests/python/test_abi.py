# SPDX-License-Identifier: MIT
"""The ctypes mirrors of the C structs against the C headers: a small C
program, compiled here where a compiler exists, prints sizeof and offsetof
of every struct and field that kvmem's Python code mirrors, the constants,
and what layout.h computes for geometries of every dtype, quantized ones
included (frames, blocks, scale and token offsets, validity)."""

import ctypes
import os
import shutil
import subprocess
import tempfile
import unittest

import kvmem
from kvmem import _lib, kernels

TOP = os.environ.get("TOP") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))

# ctypes class -> C type
STRUCTS = [
    (_lib.KvGeometry, "struct kv_geometry"),
    (_lib.KvcPool, "struct kvc_pool"),
    (_lib.KvcStepSeq, "struct kvc_step_seq"),
    (_lib.KvmemPrefixMatchReply, "struct kvmem_prefix_match_reply"),
    (_lib.KvmemAdmitReply, "struct kvmem_admit_reply"),
    (kernels.ArenaRef, "struct kv_arena_ref"),
    (kernels.DecodeArgs, "struct kv_decode_args"),
    (kernels.PrefillArgs, "struct kv_prefill_args"),
    (kernels.VerifyArgs, "struct kv_verify_args"),
    (kernels.AppendArgs, "struct kv_append_args"),
    (kernels.CopyArgs, "struct kv_copy_args"),
    (kernels.GatherArgs, "struct kv_gather_args"),
]

# Python constant -> C macro
CONSTANTS = [
    "KVMEM_TIER_DEVICE", "KVMEM_TIER_HOST", "KVMEM_NR_TIERS", "KVMEM_BACKEND_CPU",
    "KVMEM_BACKEND_CUDA", "KVMEM_NOWAIT", "KVMEM_STEP_NOSLOTS", "KVMEM_STEP_MAX_SEQS",
    "KVMEM_STEP_MAX_TOKENS", "KVMEM_MSG_MAX", "KVMEM_STATS_MEMINFO", "KVMEM_STATS_VMSTAT",
    "KVMEM_STATS_ZONEINFO", "KVMEM_STATS_PREFIX", "KVMEM_STATS_TOPOLOGY", "KVMEM_STATS_SEQLEN", "KVMEM_DROP_DEMOTE",
    "KVMEM_DROP_PREFIX", "KVMEM_PREFIX_PIN", "KVMEM_PREFIX_UNPIN", "KVMEM_PREFIX_REPIN",
    "KVMEM_PREFIX_FORGET", "KVMEM_NAME_MAX", "KVMEM_KEY_MAX", "KV_DTYPE_FP16", "KV_DTYPE_BF16",
    "KV_DTYPE_FP32", "KV_DTYPE_INT8", "KV_DTYPE_FP8_E4M3", "KV_DTYPE_INT4", "KV_INT4_GROUP",
    "KV_FRAME_ALIGN", "KV_K", "KV_V", "KVMEM_ADMIT_NOW", "KVMEM_ADMIT_LATER",
    "KVMEM_ADMIT_NEVER",
]

# kvmem.layout constant -> the layout.h macro of the same name
LAYOUT_CONSTANTS = ["KV_MAX_LAYERS", "KV_MAX_KV_HEADS", "KV_MAX_HEAD_DIM", "KV_MAX_BLOCK_TOKENS"]

# (geometry, slot, layer, kv, head) whose offsets C and Python compute
LAYOUT_CASES = [
    ((2, 2, 16, 4, 3), 13, 1, 1, 1),
    ((3, 2, 24, 5, 2), 7, 2, 1, 1),
    ((32, 8, 128, 16, 2), 1000, 31, 0, 7),
    ((1, 1, 1, 1, 1), 5, 0, 1, 0),
    ((4, 4, 64, 16, 1), 70000, 3, 1, 3),
    # quantized: int8, fp8 (E4M3), int4, with their scales after the values
    ((2, 2, 32, 4, 4), 13, 1, 1, 1),
    ((3, 2, 64, 5, 5), 7, 2, 1, 1),
    ((32, 8, 128, 16, 6), 1000, 31, 0, 7),
    ((1, 1, 32, 1, 6), 5, 0, 1, 0),
    ((4, 3, 96, 17, 6), 70, 3, 1, 2),
    ((80, 8, 128, 128, 4), 300, 79, 1, 7),
    ((1, 1024, 1024, 1, 5), 3, 0, 1, 1023),
]

# geometries whose kv_geometry_valid() C and Python compute
VALID_CASES = [
    (2, 2, 16, 4, 1), (2, 2, 32, 4, 4), (2, 2, 48, 4, 6), (2, 2, 16, 4, 5), (2, 2, 24, 4, 3),
    (2, 2, 64, 4, 7), (2, 2, 64, 4, 0), (0, 2, 64, 4, 4), (2, 2, 1056, 4, 1),
    (2, 2, 1024, 4096, 6), (1025, 1, 32, 1, 4),
]


def compiler():
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


class AbiTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cc = compiler()
        if not cc:
            raise unittest.SkipTest("no C compiler: the struct layouts are not checked")
        lines = ["#include <stddef.h>", "#include <stdio.h>",
                 '#include "lib/kvclient/kvclient.h"', '#include "kernels/kvkernels.h"',
                 "int main(void)", "{"]
        for cls_, ctype in STRUCTS:
            lines.append('\tprintf("%s %%zu\\n", sizeof(%s));' % (ctype, ctype))
            for name, _ in cls_._fields_:
                lines.append('\tprintf("%s.%s %%zu\\n", offsetof(%s, %s));' %
                             (ctype, name, ctype, name))
        for c in CONSTANTS + LAYOUT_CONSTANTS:
            lines.append('\tprintf("%s %%lld\\n", (long long)(%s));' % (c, c))
        for i, (g, slot, layer, kv, head) in enumerate(LAYOUT_CASES):
            lines.append("\t{ struct kv_geometry g = { %s };" % ", ".join(map(str, g)))
            lines.append('\t  printf("frame%d %%llu\\n", (unsigned long long)kv_frame_bytes(&g));'
                         % i)
            lines.append('\t  printf("block%d %%llu\\n", (unsigned long long)kv_block_bytes(&g));'
                         % i)
            lines.append('\t  printf("scale%d %%llu\\n", (unsigned long long)'
                         'kv_scale_offset(&g, %d, %d, %d));' % (i, layer, kv, head))
            lines.append('\t  printf("token%d %%llu\\n", (unsigned long long)'
                         'kv_token_offset(&g, %d, %d, %d, %d)); }' % (i, slot, layer, kv, head))
        for i, g in enumerate(VALID_CASES):
            lines.append('\t{ struct kv_geometry g = { %s };' % ", ".join(map(str, g)))
            lines.append('\t  printf("valid%d %%d\\n", kv_geometry_valid(&g)); }' % i)
        lines += ["\treturn 0;", "}"]
        cls.tmp = tempfile.mkdtemp(prefix="kvmem-abi-")
        src = os.path.join(cls.tmp, "abi.c")
        exe = os.path.join(cls.tmp, "abi")
        with open(src, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = subprocess.run([cc, "-std=gnu11", "-D_GNU_SOURCE", "-I" + TOP, "-o", exe, src],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode:
            raise AssertionError("compiling the layout probe failed:\n" + r.stdout.decode())
        out = subprocess.run([exe], stdout=subprocess.PIPE, check=True).stdout.decode()
        cls.c = {}
        for line in out.splitlines():
            key, _, val = line.rpartition(" ")
            cls.c[key] = int(val)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_structs(self):
        for cls_, ctype in STRUCTS:
            with self.subTest(struct=ctype):
                self.assertEqual(ctypes.sizeof(cls_), self.c[ctype], "sizeof(%s)" % ctype)
                for name, _ in cls_._fields_:
                    self.assertEqual(getattr(cls_, name).offset, self.c["%s.%s" % (ctype, name)],
                                     "offsetof(%s, %s)" % (ctype, name))

    def test_constants(self):
        for c in CONSTANTS:
            with self.subTest(constant=c):
                self.assertEqual(getattr(_lib, c), self.c[c])
        for c in ("KVMEM_NOWAIT", "KVMEM_STEP_NOSLOTS", "KV_DTYPE_FP16", "KVMEM_DROP_DEMOTE"):
            self.assertEqual(getattr(kvmem, c), self.c[c])
        for c in LAYOUT_CONSTANTS:
            with self.subTest(constant=c):
                self.assertEqual(getattr(kvmem.layout, c), self.c[c])

    def test_layout(self):
        # kvmem.layout against uapi/kvmem/layout.h's functions, through a
        # geometry that pads its frames
        g = kvmem.Geometry(3, 2, 24, 5, kvmem.KV_DTYPE_BF16)
        self.assertEqual(g.head_bytes, 5 * 24 * 2)
        self.assertEqual(g.layer_bytes, 2 * 2 * g.head_bytes)
        self.assertEqual(g.block_bytes, 3 * g.layer_bytes)
        self.assertEqual(g.frame_bytes, 4096)
        self.assertEqual(g.token_offset(7, 2, kvmem.KV_V, 1),
                         4096 + 2 * g.layer_bytes + 3 * g.head_bytes + 2 * 24 * 2)
        self.assertEqual(g.blocks_for(11), 3)
        for i, (geo, slot, layer, kv, head) in enumerate(LAYOUT_CASES):
            g = kvmem.Geometry(*geo)
            self.assertEqual(g.frame_bytes, self.c["frame%d" % i], geo)
            self.assertEqual(g.block_bytes, self.c["block%d" % i], geo)
            self.assertEqual(g.scale_offset(layer, kv, head), self.c["scale%d" % i], geo)
            self.assertEqual(g.token_offset(slot, layer, kv, head), self.c["token%d" % i], geo)
        for i, geo in enumerate(VALID_CASES):
            self.assertEqual(kvmem.Geometry(*geo).valid, bool(self.c["valid%d" % i]), geo)

    def test_quantized_layout(self):
        # Llama 3 8B's block of 16 tokens, by hand: 8192 vectors of 128
        g = kvmem.Geometry(32, 8, 128, 16, kvmem.KV_DTYPE_INT8)
        self.assertEqual((g.dtype_name, g.dtype_bits, g.dtype_size), ("int8", 8, 0))
        self.assertTrue(g.quantized and g.valid)
        self.assertEqual(g.row_bytes, 128)
        self.assertEqual(g.head_scale_bytes, 4)
        self.assertEqual(g.block_bytes, 8192 * 128 + 2 * 32 * 8 * 4)     # 1026K
        self.assertEqual(g.frame_bytes, 257 * 4096)
        self.assertEqual(g.scale_offset(0, kvmem.KV_K, 0), 8192 * 128)
        self.assertEqual(g.scale_offset(1, kvmem.KV_V, 2), 8192 * 128 + (3 * 8 + 2) * 4)
        g = g._replace(dtype=kvmem.KV_DTYPE_FP8_E4M3)
        self.assertEqual((g.dtype_name, g.block_bytes), ("fp8", 1050624))
        g = g._replace(dtype=kvmem.KV_DTYPE_INT4)
        self.assertEqual((g.dtype_name, g.dtype_bits, g.row_bytes), ("int4", 4, 64))
        self.assertEqual(g.head_scale_bytes, 16 * 4 * 2)
        self.assertEqual(g.block_bytes, 8192 * (64 + 8))                 # 576K
        self.assertEqual(g.frame_bytes, g.block_bytes)
        self.assertEqual(g.elem_offset(1, kvmem.KV_V, 2, 3),
                         g.layer_bytes + (8 + 2) * 16 * 64 + 3 * 64)
        self.assertFalse(g._replace(head_dim=48).valid)
        self.assertTrue(g._replace(head_dim=48, dtype=kvmem.KV_DTYPE_BF16).valid)
        # the unquantized pools have no scales
        g = g._replace(dtype=kvmem.KV_DTYPE_BF16)
        self.assertEqual((g.dtype_bits, g.dtype_size, g.head_scale_bytes), (16, 2, 0))
        self.assertFalse(g.quantized)
        self.assertEqual(g.scale_offset(31, kvmem.KV_V, 7), g.block_bytes)
        self.assertEqual(kvmem.layout.DTYPES["fp8"], kvmem.KV_DTYPE_FP8_E4M3)


class LibraryTest(unittest.TestCase):

    def test_signatures(self):
        lib = _lib.lib()
        for name, (restype, argtypes) in _lib._SIGNATURES.items():
            fn = getattr(lib, name)
            self.assertEqual(fn.argtypes, argtypes, name)
        self.assertTrue(os.path.exists(_lib.lib_path()) or "/" not in _lib.lib_path())

    def test_kernels_library(self):
        lib = kernels.library("cpu")
        self.assertTrue(hasattr(lib, "kv_decode_cpu"))


if __name__ == "__main__":
    unittest.main()
