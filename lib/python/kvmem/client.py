# SPDX-License-Identifier: MIT
"""The client API: libkvclient through ctypes.

One :class:`Client` is one connection to kvmemd (``struct kvc``). Every
call takes the connection's lock, so a Client may be shared by threads (the
C library asks for one thread at a time per connection; the lock gives
that). Errors are raised as :class:`KvmemError`, an ``OSError`` whose
``errno`` is the C function's negative return value, negated.

Sequence ids are plain ints (the daemon's 64-bit handles, local to the
connection); closing the client frees every sequence it holds.
"""

import ctypes
import errno as _errno
import os
import threading
from collections import namedtuple

from . import _lib
from .layout import Geometry

__all__ = ["Client", "Pool", "KvmemError", "PrefixMatch", "connect", "STATS_KINDS"]

STATS_KINDS = {
    "meminfo": _lib.KVMEM_STATS_MEMINFO,
    "vmstat": _lib.KVMEM_STATS_VMSTAT,
    "zoneinfo": _lib.KVMEM_STATS_ZONEINFO,
    "prefix": _lib.KVMEM_STATS_PREFIX,
    "topology": _lib.KVMEM_STATS_TOPOLOGY,
    "seqlen": _lib.KVMEM_STATS_SEQLEN,
}

BACKEND_NAMES = {_lib.KVMEM_BACKEND_CPU: "cpu", _lib.KVMEM_BACKEND_CUDA: "cuda"}

PrefixMatch = namedtuple("PrefixMatch", "tokens blocks tier_tokens")
Admit = namedtuple("Admit", "verdict free reclaimable reserve total pinned")
ADMIT_VERDICTS = {_lib.KVMEM_ADMIT_NOW: "now", _lib.KVMEM_ADMIT_LATER: "later",
                  _lib.KVMEM_ADMIT_NEVER: "never"}
PrefixMatch.__doc__ = """Result of Client.prefix_match(): tokens and blocks
matched, and of the tokens those found on each tier (device, host)."""


class KvmemError(OSError):
    """A libkvclient call failed.

    ``errno`` is the error number, ``name`` its symbol ("ENOENT"),
    ``strerror`` its text, ``message`` what failed (the C function and
    its arguments), and ``failed`` the index of the sequence that failed,
    for step(), activate() and the like (None elsewhere, or -1 when the
    daemon named none).
    """

    def __init__(self, err, message=None, failed=None):
        super().__init__(err, os.strerror(err))
        self.name = _errno.errorcode.get(err, "E%d" % err)
        self.message = message
        self.failed = failed

    def __str__(self):
        s = "[Errno %d %s] %s" % (self.errno, self.name, self.strerror)
        if self.message:
            s = "%s: %s" % (self.message, s)
        if self.failed is not None and self.failed >= 0:
            s += " (sequence at index %d)" % self.failed
        return s

    def __reduce__(self):
        return (KvmemError, (self.errno, self.message, self.failed))


def _check(ret, what, failed=None):
    if ret < 0:
        raise KvmemError(-ret, what, failed)
    return ret


def _u32_array(values):
    values = list(values)
    return (ctypes.c_uint32 * max(len(values), 1))(*values), len(values)


def _u64_array(values):
    values = list(values)
    return (ctypes.c_uint64 * max(len(values), 1))(*values), len(values)


def _count(n, what):
    """@n as a token count for a u32 of the ABI: ValueError if it is not one."""
    if not 0 <= n <= 0xffffffff:
        raise ValueError("%s: %r tokens (0..4294967295)" % (what, n))
    return n


def _name_bytes(name, what="name"):
    if isinstance(name, str):
        name = name.encode()
    if not isinstance(name, bytes):
        raise TypeError("%s must be str or bytes" % what)
    return name


def connect(path=None):
    """Connect to kvmemd: a :class:`Client`."""
    return Client(path)


