# SPDX-License-Identifier: MIT
"""kvmem.Client against a real kvmemd: the client API round trip and the
mapping of errors to KvmemError."""

import ctypes
import errno
import os
import struct
import subprocess
import sys
import unittest

import kvmem
from kvmemd_fixture import DaemonTestCase


def vec(pool, tag):
    """A head vector of @pool's fp32 geometry, distinct per @tag."""
    hd = pool.geometry.head_dim
    return struct.pack("%df" % hd, *[tag + i / 64.0 for i in range(hd)])


def write_token(pool, slot, tag):
    """Write K and V of every layer and head of the token at @slot."""
    g = pool.geometry
    for layer in range(g.layers):
        for kv in (kvmem.KV_K, kvmem.KV_V):
            for head in range(g.kv_heads):
                frame, off = pool.slot_location(slot, layer, kv, head)
                pool.frame_write(frame, vec(pool, tag * 100 + layer * 10 + kv * 4 + head), off)


def read_k0(pool, slot):
    frame, off = pool.slot_location(slot, 0, kvmem.KV_K, 0)
    return pool.frame_read(frame, pool.geometry.head_dim * 4, off)


class ClientTest(DaemonTestCase):

    def setUp(self):
        self.c = kvmem.Client(self.daemon.sock)
        self.pool = self.c.pool("default")

    def tearDown(self):
        self.c.close()

    def test_pool(self):
        p = self.pool
        g = p.geometry
        self.assertEqual((g.layers, g.kv_heads, g.head_dim, g.block_tokens, g.dtype),
                         (2, 2, 16, 4, kvmem.KV_DTYPE_FP32))
        self.assertEqual(g.dtype_name, "fp32")
        self.assertEqual(g.block_bytes, 2 * 2 * 2 * 4 * 16 * 4)
        self.assertEqual(p.frame_bytes, 4096)
        self.assertEqual(p.frame_bytes, g.frame_bytes)
        self.assertEqual(p.backend, "cpu")
        self.assertEqual(p.nr_frames, (64, 256))
        self.assertEqual(p.arena_bytes, 64 * 4096)
        self.assertNotEqual(p.device_ptr, 0)
        self.assertEqual(p.device_ptr, p.base)
        self.assertEqual(p.map(), p.device_ptr)     # nothing to do on cpu
        self.assertIs(self.c.pool("default"), p)
        h = self.c.pool("half")
        self.assertNotEqual(h.handle, p.handle)
        self.assertEqual(h.geometry.dtype_name, "fp16")
        self.assertIn("'default'", repr(p))
        self.assertGreater(self.c.client_id, 0)

    def test_admit(self):
        c = self.c
        a = c.admit(self.pool, 1)
        self.assertEqual(a.verdict, "now")
        self.assertEqual(a.total, 64)
        self.assertEqual(a.pinned, 0)
        self.assertEqual(c.admit(self.pool, 65).verdict, "never")
        # 40 blocks pinned by an active sequence: 40 more fit only later.
        seq = c.seq_create(self.pool)
        c.step([(seq, 40 * 4, None)])
        a = c.admit(self.pool, 40)
        self.assertEqual(a.verdict, "later")
        self.assertEqual(a.pinned, 40)
        self.assertEqual(c.admit(self.pool, 20).verdict, "now")
        with self.assertRaises(kvmem.KvmemError) as e:
            c.admit(self.pool, 0)
        self.assertEqual(e.exception.errno, errno.EINVAL)
        c.seq_free(seq)

    def test_round_trip(self):
        c, p = self.c, self.pool
        bt = p.block_tokens
        seq = c.seq_create(p)
        ids = list(range(1000, 1006))
        [slots] = c.step([(seq, len(ids), ids)])
        self.assertEqual(len(slots), 6)
        table = c.block_table(seq)
        self.assertEqual(len(table), 2)
        for t, s in enumerate(slots):
            self.assertEqual(s, table[t // bt] * bt + t % bt)
        # K and V through frame_write, read back with frame_read and the mapping
        for t, s in enumerate(slots):
            write_token(p, s, t + 1)
        for t, s in enumerate(slots):
            self.assertEqual(read_k0(p, s), vec(p, (t + 1) * 100))
            off = p.token_offset(s, 1, kvmem.KV_V, 1)
            raw = ctypes.string_at(p.device_ptr + off, 64)
            self.assertEqual(raw, vec(p, (t + 1) * 100 + 10 + 4 + 1))
        # decode steps: a batch of one, with and without ids
        [[s6]] = c.step([(seq, 1, [1006])])
        self.assertEqual(s6, table[1] * bt + 2)
        [[s7]] = c.step([(seq, 1)])
        self.assertEqual(s7, table[1] * bt + 3)
        write_token(p, s6, 7)
        write_token(p, s7, 8)
        # fork: the child shares every block; appending copies the shared last one
        child = c.seq_fork(seq)
        self.assertNotEqual(child, seq)
        c.activate([child])
        self.assertEqual(c.block_table(child), table)
        [[cs]] = c.step([(child, 1)])
        ctable = c.block_table(child)
        self.assertEqual(len(ctable), 3)
        self.assertEqual(ctable[:2], table)                 # full blocks stay shared
        self.assertEqual(cs, ctable[2] * bt)
        c.seq_truncate(child, 7)                            # drop the new token
        [[cs]] = c.step([(child, 1)])                       # into the shared block 1
        ctable = c.block_table(child)
        self.assertEqual(ctable[0], table[0])
        self.assertNotEqual(ctable[1], table[1])            # copied on write
        self.assertEqual(cs, ctable[1] * bt + 3)
        for t in range(4, 7):                               # with the tokens before it
            self.assertEqual(read_k0(p, ctable[1] * bt + t % bt),
                             read_k0(p, table[1] * bt + t % bt))
        self.assertEqual(c.block_table(seq), table)         # the parent is unchanged
        # truncate and free
        c.seq_truncate(seq, 3)
        self.assertEqual(c.block_table(seq), table[:1])
        c.deactivate([seq, child])
        with self.assertRaises(kvmem.KvmemError) as cm:
            c.block_table(seq)
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        c.seq_free(seq)
        c.seq_free(child)
        with self.assertRaises(kvmem.KvmemError) as cm:
            c.seq_free(seq)
        self.assertEqual(cm.exception.errno, errno.ENOENT)

    def test_step_batch(self):
        c = self.c
        seqs = [c.seq_create(self.pool) for _ in range(3)]
        res = c.step([(s, i + 1, None) for i, s in enumerate(seqs)])
        self.assertEqual([len(r) for r in res], [1, 2, 3])
        allslots = [s for r in res for s in r]
        self.assertEqual(len(set(allslots)), 6)
        res = c.step([(s, 0) for s in seqs], kvmem.KVMEM_STEP_NOSLOTS)
        self.assertEqual(res, [[], [], []])
        with self.assertRaises(ValueError):
            c.step([(seqs[0], 2, [1])])                     # ids do not match the count
        with self.assertRaises(kvmem.KvmemError) as cm:
            c.step([(seqs[0], 1), (0xdead0000beef, 1)])
        self.assertEqual(cm.exception.errno, errno.ENOENT)
        for s in seqs:
            c.seq_free(s)

    def test_local_append(self):
        c, p = self.c, self.pool
        seq = c.seq_create(p)
        c.step([(seq, 1, [5])])
        got = c.reserve(p, 8)
        self.assertGreater(got, 0)
        slots = c.append_ids(seq, [6, 7, 8, 9, 10])         # into a new block of the reserve
        slots += c.append(seq, 2)
        self.assertEqual(c.reserve_release(p), got - 1)     # the rest goes back
        self.assertEqual(c.reserve_release(p), 0)
        table = c.block_table(seq)                          # syncs with the daemon
        bt = p.block_tokens
        self.assertEqual(slots, [table[t // bt] * bt + t % bt for t in range(1, 8)])
        c.deactivate(seq)
        with self.assertRaises(kvmem.KvmemError) as cm:     # the daemon is needed
            c.append(seq, 1)
        self.assertEqual(cm.exception.errno, errno.EAGAIN)
        with self.assertRaises(ValueError):                 # not a u32 count
            c.append(seq, -1)
        with self.assertRaises(ValueError):
            c.step([(seq, -1)])
        c.sync()
        c.seq_free(seq)

    def test_prefix_match(self):
        c, p = self.c, self.pool
        prompt = list(range(500, 513))                      # 3 whole blocks and 1 token
        a = c.seq_create(p)
        [slots] = c.step([(a, len(prompt), prompt)])
        for t, s in enumerate(slots):
            write_token(p, s, 40 + t)
        atable = c.block_table(a)
        c.deactivate([a])                                   # its whole blocks enter the cache
        b = c.seq_create(p)
        hit = c.prefix_match(b, prompt[:-1])
        self.assertIsInstance(hit, kvmem.PrefixMatch)
        self.assertEqual(hit.tokens, 12)
        self.assertEqual(hit.blocks, 3)
        self.assertEqual(sum(hit.tier_tokens), 12)
        [bslots] = c.step([(b, 1, prompt[12:])])
        btable = c.block_table(b)
        self.assertEqual(len(btable), 4)
        for t in range(12):                                 # the K and V that a wrote
            self.assertEqual(read_k0(p, btable[t // 4] * 4 + t % 4), vec(p, (40 + t) * 100))
        self.assertEqual(bslots, [btable[3] * 4])
        self.assertNotEqual(btable[3], atable[3])
        # a different prompt finds nothing; an active or non-empty sequence is refused
        d = c.seq_create(p)
        self.assertEqual(c.prefix_match(d, [1, 2, 3, 4, 5]).tokens, 0)
        with self.assertRaises(kvmem.KvmemError) as cm:
            c.prefix_match(b, prompt)
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        # a named prefix
        c.deactivate([b])
        self.assertEqual(c.prefix_pin(b, "pytest_prompt"), 12)
        with self.assertRaises(kvmem.KvmemError) as cm:
            c.prefix_pin(b, "pytest_prompt")
        self.assertEqual(cm.exception.errno, errno.EEXIST)
        self.assertIn("pytest_prompt", c.stats("prefix"))
        c.prefix_forget("pytest_prompt", p)
        with self.assertRaises(kvmem.KvmemError) as cm:
            c.prefix_unpin("pytest_prompt")
        self.assertEqual(cm.exception.errno, errno.ENOENT)
        for s in (a, b, d):
            c.seq_free(s)

    def test_errors(self):
        c = self.c
        with self.assertRaises(kvmem.KvmemError) as cm:
            c.pool("no_such_pool")
        e = cm.exception
        self.assertIsInstance(e, OSError)
        self.assertEqual(e.errno, errno.ENOENT)
        self.assertEqual(e.name, "ENOENT")
        self.assertEqual(e.strerror, os.strerror(errno.ENOENT))
        self.assertIn("ENOENT", str(e))
        self.assertIn("no_such_pool", str(e))
        with self.assertRaises(kvmem.KvmemError) as cm:
            c.pool("x" * 40)
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        with self.assertRaises(kvmem.KvmemError) as cm:
            c.seq_fork(12345)
        self.assertEqual(cm.exception.errno, errno.ENOENT)
        with self.assertRaises(kvmem.KvmemError) as cm:
            c.sysctl_get("no.such.key")
        self.assertEqual(cm.exception.errno, errno.ENOENT)
        with self.assertRaises(kvmem.KvmemError) as cm:
            self.pool.frame_read(0, 16, self.pool.frame_bytes - 8)
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        with self.assertRaises(kvmem.KvmemError) as cm:
            c.stats(99)
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        with self.assertRaises(ValueError):
            c.stats("nonsense")
        with self.assertRaises(kvmem.KvmemError) as cm:
            kvmem.Client(os.path.join(self.daemon.dir, "no-such-socket"))
        self.assertEqual(cm.exception.errno, errno.ENOENT)

    def test_stats_and_sysctl(self):
        c = self.c
        m = c.stats("meminfo")
        self.assertIn("DeviceTotal:", m)
        self.assertIn("pgalloc_device", c.stats("vmstat"))
        self.assertIn("Pool default", c.stats(kvmem.KVMEM_STATS_ZONEINFO, self.pool))
        self.assertIn("default", c.stats("topology"))
        info = c.meminfo(self.pool)
        self.assertEqual(info["DeviceTotal"], 256)
        self.assertEqual(info["FrameBytes"], 4096)
        self.assertIn("\n", c.clients() + "\n")
        self.assertEqual(c.sysctl_get("vm.watermark_scale_factor"), "10")
        if not c.is_admin:
            with self.assertRaises(kvmem.KvmemError) as cm:
                c.sysctl_set("vm.watermark_scale_factor", 20)
            self.assertEqual(cm.exception.errno, errno.EPERM)
            return
        c.sysctl_set("vm.watermark_scale_factor", 20)
        self.assertEqual(c.sysctl_get("vm.watermark_scale_factor"), "20")
        c.sysctl_set("vm.watermark_scale_factor", "10")
        with self.assertRaises(kvmem.KvmemError) as cm:
            c.sysctl_set("vm.watermark_scale_factor", "abc")
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        self.assertGreaterEqual(c.drop_caches(self.pool), 0)
        self.assertGreaterEqual(c.drop_caches(None, kvmem.KVMEM_DROP_PREFIX), 0)
        with self.assertRaises(kvmem.KvmemError) as cm:
            c.checkpoint()                                  # no swap area
        self.assertIn(cm.exception.errno, (errno.ENODEV, errno.ENOENT))

    def test_request(self):
        # CLIENTS (opcode from uapi/kvmem/kvmem.h) has an empty request body
        status, body = self.c.request(self._opcode("KVMEM_OP_CLIENTS"))
        self.assertEqual(status, 0)
        text = body.rstrip(b"\0").decode()
        self.assertEqual(text.splitlines()[0], self.c.clients().splitlines()[0])
        self.assertIn(" %d " % self.c.client_id, text)

    @staticmethod
    def _opcode(name):
        import re
        hdr = os.path.join(os.environ.get("TOP", os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__))))), "uapi", "kvmem", "kvmem.h")
        with open(hdr) as f:
            for line in f:
                m = re.match(r"\s*(?:#define\s+)?%s\s*=?\s*(\d+)" % name, line)
                if m:
                    return int(m.group(1))
        raise unittest.SkipTest("%s not found in %s" % (name, hdr))

    def test_close(self):
        c = kvmem.Client(self.daemon.sock)
        p = c.pool("default")
        s = c.seq_create(p)
        with c:
            c.step([(s, 2)])
        self.assertTrue(c.closed)
        with self.assertRaises(ValueError):
            p.device_ptr
        with self.assertRaises(ValueError):
            c.seq_create(p)
        c.close()                                           # twice is fine
        # the daemon freed the sequence of the closed connection
        self.assertEqual(self.c.meminfo()["Sequences"], 0)


class QuantizedPoolTest(DaemonTestCase):
    """Pools of dtype int8, fp8 and int4: the geometry the client gets, and
    frames that hold the scales after the values (layout.h)."""

    pools = """
pool.i8.layers = 2
pool.i8.kv_heads = 2
pool.i8.head_dim = 64
pool.i8.block_tokens = 16
pool.i8.dtype = int8
pool.i8.device_mem = 256K
pool.i8.host_mem = 0
pool.f8.layers = 2
pool.f8.kv_heads = 2
pool.f8.head_dim = 64
pool.f8.block_tokens = 16
pool.f8.dtype = fp8
pool.f8.device_mem = 256K
pool.f8.host_mem = 0
pool.i4.layers = 3
pool.i4.kv_heads = 4
pool.i4.head_dim = 96
pool.i4.block_tokens = 8
pool.i4.dtype = int4
pool.i4.device_mem = 256K
pool.i4.host_mem = 0
"""

    def test_geometry(self):
        with kvmem.Client(self.daemon.sock) as c:
            for name, dtype, dname, block in (
                    ("i8", kvmem.KV_DTYPE_INT8, "int8", 2 * 2 * 2 * 16 * 64 + 2 * 2 * 2 * 4),
                    ("f8", kvmem.KV_DTYPE_FP8_E4M3, "fp8", 2 * 2 * 2 * 16 * 64 + 2 * 2 * 2 * 4),
                    # 48 bytes of values and 3 binary16 scales a vector
                    ("i4", kvmem.KV_DTYPE_INT4, "int4", 3 * 2 * 4 * 8 * (48 + 6))):
                p = c.pool(name)
                g = p.geometry
                self.assertEqual((g.dtype, g.dtype_name), (dtype, dname))
                self.assertTrue(g.quantized)
                self.assertEqual(g.block_bytes, block)
                self.assertEqual(p.frame_bytes, g.frame_bytes)
                self.assertEqual(p.nr_frames[0], 256 * 1024 // g.frame_bytes)
                zi = c.stats(kvmem.KVMEM_STATS_ZONEINFO, p)
                self.assertIn("block_tokens %d %s\n" % (g.block_tokens, dname), zi)
                self.assertIn("block      %d bytes, frame %d bytes" % (block, g.frame_bytes), zi)

    def test_scales_in_the_frame(self):
        # the client writes and reads a block's scales where layout.h puts them
        with kvmem.Client(self.daemon.sock) as c:
            p = c.pool("i4")
            g = p.geometry
            seq = c.seq_create(p)
            [slots] = c.step([(seq, 3)])
            frame = slots[0] // g.block_tokens
            off = g.scale_offset(2, kvmem.KV_V, 3) + 2 * 2 * g.head_dim // 32
            data = struct.pack("<3e", 0.5, 1.0, 2.0)
            p.frame_write(frame, data, off)
            self.assertEqual(p.frame_read(frame, 6, off), data)
            self.assertEqual(off + 6 + 2 * (g.block_tokens - 3) * 3, g.block_bytes)
            c.seq_free(seq)


class EnvironmentTest(DaemonTestCase):

    def test_kvmem_socket(self):
        env = dict(os.environ, KVMEM_SOCKET=self.daemon.sock)
        out = subprocess.run([sys.executable, "-c",
                              "import kvmem; c = kvmem.connect(); print(c.pool().name)"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertEqual(out.returncode, 0, out.stdout)
        self.assertEqual(out.stdout.strip(), b"default")

    def test_library_not_found(self):
        env = dict(os.environ, KVMEM_LIBKVCLIENT="/nonexistent/libkvclient.so")
        out = subprocess.run([sys.executable, "-c",
                              "import kvmem\n"
                              "try:\n    kvmem.Client('/nonexistent')\n"
                              "except ImportError as e:\n    print('ImportError', e)\n"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertEqual(out.returncode, 0, out.stdout)
        self.assertIn(b"ImportError", out.stdout)
        self.assertIn(b"KVMEM_LIBKVCLIENT", out.stdout)

    def test_no_torch_needed(self):
        # importing kvmem (and kvmem.kernels) must not import torch
        out = subprocess.run([sys.executable, "-c",
                              "import sys; sys.modules['torch'] = None\n"
                              "import kvmem, kvmem.kernels as K\n"
                              "assert not K.torch_available()\n"
                              "try:\n    K.decode(None, 0, None, None, None)\n"
                              "except ImportError as e:\n    print('ImportError', e)\n"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertEqual(out.returncode, 0, out.stdout)
        self.assertIn(b"needs PyTorch", out.stdout)


if __name__ == "__main__":
    unittest.main()
