# SPDX-License-Identifier: MIT
"""A Hugging Face model with its KV cache in kvmem (kvmem.hf) generates the
same tokens as with transformers' own cache and attention: a Llama model
(GQA 4:1) and a Qwen2 model (GQA 7:1) with random weights, a batch of
left-padded prompts of different lengths, 64 greedy tokens, on a GPU
(kvmemd on the cuda backend, the CUDA kernels). Random weights make near
ties common, so there tokens may part only where the reference's top two
logits are within bf16 tolerance; the same models trained for a few
seconds on a synthetic rule (hf_compare.rule()) make
clear choices and must give exactly the same 64 tokens. Every step is also
checked teacher-forced (the kvmem path fed the reference's tokens): logits
within tolerance, the same argmax wherever it is clear. Skipped without
torch, transformers, a GPU or the CUDA kernels library."""

import os
import unittest

from kvmemd_fixture import Kvmemd

try:
    import torch
    import transformers  # noqa: F401
    HAVE = torch.cuda.is_available()
    WHY = "no CUDA GPU"
except ImportError as e:
    HAVE, WHY = False, "no %s" % e.name


@unittest.skipUnless(HAVE, WHY)
@unittest.skipUnless(os.environ.get("KVMEM_LIBKVKERNELS_CUDA"), "no libkvkernels_cuda.so")
class TestHf(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from kvmem import hf_compare
        cls.cmp = hf_compare
        cls.d = Kvmemd(pools=hf_compare.kvmemd_pools(), backend="cuda")

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def check(self, kind, steps=0):
        from kvmem import Client
        with Client(self.d.sock) as c:
            r = self.cmp.compare(kind, c, "cuda", 64, steps=steps)
            print("\n" + self.cmp.HEADER + "\n" + self.cmp.row(r))
            self.assertEqual("", self.cmp.verdict(r), r)
            # Every sequence was freed: nothing left in the pool.
            self.assertEqual(0, c.meminfo(kind)["Sequences"])

    def test_llama_gqa(self):
        self.check("llama")

    def test_qwen2(self):
        self.check("qwen2")

    def test_llama_gqa_trained(self):
        self.check("llama", self.cmp.TRAIN_STEPS)

    def test_qwen2_trained(self):
        self.check("qwen2", self.cmp.TRAIN_STEPS)


if __name__ == "__main__":
    unittest.main()
