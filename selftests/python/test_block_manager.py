# SPDX-License-Identifier: MIT
"""kvmem.BlockManager (vLLM's block manager interface) against kvmemd."""

import errno
import struct
import unittest

import kvmem
from kvmem import AllocStatus
from kvmemd_fixture import DaemonTestCase


class FakeSeq:
    """The part of vLLM's Sequence the manager reads."""

    def __init__(self, seq_id, token_ids):
        self.seq_id = seq_id
        self._ids = list(token_ids)

    def get_token_ids(self):
        return self._ids


class FakeGroup:
    """The part of vLLM's SequenceGroup the manager reads."""

    def __init__(self, seqs):
        self._seqs = seqs

    def get_seqs(self, status=None):
        return self._seqs


def tag_bytes(tag):
    return struct.pack("16f", *[tag + i / 32.0 for i in range(16)])


class BlockManagerTest(DaemonTestCase):

    def setUp(self):
        self.bm = kvmem.BlockManager(self.daemon.sock, "default", watermark=0.01)
        self.start_free = self.bm.get_num_free_gpu_blocks()

    def tearDown(self):
        self.bm.close()

    def check_slots(self, seq_id, first_token, slots):
        bs = self.bm.block_size
        table = self.bm.get_block_table(seq_id)
        self.assertEqual(slots, [table[t // bs] * bs + t % bs
                                 for t in range(first_token, first_token + len(slots))])

    def test_shape(self):
        bm = self.bm
        self.assertEqual(bm.block_size, 4)
        self.assertEqual(bm.num_total_gpu_blocks, 64)
        self.assertEqual(bm.num_total_cpu_blocks, 256)
        self.assertEqual(self.start_free, 64)
        self.assertEqual(bm.get_num_free_cpu_blocks(), 256)
        self.assertEqual([s.name for s in AllocStatus], ["OK", "LATER", "NEVER"])

    def test_vllm_flow(self):
        bm = self.bm
        prompt = list(range(10, 20))                        # 10 tokens: 3 blocks
        self.assertIs(bm.can_allocate(prompt), AllocStatus.OK)
        slots = bm.allocate(1, prompt)
        self.assertEqual(len(slots), 10)
        self.check_slots(1, 0, slots)
        self.assertEqual(len(bm.get_block_table(1)), 3)
        self.assertEqual(bm.get_num_free_gpu_blocks(), self.start_free - 3)
        self.assertTrue(bm.can_append_slots([1]))
        # decode: one slot per step
        r = bm.append_slots(1, token_ids=[20])
        self.assertIsInstance(r, kvmem.AppendedSlots)
        self.assertEqual(r.cow, [])
        self.check_slots(1, 10, r.slots)
        # fork for parallel sampling: the shared last block is copied on write
        bm.fork(1, 2)
        self.assertEqual(bm.get_block_table(2), bm.get_block_table(1))
        self.assertEqual(bm.get_num_free_gpu_blocks(), self.start_free - 3)
        before = bm.get_block_table(1)
        r1 = bm.append_slots(1, token_ids=[21])
        self.assertEqual(len(r1.cow), 1)
        self.assertEqual(r1.cow[0][0], before[2])
        self.assertEqual(bm.get_block_table(1)[2], r1.cow[0][1])
        self.check_slots(1, 11, r1.slots)
        r2 = bm.append_slots(2, token_ids=[22])             # its block is its own now
        self.assertEqual(r2.cow, [])
        self.check_slots(2, 11, r2.slots)
        self.assertEqual(bm.get_block_table(2), before)
        self.assertEqual(bm.get_num_free_gpu_blocks(), self.start_free - 4)
        # a batch in one step, crossing into a new block
        res = bm.append_slots_batch([(1, [23]), (2, 1)])
        self.check_slots(1, 12, res[0].slots)
        self.check_slots(2, 12, res[1].slots)
        self.assertEqual(bm.get_num_free_gpu_blocks(), self.start_free - 6)
        # swap out: unpinned (and demoted when admin); swap in: resident again
        self.assertTrue(bm.can_swap_out([1, 2]))
        self.assertEqual(bm.swap_out([1, 2]), [])
        self.assertTrue(bm.is_swapped_out(1))
        self.assertEqual(bm.get_num_free_gpu_blocks(), self.start_free)
        if bm.client.is_admin:
            self.assertGreater(bm.last_demoted, 0)
            self.assertLess(bm.get_num_free_cpu_blocks(), 256)
        with self.assertRaises(kvmem.KvmemError) as cm:
            bm.get_block_table(1)
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        self.assertIs(bm.can_swap_in([1, 2]), AllocStatus.OK)
        self.assertEqual(bm.swap_in(FakeGroup([FakeSeq(1, []), FakeSeq(2, [])])), [])
        self.assertFalse(bm.is_swapped_out(2))
        self.assertEqual(len(bm.get_block_table(1)), 4)
        self.assertEqual(bm.get_num_free_gpu_blocks(), self.start_free - 6)
        r = bm.append_slots(1, token_ids=[24])
        self.check_slots(1, 13, r.slots)
        # free: the counts come back to where they started
        bm.free(1)
        bm.free(FakeSeq(2, []))
        bm.free(99)                                         # unknown: ignored, as in vLLM
        self.assertEqual(bm.get_num_free_gpu_blocks(), self.start_free)
        self.assertEqual(bm.client.meminfo(bm.pool)["Sequences"], 0)
        with self.assertRaises(KeyError):
            bm.get_block_table(1)

    def test_can_allocate(self):
        bm = self.bm
        bs = bm.block_size
        self.assertIs(bm.can_allocate(10 ** 6), AllocStatus.NEVER)
        self.assertIs(bm.can_allocate(65 * bs), AllocStatus.NEVER)
        self.assertIs(bm.can_allocate(FakeGroup([FakeSeq(7, range(65 * bs))])),
                      AllocStatus.NEVER)
        self.assertIs(bm.can_allocate(40 * bs), AllocStatus.OK)
        bm.allocate(1, 40 * bs)                             # a count: no token ids
        self.assertEqual(bm.get_num_free_gpu_blocks(), self.start_free - 40)
        self.assertIs(bm.can_allocate(20 * bs), AllocStatus.OK)
        self.assertIs(bm.can_allocate(30 * bs), AllocStatus.LATER)
        # the watermark: vLLM's share, or the pool's min watermark when larger
        wm = max(bm.watermark_blocks, bm.client.meminfo(bm.pool)["DeviceMin"] * 1024 // 4096)
        self.assertIs(bm.can_allocate((64 - wm) * bs), AllocStatus.LATER)
        self.assertIs(bm.can_allocate((64 - wm) * bs + 1), AllocStatus.NEVER)
        bm.swap_out([1], demote=False)                      # unpinned: room again
        self.assertIs(bm.can_allocate(30 * bs), AllocStatus.OK)
        self.assertIs(bm.can_swap_in([1]), AllocStatus.OK)
        bm.allocate(2, 30 * bs)
        self.assertIs(bm.can_swap_in([1]), AllocStatus.LATER)
        bm.free(2)
        bm.free(1)
        self.assertEqual(bm.get_num_free_gpu_blocks(), self.start_free)
        with self.assertRaises(ValueError):
            bm.allocate(3, 4)
            bm.allocate(3, 4)                               # twice

    def test_watermark(self):
        bm = kvmem.BlockManager(self.bm.client, "default", watermark=0.25)
        try:
            self.assertEqual(bm.watermark_blocks, 16)
            self.assertIs(bm.can_allocate(48 * 4), AllocStatus.OK)
            self.assertIs(bm.can_allocate(49 * 4), AllocStatus.NEVER)
        finally:
            bm.close()
        self.assertFalse(self.bm.client.closed)             # not the manager's to close

    def test_group_allocate(self):
        bm = self.bm
        group = FakeGroup([FakeSeq(10, range(300, 306)), FakeSeq(11, range(300, 306))])
        self.assertIs(bm.can_allocate(group), AllocStatus.OK)
        slots = bm.allocate(group)
        self.assertEqual(len(slots), 6)
        self.assertEqual(bm.get_block_table(10), bm.get_block_table(11))
        self.assertEqual(bm.get_num_free_gpu_blocks(), self.start_free - 2)
        bm.free(group)
        self.assertEqual(bm.block_tables, {})
        self.assertEqual(bm.get_num_free_gpu_blocks(), self.start_free)
        # a fork that fails (seq_id 11 taken) frees what the group got
        bm.allocate(11, [1])
        group = FakeGroup([FakeSeq(10, range(6)), FakeSeq(12, range(6)), FakeSeq(11, range(6))])
        with self.assertRaises(ValueError):
            bm.allocate(group)
        self.assertEqual(sorted(bm.block_tables), [11])
        bm.free(11)
        self.assertEqual(bm.get_num_free_gpu_blocks(), self.start_free)

    def test_bad_append(self):
        bm = kvmem.BlockManager(self.bm.client, "default", reserve=4)
        try:
            bm.allocate(1, [1, 2])
            bm.allocate(2, [3])
            # a bad count fails the whole batch before any sequence grows
            with self.assertRaises(ValueError):
                bm.append_slots_batch([(1, 1), (2, -1)])
            self.assertEqual(bm.block_tables[1].tokens, 2)
            r = bm.append_slots_batch([(1, 1), (2, 1)])
            self.check_slots_of(bm, 1, 2, r[0].slots)
            self.check_slots_of(bm, 2, 1, r[1].slots)
            with self.assertRaises(KeyError):
                bm.append_slots_batch([(1, 1), (99, 1)])
            self.assertEqual(bm.block_tables[1].tokens, 3)
        finally:
            bm.close()
        self.assertEqual(self.bm.client.meminfo(self.bm.pool)["Sequences"], 0)

    def test_swap_keeps_kv(self):
        bm = self.bm
        pool = bm.pool
        slots = bm.allocate(1, list(range(700, 709)))
        for t, s in enumerate(slots):
            frame, off = pool.slot_location(s, 1, kvmem.KV_V, 1)
            pool.frame_write(frame, tag_bytes(t), off)
        bm.swap_out([1], demote=bm.client.is_admin)
        if bm.client.is_admin:
            meminfo = bm.client.meminfo(pool)
            self.assertEqual(meminfo["DeviceActive"] + meminfo["DeviceInactive"], 0)
        bm.swap_in([1])
        table = bm.get_block_table(1)
        for t in range(9):
            frame, off = pool.slot_location(table[t // 4] * 4 + t % 4, 1, kvmem.KV_V, 1)
            self.assertEqual(pool.frame_read(frame, 64, off), tag_bytes(t), "token %d" % t)
        bm.free(1)

    def test_prefix_cache(self):
        bm = self.bm
        prompt = list(range(900, 913))                      # 13 tokens
        slots = bm.allocate(1, prompt)
        self.assertEqual(bm.get_num_computed_tokens(1), 0)
        self.assertEqual(len(slots), 13)
        bm.append_slots(1, token_ids=[1])                   # the prompt's KV is written
        bm.free(1)
        slots = bm.allocate(2, prompt)
        self.assertEqual(bm.get_num_computed_tokens(2), 12)
        self.assertEqual(len(slots), 1)
        self.check_slots(2, 12, slots)
        bm.free(2)
        # without caching every token is computed
        nc = kvmem.BlockManager(bm.client, "default", enable_caching=False)
        try:
            self.assertEqual(len(nc.allocate(3, prompt)), 13)
            self.assertEqual(nc.get_num_computed_tokens(3), 0)
        finally:
            nc.close()
        self.assertEqual(bm.get_num_free_gpu_blocks(), self.start_free)

    def test_reserve(self):
        bm = kvmem.BlockManager(self.bm.client, "default", reserve=8)
        try:
            bm.allocate(1, list(range(5)))
            for i in range(10):
                r = bm.append_slots(1, token_ids=[100 + i])
                self.assertEqual(len(r.slots), 1)
                self.check_slots_of(bm, 1, 5 + i, r.slots)
            bm.fork(1, 2)
            r = bm.append_slots(2, token_ids=[7])           # the last block is shared
            self.check_slots_of(bm, 2, 15, r.slots)
            self.assertEqual(len(r.cow), 1)
            bm.truncate(2, 12)
            self.assertEqual(len(bm.get_block_table(2)), 3)
        finally:
            bm.close()
        self.assertEqual(self.bm.client.meminfo(self.bm.pool)["Sequences"], 0)

    def check_slots_of(self, bm, seq_id, first, slots):
        bs = bm.block_size
        table = bm.get_block_table(seq_id)
        self.assertEqual(slots, [table[t // bs] * bs + t % bs
                                 for t in range(first, first + len(slots))])


if __name__ == "__main__":
    unittest.main()