class Pool:
    """An opened pool (struct kvc_pool), owned by its Client.

    Attributes: ``name``, ``handle``, ``geometry`` (:class:`Geometry`),
    ``frame_bytes``, ``block_bytes``, ``arena_bytes``, ``nr_frames``
    (frames per tier: device, host), ``backend`` ("cpu" or "cuda"),
    ``device_ptr`` (frame 0 for kernels: the mapped arena's address on the
    cpu backend; the CUdeviceptr after :meth:`map` on cuda), ``gpu`` and
    ``base`` (the arena's address in this process, cpu backend; 0 on cuda).
    The Pool is valid until its Client closes.
    """

    def __init__(self, client, name, ptr):
        self._client = client
        self._ptr = ptr
        self.name = name
        p = ptr.contents
        self.handle = p.handle
        self.geometry = Geometry.from_struct(p.geom)
        self.frame_bytes = p.frame_bytes
        self.arena_bytes = p.arena_bytes
        self.nr_frames = tuple(p.nr_frames)
        self.backend_id = p.backend
        self.backend = BACKEND_NAMES.get(p.backend, "backend%d" % p.backend)

    def _p(self):
        if self._client._c is None:
            raise ValueError("pool %r: its client is closed" % self.name)
        return self._ptr

    @property
    def block_bytes(self):
        return self.geometry.block_bytes

    @property
    def base(self):
        return self._p().contents.base or 0

    @property
    def device_ptr(self):
        return self._p().contents.device_ptr

    @property
    def gpu(self):
        return self._p().contents.gpu

    @property
    def block_tokens(self):
        return self.geometry.block_tokens

    def map(self):
        """kvc_pool_map(): map the arena here (loads the CUDA driver on the
        cuda backend; does nothing on cpu). Returns device_ptr."""
        with self._client._lock:
            _check(_lib.lib().kvc_pool_map(self._p()), "kvc_pool_map(%r)" % self.name)
            return self._ptr.contents.device_ptr

    def frame_read(self, frame, length=None, offset=0):
        """Read @length bytes (default: the rest of the frame) at @offset of
        device frame @frame: bytes."""
        if length is None:
            length = self.frame_bytes - offset
        buf = ctypes.create_string_buffer(length)
        with self._client._lock:
            _check(_lib.lib().kvc_frame_read(self._p(), frame, offset, buf, length),
                   "kvc_frame_read(frame %d, offset %d, %d bytes)" % (frame, offset, length))
        return buf.raw

    def frame_write(self, frame, data, offset=0):
        """Write the bytes @data at @offset of device frame @frame."""
        data = bytes(data)
        buf = ctypes.create_string_buffer(data, len(data))
        with self._client._lock:
            _check(_lib.lib().kvc_frame_write(self._p(), frame, offset, buf, len(data)),
                   "kvc_frame_write(frame %d, offset %d, %d bytes)" % (frame, offset, len(data)))

    def token_offset(self, slot, layer, kv, head):
        """Byte offset from device_ptr of a token's K (kv=0) or V (kv=1)."""
        return self.geometry.token_offset(slot, layer, kv, head)

    def slot_location(self, slot, layer, kv, head):
        """(frame, offset in frame) of a token's K or V head vector, for
        frame_read()/frame_write()."""
        off = self.geometry.token_offset(slot, layer, kv, head)
        return divmod(off, self.frame_bytes)

    def __repr__(self):
        g = self.geometry
        return ("<kvmem.Pool %r handle %d: %d layers, %d kv heads x %d, %d tokens/block, %s, "
                "%s backend, %d+%d frames>" % (self.name, self.handle, g.layers, g.kv_heads,
                                               g.head_dim, g.block_tokens, g.dtype_name,
                                               self.backend, self.nr_frames[0],
                                               self.nr_frames[1]))


