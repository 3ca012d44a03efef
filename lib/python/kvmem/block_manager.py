# SPDX-License-Identifier: MIT
"""A block manager in the shape of vLLM's BlockSpaceManager, over kvmemd.

vLLM's scheduler asks its block manager whether a request fits
(``can_allocate``), allocates its prompt's blocks, appends a slot per
decode step, forks sequences for parallel sampling, swaps sequence groups
out to CPU memory and back, and reads block tables for the model runner.
:class:`BlockManager` answers the same calls with the blocks of a kvmemd
pool: the blocks live in the daemon, which reference-counts them, copies
them on write, keeps them in its LRU lists, moves them between the device
and host tiers and caches prompt prefixes. See Documentation/python.md for
what differs from vLLM.

Sequences are named by vLLM's ``seq_id`` (any hashable, usually an int);
the manager maps each to a kvmem sequence handle of its connection. Most
methods take a seq_id, a list of them, or (duck-typed) a vLLM
``Sequence`` (``.seq_id``, ``.get_token_ids()``) or ``SequenceGroup``
(``.get_seqs()``).
"""

import enum
import errno
from collections import namedtuple

from . import _lib
from .client import Client, KvmemError

__all__ = ["AllocStatus", "AppendedSlots", "BlockManager"]


class AllocStatus(enum.Enum):
    """vLLM's AllocStatus: the request fits now (OK), once running requests
    finish (LATER), or never, being larger than the pool (NEVER)."""
    OK = enum.auto()
    LATER = enum.auto()
    NEVER = enum.auto()


AppendedSlots = namedtuple("AppendedSlots", "slots cow")
AppendedSlots.__doc__ = """Result of BlockManager.append_slots(): the slots
of the new tokens (frame * block_size + offset: where the model runner
writes their K and V), and copy-on-write pairs (old frame, new frame) of
blocks that the daemon has copied already (information only: unlike
vLLM's blocks_to_copy, the engine has nothing to copy)."""


class _Seq:
    __slots__ = ("handle", "tokens", "active", "computed", "ids_known")

    def __init__(self, handle, tokens=0, active=False, computed=0, ids_known=True):
        self.handle = handle
        self.tokens = tokens
        self.active = active
        self.computed = computed
        self.ids_known = ids_known


def _seq_ids(x):
    """seq_ids named by @x: an id, a Sequence, a SequenceGroup or a list."""
    if hasattr(x, "get_seqs"):
        return [s.seq_id for s in x.get_seqs()]
    if hasattr(x, "seq_id"):
        return [x.seq_id]
    if isinstance(x, (list, tuple, set, frozenset)):
        return [s.seq_id if hasattr(s, "seq_id") else s for s in x]
    return [x]


def _token_count(x):
    """Tokens of a request: an int, a list of token ids, a Sequence or a
    SequenceGroup (its first sequence)."""
    if isinstance(x, int):
        return x
    if hasattr(x, "get_seqs"):
        seqs = x.get_seqs()
        return len(seqs[0].get_token_ids()) if seqs else 0
    if hasattr(x, "get_token_ids"):
        return len(x.get_token_ids())
    return len(x)