class Client:
    """A connection to kvmemd (libkvclient's struct kvc).

    ``Client(path=None)`` connects at once: @path, else ``$KVMEM_SOCKET``,
    else /run/kvmemd/kvmemd.sock. Use it as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, path=None):
        self._lib = _lib.lib()
        self._lock = threading.RLock()
        self._pools = {}
        self._c = None
        c = ctypes.c_void_p()
        arg = None if path is None else os.fsencode(path)
        _check(self._lib.kvc_connect(arg, ctypes.byref(c)), "kvc_connect(%r)" % (path,))
        self._c = c
        self.path = path

    @classmethod
    def connect(cls, path=None):
        return cls(path)

    # ---- connection ------------------------------------------------------
    def close(self):
        """kvc_close(): the daemon frees every sequence of the connection."""
        with self._lock:
            if self._c is not None:
                self._lib.kvc_close(self._c)
                self._c = None
                self._pools = {}

    @property
    def closed(self):
        return self._c is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _h(self):
        if self._c is None:
            raise ValueError("kvmem client is closed")
        return self._c

    @property
    def client_id(self):
        return self._lib.kvc_client_id(self._h())

    @property
    def is_admin(self):
        return bool(self._lib.kvc_is_admin(self._h()))

    # ---- pools -----------------------------------------------------------
    def pool(self, name="default"):
        """kvc_pool_open(): the Pool @name. Opening a name again returns the
        same Pool (a connection may open 16 pools)."""
        if isinstance(name, Pool):
            return name
        with self._lock:
            pool = self._pools.get(name)
            if pool is None:
                ptr = ctypes.POINTER(_lib.KvcPool)()
                _check(self._lib.kvc_pool_open(self._h(), _name_bytes(name, "pool name"),
                                               ctypes.byref(ptr)),
                       "kvc_pool_open(%r)" % (name,))
                pool = Pool(self, name, ptr)
                self._pools[name] = pool
            return pool

    pool_open = pool

    def _pool(self, pool):
        return pool if isinstance(pool, Pool) else self.pool(pool)

    def _pool_handle(self, pool):
        if pool is None or pool == 0:
            return 0
        if isinstance(pool, int):
            return pool
        return self._pool(pool).handle

    # ---- sequences -------------------------------------------------------
    def seq_create(self, pool="default"):
        """kvc_seq_create(): a new, empty, inactive sequence of @pool."""
        p = self._pool(pool)
        seq = ctypes.c_uint64()
        with self._lock:
            _check(self._lib.kvc_seq_create(self._h(), p._p(), ctypes.byref(seq)),
                   "kvc_seq_create(%r)" % p.name)
        return seq.value

    def seq_fork(self, seq):
        """kvc_seq_fork(): a child sharing every block of @seq (inactive)."""
        child = ctypes.c_uint64()
        with self._lock:
            _check(self._lib.kvc_seq_fork(self._h(), seq, ctypes.byref(child)),
                   "kvc_seq_fork(%#x)" % seq)
        return child.value

    fork = seq_fork

    def seq_truncate(self, seq, nr_tokens):
        """kvc_seq_truncate(): keep the first @nr_tokens tokens of @seq."""
        with self._lock:
            _check(self._lib.kvc_seq_truncate(self._h(), seq, nr_tokens),
                   "kvc_seq_truncate(%#x, %d)" % (seq, nr_tokens))

    def seq_free(self, seq):
        """kvc_seq_free(): free @seq, active or not."""
        with self._lock:
            _check(self._lib.kvc_seq_free(self._h(), seq), "kvc_seq_free(%#x)" % seq)

    # ---- steps -----------------------------------------------------------
    def step(self, batch, flags=0):
        """kvc_step(): one engine step for a batch, in one round trip.

        @batch is a list of ``(seq, n_tokens, token_ids)`` (token_ids may be
        None or left out; n_tokens may be None when token_ids are given).
        Returns, per sequence, the list of slots of its new tokens (empty
        with KVMEM_STEP_NOSLOTS). On failure raises KvmemError whose
        ``failed`` is the index of the sequence that failed: those before
        it are done.
        """
        n = len(batch)
        if n == 0:
            raise ValueError("step: empty batch")
        arr = (_lib.KvcStepSeq * n)()
        keep = []
        slot_bufs = []
        for i, item in enumerate(batch):
            if isinstance(item, int):
                item = (item, 0, None)
            seq = item[0]
            nt = item[1] if len(item) > 1 else None
            ids = item[2] if len(item) > 2 else None
            if ids is not None:
                ids = list(ids)
                if nt is None:
                    nt = len(ids)
                elif nt != len(ids):
                    raise ValueError("step: sequence %d: %d tokens but %d token ids" %
                                     (i, nt, len(ids)))
            nt = _count(nt or 0, "step: sequence %d" % i)
            arr[i].seq = seq
            arr[i].nr_tokens = nt
            if ids is not None and nt:
                a, _ = _u32_array(ids)
                keep.append(a)
                arr[i].token_ids = ctypes.cast(a, ctypes.POINTER(ctypes.c_uint32))
            sb = (ctypes.c_uint64 * max(nt, 1))()
            slot_bufs.append((sb, nt))
            arr[i].slots = ctypes.cast(sb, ctypes.POINTER(ctypes.c_uint64))
        failed = ctypes.c_int32(-1)
        with self._lock:
            ret = self._lib.kvc_step(self._h(), arr, n, flags, ctypes.byref(failed))
        _check(ret, "kvc_step(%d sequences)" % n, failed.value)
        if flags & _lib.KVMEM_STEP_NOSLOTS:
            return [[] for _ in batch]
        return [list(sb[:nt]) for sb, nt in slot_bufs]

    def activate(self, seqs, flags=0):
        """kvc_activate(): make @seqs resident and pinned (all or nothing)."""
        arr, n = _u64_array(seqs)
        failed = ctypes.c_int32(-1)
        with self._lock:
            ret = self._lib.kvc_activate(self._h(), arr, n, flags, ctypes.byref(failed))
        _check(ret, "kvc_activate(%d sequences)" % n, failed.value)

    def deactivate(self, seqs):
        """kvc_deactivate(): unpin @seqs (a list, or one id)."""
        if isinstance(seqs, int):
            seqs = [seqs]
        arr, n = _u64_array(seqs)
        with self._lock:
            _check(self._lib.kvc_deactivate(self._h(), arr, n),
                   "kvc_deactivate(%d sequences)" % n)

    def block_table(self, seq):
        """kvc_block_table(): the frames of active sequence @seq, a list."""
        frames = ctypes.POINTER(ctypes.c_uint32)()
        nb = ctypes.c_uint32()
        with self._lock:
            _check(self._lib.kvc_block_table(self._h(), seq, ctypes.byref(frames),
                                             ctypes.byref(nb)),
                   "kvc_block_table(%#x)" % seq)
            return frames[:nb.value] if nb.value else []

    def append(self, seq, n):
        """kvc_append(): append @n tokens locally (no message); their slots.
        Raises KvmemError(EAGAIN) when the daemon is needed (use step())."""
        _count(n, "append")
        slots = (ctypes.c_uint64 * max(n, 1))()
        with self._lock:
            _check(self._lib.kvc_append(self._h(), seq, n, slots),
                   "kvc_append(%#x, %d)" % (seq, n))
        return list(slots[:n])

    def append_ids(self, seq, token_ids):
        """kvc_append_ids(): append tokens with their ids locally; slots."""
        ids, n = _u32_array(token_ids)
        slots = (ctypes.c_uint64 * max(n, 1))()
        with self._lock:
            _check(self._lib.kvc_append_ids(self._h(), seq, n, ids, slots),
                   "kvc_append_ids(%#x, %d)" % (seq, n))
        return list(slots[:n])

    def reserve(self, pool, nr):
        """kvc_reserve(): top the pool's local reserve up to @nr frames;
        the number of frames added."""
        p = self._pool(pool)
        with self._lock:
            return _check(self._lib.kvc_reserve(self._h(), p._p(), nr),
                          "kvc_reserve(%r, %d)" % (p.name, nr))

    def reserve_release(self, pool):
        """kvc_reserve_release(): give the free frames of the pool's local
        reserve back (those appends made blocks stay); the number given."""
        p = self._pool(pool)
        with self._lock:
            return _check(self._lib.kvc_reserve_release(self._h(), p._p()),
                          "kvc_reserve_release(%r)" % p.name)

    def admit(self, pool, nr_blocks):
        """kvc_admit(): would @nr_blocks new device blocks fit @pool now,
        later or never. An Admit: verdict ("now", "later", "never") and the
        device frame counts it came from (free, reclaimable, the caller's
        reserve, total, pinned). Nothing is allocated."""
        p = self._pool(pool)
        rep = _lib.KvmemAdmitReply()
        with self._lock:
            _check(self._lib.kvc_admit(self._h(), p._p(), nr_blocks, ctypes.byref(rep)),
                   "kvc_admit(%r, %d)" % (p.name, nr_blocks))
        return Admit(ADMIT_VERDICTS[rep.verdict], rep.free, rep.reclaimable, rep.reserve,
                     rep.total, rep.pinned)

    def sync(self):
        """kvc_sync(): tell the daemon of the tokens appended locally."""
        with self._lock:
            _check(self._lib.kvc_sync(self._h()), "kvc_sync()")

    # ---- prefix cache ----------------------------------------------------
    def prefix_match(self, seq, token_ids):
        """kvc_prefix_match(): start empty, inactive @seq with the longest
        cached prefix of @token_ids; a PrefixMatch (tokens matched, ...)."""
        ids, n = _u32_array(token_ids)
        hit = _lib.KvmemPrefixMatchReply()
        with self._lock:
            ret = self._lib.kvc_prefix_match(self._h(), seq, ids, n, ctypes.byref(hit))
        _check(ret, "kvc_prefix_match(%#x, %d tokens)" % (seq, n))
        return PrefixMatch(hit.tokens, hit.blocks, tuple(hit.tier_tokens))

    def prefix_pin(self, seq, name):
        """kvc_prefix_pin(): pin @seq's cached prefix as @name; tokens pinned."""
        with self._lock:
            return _check(self._lib.kvc_prefix_pin(self._h(), seq, _name_bytes(name)),
                          "kvc_prefix_pin(%#x, %r)" % (seq, name))

    def _prefix_op(self, name, op, pool, what):
        with self._lock:
            return _check(self._lib.kvc_prefix_name_op(self._h(), self._pool_handle(pool),
                                                       _name_bytes(name), op),
                          "%s(%r)" % (what, name))

    def prefix_unpin(self, name, pool=None):
        return self._prefix_op(name, _lib.KVMEM_PREFIX_UNPIN, pool, "prefix_unpin")

    def prefix_repin(self, name, pool=None):
        return self._prefix_op(name, _lib.KVMEM_PREFIX_REPIN, pool, "prefix_repin")

    def prefix_forget(self, name, pool=None):
        return self._prefix_op(name, _lib.KVMEM_PREFIX_FORGET, pool, "prefix_forget")

    # ---- administration and statistics ----------------------------------
    def _text(self, what, call):
        size = 64 * 1024
        while True:
            buf = ctypes.create_string_buffer(size)
            with self._lock:
                ret = call(buf, size)
            if ret == -_errno.ENOBUFS and size < 16 * _lib.KVMEM_MSG_MAX:
                size *= 4
                continue
            _check(ret, what)
            return buf.value.decode(errors="replace")

    def stats(self, kind="meminfo", pool=None):
        """kvc_stats(): the text of a report: "meminfo", "vmstat",
        "zoneinfo", "prefix" or "topology" (or a KVMEM_STATS_* value), for
        @pool (a Pool, a name, a handle) or every pool (None)."""
        what = STATS_KINDS.get(kind, kind) if isinstance(kind, str) else kind
        if isinstance(what, str):
            raise ValueError("unknown stats kind %r (one of %s)" % (kind, ", ".join(STATS_KINDS)))
        h = self._pool_handle(pool)
        return self._text("kvc_stats(%r)" % (kind,),
                          lambda b, n: self._lib.kvc_stats(self._h(), what, h, b, n))

    def meminfo(self, pool="default"):
        """The meminfo of one pool, parsed: {field: int} (kB fields in kB)."""
        out = {}
        for line in self.stats("meminfo", pool).splitlines():
            key, sep, val = line.partition(":")
            if not sep:
                continue
            tok = val.split()
            if tok and tok[0].isdigit():
                out[key.strip()] = int(tok[0])
            elif tok:
                out[key.strip()] = val.strip()
        return out

    def clients(self):
        """kvc_clients(): the daemon's clients, one line each."""
        return self._text("kvc_clients()", lambda b, n: self._lib.kvc_clients(self._h(), b, n))

    def sysctl_get(self, key):
        """kvc_sysctl_get(): the value of @key, a str."""
        k = _name_bytes(key, "key")
        return self._text("kvc_sysctl_get(%r)" % (key,),
                          lambda b, n: self._lib.kvc_sysctl_get(self._h(), k, b, n))

    def sysctl_set(self, key, value):
        """kvc_sysctl_set() (admin): set @key to @value (str or int)."""
        with self._lock:
            _check(self._lib.kvc_sysctl_set(self._h(), _name_bytes(key, "key"),
                                            _name_bytes(str(value), "value")),
                   "kvc_sysctl_set(%r, %r)" % (key, value))

    def drop_caches(self, pool=None, what=_lib.KVMEM_DROP_DEMOTE):
        """kvc_drop_caches() (admin): demote (KVMEM_DROP_DEMOTE) and/or drop
        the prefix cache (KVMEM_DROP_PREFIX) of @pool or every pool; the
        number of blocks demoted or dropped."""
        with self._lock:
            return _check(self._lib.kvc_drop_caches(self._h(), self._pool_handle(pool), what),
                          "kvc_drop_caches(%r, %#x)" % (pool, what))

    def checkpoint(self, pool=None):
        """kvc_checkpoint() (admin): write the prefix cache of @pool (or
        every pool with swap) to the swap area; cached blocks saved."""
        with self._lock:
            return _check(self._lib.kvc_checkpoint(self._h(), self._pool_handle(pool)),
                          "kvc_checkpoint(%r)" % (pool,))

    def frame_read(self, pool, frame, length=None, offset=0):
        return self._pool(pool).frame_read(frame, length, offset)

    def frame_write(self, pool, frame, data, offset=0):
        return self._pool(pool).frame_write(frame, data, offset)

    def request(self, opcode, body=b""):
        """kvc_request(): one raw request; (status, reply body bytes)."""
        body = bytes(body)
        buf = ctypes.create_string_buffer(body, len(body)) if body else None
        reply = ctypes.c_void_p()
        rlen = ctypes.c_size_t()
        with self._lock:
            ret = self._lib.kvc_request(self._h(), opcode, buf, len(body), ctypes.byref(reply),
                                        ctypes.byref(rlen))
            _check(ret, "kvc_request(opcode %d)" % opcode)
            data = ctypes.string_at(reply.value, rlen.value) if reply.value and rlen.value else b""
        return ret, data

    def __repr__(self):
        if self._c is None:
            return "<kvmem.Client closed>"
        return "<kvmem.Client %d%s>" % (self.client_id, " admin" if self.is_admin else "")