class BlockManager:
    """vLLM's BlockSpaceManager over a kvmemd pool.

    @client: a :class:`Client`, a socket path, or None (connect to the
    default socket); a connection the manager opened is closed by
    :meth:`close`. @pool: the pool's name. @watermark: as vLLM's, the share
    of the device blocks kept free when admitting requests
    (``watermark_blocks = int(watermark * num_gpu_blocks)``, and at least the
    pool's min watermark). @enable_caching: match each prompt against the
    daemon's prefix cache in :meth:`allocate`. @reserve: frames of a local
    reserve (kvc_reserve) so that appends into new blocks need no round trip
    (0: every append is a STEP). @demote_on_swap_out: make :meth:`swap_out`
    ask the daemon to demote the pool's unpinned device blocks to the host
    tier at once (admin only; pool-wide); None: when the connection is admin.
    """

    def __init__(self, client=None, pool="default", watermark=0.01, enable_caching=True,
                 reserve=0, demote_on_swap_out=None):
        if isinstance(client, Client):
            self.client = client
            self._own_client = False
        else:
            self.client = Client(client)
            self._own_client = True
        try:
            self._setup(pool, watermark, enable_caching, reserve, demote_on_swap_out)
        except BaseException:
            if self._own_client:
                self.client.close()
            raise

    def _setup(self, pool, watermark, enable_caching, reserve, demote_on_swap_out):
        self.pool = self.client.pool(pool)
        self.block_size = self.pool.block_tokens
        self.num_total_gpu_blocks = self.pool.nr_frames[_lib.KVMEM_TIER_DEVICE]
        self.num_total_cpu_blocks = self.pool.nr_frames[_lib.KVMEM_TIER_HOST]
        self.watermark = watermark
        self.watermark_blocks = int(watermark * self.num_total_gpu_blocks)
        self.enable_caching = enable_caching
        self.reserve = reserve
        if demote_on_swap_out is None:
            demote_on_swap_out = self.client.is_admin
        self.demote_on_swap_out = demote_on_swap_out
        self.block_tables = {}      # seq_id -> _Seq (vLLM's name, kvmem's state)
        self.last_demoted = 0
        if reserve:
            self.client.reserve(self.pool, reserve)

    # ---- bookkeeping -----------------------------------------------------
    def close(self):
        """Free every sequence of the manager (and close its own client)."""
        if self.client.closed:
            return
        self.reset()
        if self._own_client:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _get(self, seq_id):
        try:
            return self.block_tables[seq_id]
        except KeyError:
            raise KeyError("kvmem BlockManager: unknown seq_id %r" % (seq_id,)) from None

    def handle(self, seq_id):
        """The kvmem sequence handle of @seq_id."""
        return self._get(seq_id).handle

    def _blocks(self, tokens):
        return self.pool.geometry.blocks_for(tokens)

    def _meminfo_blocks(self):
        """The pool's meminfo, kB fields as blocks: {field: blocks}."""
        m = self.client.meminfo(self.pool)
        fb = self.pool.frame_bytes
        return {k: (v * 1024 // fb if isinstance(v, int) else v) for k, v in m.items()}

    def _watermark(self, m):
        return max(self.watermark_blocks, m.get("DeviceMin", 0))

    # ---- capacity --------------------------------------------------------
    def get_num_free_gpu_blocks(self):
        """Device blocks that a new request can have: those no active
        (running) sequence pins. Blocks of inactive (swapped-out) sequences
        and of the prefix cache count as free: the daemon reclaims them
        (demotes them to the host tier, or evicts cached ones) on demand."""
        m = self._meminfo_blocks()
        return max(m["DeviceTotal"] - m["DevicePinned"] - m.get("DeviceLocked", 0), 0)

    def get_num_free_cpu_blocks(self):
        """Free frames of the pool's host tier."""
        return self._meminfo_blocks().get("HostFree", 0)

    def _fit(self, required):
        """vLLM's verdict on the daemon's (ADMIT): NEVER beyond the device
        tier less the watermark; OK when what is free, what reclaim could
        free now and this client's reserve leave the watermark; else LATER."""
        wm = self._watermark(self._meminfo_blocks())
        a = self.client.admit(self.pool, max(required, 1))
        if a.verdict == "never" or a.total - required < wm:
            return AllocStatus.NEVER
        if a.free + a.reclaimable + a.reserve - required >= wm:
            return AllocStatus.OK
        return AllocStatus.LATER

    def can_allocate(self, request, num_lookahead_slots=0):
        """AllocStatus for a request of @request tokens (an int, a list of
        token ids, a vLLM Sequence or SequenceGroup), as vLLM decides it:
        NEVER when the pool's device tier minus the watermark is smaller,
        OK when the blocks the daemon could give now (ADMIT: free, reclaimable
        at once, this client's reserve) minus the request keep the
        watermark, else LATER. Cached prefixes are not counted (the answer
        is safe)."""
        return self._fit(self._blocks(_token_count(request) + num_lookahead_slots))

    def can_append_slots(self, seqs, num_lookahead_slots=0):
        """vLLM's test: one free device block per running sequence."""
        n = len(_seq_ids(seqs))
        return n * (1 + self._blocks(num_lookahead_slots)) <= self.get_num_free_gpu_blocks()

    def can_swap_in(self, seqs, num_lookahead_slots=0):
        """AllocStatus for making the swapped-out sequences @seqs resident."""
        need = 0
        for sid in _seq_ids(seqs):
            st = self._get(sid)
            if not st.active:
                need += self._blocks(st.tokens + num_lookahead_slots)
        return self._fit(need)

    def can_swap_out(self, seqs):
        """Whether the host tier has room for the blocks of @seqs."""
        if not self.num_total_cpu_blocks:
            return False
        need = sum(self._blocks(self._get(s).tokens) for s in _seq_ids(seqs))
        return need <= self.get_num_free_cpu_blocks()

    # ---- sequences -------------------------------------------------------
    def allocate(self, seq, prompt_token_ids=None):
        """Allocate the prompt of a new sequence and make it running.

        @seq is a seq_id (then @prompt_token_ids is the prompt: a list of
        token ids, or a token count when ids are unknown) or a vLLM
        SequenceGroup (its first sequence's tokens; the others are forked
        from it). With caching, the longest cached prefix of the prompt (at
        most all tokens but the last) is reused: get_num_computed_tokens()
        tells how many tokens need no prefill. Returns the slots of the
        tokens that do (vLLM's slot mapping for the prefill).
        """
        if hasattr(seq, "get_seqs"):
            seqs = seq.get_seqs()
            first = seqs[0]
            slots = self.allocate(first.seq_id, list(first.get_token_ids()))
            done = [first.seq_id]
            try:
                for other in seqs[1:]:
                    self.fork(first.seq_id, other.seq_id)
                    done.append(other.seq_id)
            except BaseException:
                self.free(done)     # all or nothing: the group can be allocated again
                raise
            return slots
        if hasattr(seq, "seq_id"):
            if prompt_token_ids is None:
                prompt_token_ids = list(seq.get_token_ids())
            seq = seq.seq_id
        if seq in self.block_tables:
            raise ValueError("kvmem BlockManager: seq_id %r is allocated already" % (seq,))
        if prompt_token_ids is None:
            prompt_token_ids = []
        if isinstance(prompt_token_ids, int):
            n, ids = prompt_token_ids, None
        else:
            ids = list(prompt_token_ids)
            n = len(ids)
        h = self.client.seq_create(self.pool)
        try:
            computed = 0
            if self.enable_caching and ids is not None and n > 1:
                computed = self.client.prefix_match(h, ids[:n - 1]).tokens
            rest = ids[computed:] if ids is not None else None
            slots = self.client.step([(h, n - computed, rest)])[0]
        except BaseException:
            self.client.seq_free(h)
            raise
        self.block_tables[seq] = _Seq(h, n, True, computed, ids is not None)
        return slots

    def get_num_computed_tokens(self, seq_id):
        """Prompt tokens found in the prefix cache at allocate()."""
        return self._get(seq_id).computed

    def append_slots(self, seq_id, num_tokens=1, token_ids=None):
        """Append @num_tokens tokens (or the tokens @token_ids, whose ids
        the prefix cache needs) to running sequence @seq_id: AppendedSlots
        (slots, cow). A swapped-out sequence is swapped in first."""
        if hasattr(seq_id, "seq_id"):
            seq_id = seq_id.seq_id
        return self.append_slots_batch([(seq_id, token_ids if token_ids is not None
                                         else num_tokens)])[0]

    def append_slots_batch(self, items):
        """append_slots() for a whole batch in one round trip: @items is a
        list of (seq_id, n_tokens or token ids); a list of AppendedSlots."""
        entries = []
        for seq_id, what in items:
            st = self._get(seq_id)
            ids = None if isinstance(what, int) else list(what)
            n = what if ids is None else len(ids)
            if n < 0:   # before any sequence of the batch is appended to
                raise ValueError("kvmem BlockManager: seq_id %r: %d tokens" % (seq_id, n))
            entries.append((seq_id, st, n, ids))
        out = [None] * len(entries)
        rest = []
        refill = False
        for i, (seq_id, st, n, ids) in enumerate(entries):
            if self.reserve and st.active:
                try:
                    slots = (self.client.append_ids(st.handle, ids) if ids is not None
                             else self.client.append(st.handle, n))
                except KvmemError as e:
                    if e.errno != errno.EAGAIN:
                        raise
                    refill = True   # the daemon is needed: perhaps the reserve ran short
                else:
                    self._appended(st, n, ids)
                    out[i] = AppendedSlots(slots, [])
                    continue
            rest.append(i)
        if rest:
            before = {i: (self.client.block_table(entries[i][1].handle)
                          if entries[i][1].active else None) for i in rest}
            batch = [(entries[i][1].handle, entries[i][2], entries[i][3]) for i in rest]
            try:
                res = self.client.step(batch)
            except KvmemError as e:
                # the sequences before the failed one are done
                done = rest[:e.failed] if e.failed is not None and e.failed >= 0 else []
                for i in done:
                    st = entries[i][1]
                    st.active = True
                    self._appended(st, entries[i][2], entries[i][3])
                raise
            for k, i in enumerate(rest):
                st = entries[i][1]
                cow = []
                old = before[i]
                if old is not None:
                    new = self.client.block_table(st.handle)
                    cow = [(a, b) for a, b in zip(old, new) if a != b]
                st.active = True
                self._appended(st, entries[i][2], entries[i][3])
                out[i] = AppendedSlots(res[k], cow)
            if refill:
                self.client.reserve(self.pool, self.reserve)
        return out

    def _appended(self, st, n, ids):
        st.tokens += n
        if ids is None and n:
            st.ids_known = False

    def truncate(self, seq_id, num_tokens):
        """Keep the first @num_tokens tokens (rejected speculative tokens)."""
        st = self._get(seq_id)
        self.client.seq_truncate(st.handle, num_tokens)
        st.tokens = num_tokens
        st.computed = min(st.computed, num_tokens)

    def fork(self, parent_seq_id, child_seq_id):
        """Fork: the child shares every block of the parent; the daemon
        copies a shared block on write. The child runs (is active) when
        the parent does."""
        if hasattr(parent_seq_id, "seq_id"):
            parent_seq_id = parent_seq_id.seq_id
        if hasattr(child_seq_id, "seq_id"):
            child_seq_id = child_seq_id.seq_id
        if child_seq_id in self.block_tables:
            raise ValueError("kvmem BlockManager: seq_id %r is allocated already" %
                             (child_seq_id,))
        p = self._get(parent_seq_id)
        h = self.client.seq_fork(p.handle)
        if p.active:
            try:
                self.client.activate([h])
            except BaseException:
                self.client.seq_free(h)
                raise
        self.block_tables[child_seq_id] = _Seq(h, p.tokens, p.active, p.computed, p.ids_known)

    def free(self, seq):
        """Free the sequence(s) @seq; unknown ids are ignored, as in vLLM.
        Their whole blocks with known token ids stay in the daemon's prefix
        cache (but those of the last step of a running sequence)."""
        for sid in _seq_ids(seq):
            st = self.block_tables.pop(sid, None)
            if st is not None:
                self.client.seq_free(st.handle)

    def reset(self):
        """Free every sequence of the manager."""
        for sid in list(self.block_tables):
            self.free(sid)

    # ---- swapping --------------------------------------------------------
    def swap_out(self, seqs, demote=None):
        """Swap the sequences @seqs out: deactivate them (their blocks are no
        longer pinned, so the daemon may demote them to the host tier at any
        time) and, with @demote (default: demote_on_swap_out), ask the
        daemon to demote the pool's unpinned device blocks now (admin,
        pool-wide). Returns [] (vLLM's block mapping: the daemon moves the
        blocks, the engine copies nothing); last_demoted holds the count."""
        sts = [self._get(sid) for sid in _seq_ids(seqs)]
        handles = [st.handle for st in sts if st.active]
        if handles:
            self.client.deactivate(handles)
            for st in sts:
                st.active = False
        if demote is None:
            demote = self.demote_on_swap_out
        self.last_demoted = 0
        if demote:
            self.last_demoted = self.client.drop_caches(self.pool, _lib.KVMEM_DROP_DEMOTE)
        return []

    def swap_in(self, seqs):
        """Swap the sequences @seqs in: activate them (all or nothing), the
        daemon promoting their blocks to the device tier. Returns [] (the
        engine copies nothing); their block tables may have changed."""
        sts = [self._get(sid) for sid in _seq_ids(seqs)]
        handles = [st.handle for st in sts if not st.active]
        if handles:
            self.client.activate(handles)
        for st in sts:
            st.active = True
        return []

    def is_swapped_out(self, seq_id):
        return not self._get(seq_id).active

    # ---- block tables ----------------------------------------------------
    def get_block_table(self, seq_id):
        """The frames of running sequence @seq_id (frame numbers of the
        pool's device arena), a list. A swapped-out sequence has none:
        KvmemError(EINVAL)."""
        if hasattr(seq_id, "seq_id"):
            seq_id = seq_id.seq_id
        return self.client.block_table(self._get(seq_id).handle)

    def get_block_tables(self, seqs):
        return {sid: self.get_block_table(sid) for sid in _seq_ids(seqs)}

    # vLLM calls these; the daemon keeps its own LRU and prefix state.
    def access_all_blocks_in_seq(self, seq, access_time):
        pass

    def mark_blocks_as_computed(self, seq_group, token_chunk_size=None):
        pass

    def __repr__(self):
        return "<kvmem.BlockManager pool %r: %d sequences, block_size %d, %d gpu blocks>" % (
            self.pool.name, len(self.block_tables), self.block_size, self.num_total_gpu_blocks)
