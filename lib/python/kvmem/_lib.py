# SPDX-License-Identifier: MIT
"""Loading libkvclient with ctypes, and the C structs it uses.

libkvclient is found, in order:

1. ``$KVMEM_LIBKVCLIENT``, a path to the shared library;
2. in the source tree: ``build/libkvclient.so`` of the checkout this
   package lies in (``lib/python/kvmem`` -> ``build/``);
3. where ``make install`` put it (the path is written into
   ``_installed.py`` beside this file at install time);
4. ``libkvclient.so.1`` through the dynamic linker (``LD_LIBRARY_PATH``,
   ``ld.so.cache``), then ``ctypes.util.find_library("kvclient")``.

Every struct here mirrors its C definition field by field, with ctypes'
natural (C) alignment: ``struct kv_geometry`` (uapi/kvmem/layout.h),
``struct kvmem_prefix_match_reply`` (uapi/kvmem/kvmem.h), ``struct
kvc_pool`` and ``struct kvc_step_seq`` (lib/kvclient/kvclient.h).
selftests/python/test_abi.py checks sizes and offsets against a C compiler
where one exists.
"""

import ctypes
import ctypes.util
import os
import threading

# ---- constants of uapi/kvmem/kvmem.h and layout.h -------------------------
KVMEM_TIER_DEVICE = 0
KVMEM_TIER_HOST = 1
KVMEM_NR_TIERS = 2

KVMEM_BACKEND_CPU = 1
KVMEM_BACKEND_CUDA = 2

KVMEM_NOWAIT = 1 << 0
KVMEM_STEP_NOSLOTS = 1 << 1

KVMEM_STEP_MAX_SEQS = 4096
KVMEM_STEP_MAX_TOKENS = 16384
KVMEM_MSG_MAX = 256 * 1024

KVMEM_STATS_MEMINFO = 1
KVMEM_STATS_VMSTAT = 2
KVMEM_STATS_ZONEINFO = 3
KVMEM_STATS_PREFIX = 4
KVMEM_STATS_TOPOLOGY = 5
KVMEM_STATS_SEQLEN = 6

KVMEM_DROP_DEMOTE = 1 << 0
KVMEM_DROP_PREFIX = 1 << 1

KVMEM_PREFIX_PIN = 1
KVMEM_PREFIX_UNPIN = 2
KVMEM_PREFIX_REPIN = 3
KVMEM_PREFIX_FORGET = 4

KVMEM_NAME_MAX = 32
KVMEM_KEY_MAX = 64

KV_DTYPE_FP16 = 1
KV_DTYPE_BF16 = 2
KV_DTYPE_FP32 = 3
KV_DTYPE_INT8 = 4
KV_DTYPE_FP8_E4M3 = 5
KV_DTYPE_INT4 = 6
KV_INT4_GROUP = 32
KV_FRAME_ALIGN = 4096
KV_K = 0
KV_V = 1


# ---- structs ---------------------------------------------------------------
class KvGeometry(ctypes.Structure):
    """struct kv_geometry (uapi/kvmem/layout.h)."""
    _fields_ = [
        ("layers", ctypes.c_uint32),
        ("kv_heads", ctypes.c_uint32),
        ("head_dim", ctypes.c_uint32),
        ("block_tokens", ctypes.c_uint32),
        ("dtype", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class KvcPool(ctypes.Structure):
    """struct kvc_pool (lib/kvclient/kvclient.h)."""
    _fields_ = [
        ("handle", ctypes.c_uint32),
        ("geom", KvGeometry),
        ("frame_bytes", ctypes.c_uint64),
        ("base", ctypes.c_void_p),
        ("arena_bytes", ctypes.c_uint64),
        ("nr_frames", ctypes.c_uint32 * KVMEM_NR_TIERS),
        ("backend", ctypes.c_uint32),
        ("device_ptr", ctypes.c_uint64),
        ("gpu", ctypes.c_int),
        ("map", ctypes.c_void_p),
    ]


class KvcStepSeq(ctypes.Structure):
    """struct kvc_step_seq (lib/kvclient/kvclient.h)."""
    _fields_ = [
        ("seq", ctypes.c_uint64),
        ("nr_tokens", ctypes.c_uint32),
        ("token_ids", ctypes.POINTER(ctypes.c_uint32)),
        ("slots", ctypes.POINTER(ctypes.c_uint64)),
    ]


KVMEM_ADMIT_NOW = 0
KVMEM_ADMIT_LATER = 1
KVMEM_ADMIT_NEVER = 2


class KvmemAdmitReply(ctypes.Structure):
    """struct kvmem_admit_reply (uapi/kvmem/kvmem.h)."""
    _fields_ = [
        ("verdict", ctypes.c_uint32),
        ("free", ctypes.c_uint32),
        ("reclaimable", ctypes.c_uint32),
        ("reserve", ctypes.c_uint32),
        ("total", ctypes.c_uint32),
        ("pinned", ctypes.c_uint32),
        ("reserved", ctypes.c_uint64 * 2),
    ]


class KvmemPrefixMatchReply(ctypes.Structure):
    """struct kvmem_prefix_match_reply (uapi/kvmem/kvmem.h)."""
    _fields_ = [
        ("tokens", ctypes.c_uint32),
        ("blocks", ctypes.c_uint32),
        ("tier_tokens", ctypes.c_uint32 * KVMEM_NR_TIERS),
        ("reserved", ctypes.c_uint64 * 2),
    ]


# ---- the library -----------------------------------------------------------
_c_kvc_p = ctypes.c_void_p          # struct kvc *
_c_pool_p = ctypes.POINTER(KvcPool)
_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64
_u32_p = ctypes.POINTER(ctypes.c_uint32)
_u64_p = ctypes.POINTER(ctypes.c_uint64)
_i32_p = ctypes.POINTER(ctypes.c_int32)

# name: (restype, argtypes); every function kvmem's Python code calls.
_SIGNATURES = {
    "kvc_connect": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(_c_kvc_p)]),
    "kvc_close": (None, [_c_kvc_p]),
    "kvc_client_id": (_u64, [_c_kvc_p]),
    "kvc_is_admin": (ctypes.c_int, [_c_kvc_p]),
    "kvc_pool_open": (ctypes.c_int, [_c_kvc_p, ctypes.c_char_p, ctypes.POINTER(_c_pool_p)]),
    "kvc_pool_map": (ctypes.c_int, [_c_pool_p]),
    "kvc_frame_read": (ctypes.c_int, [_c_pool_p, _u32, _u64, ctypes.c_void_p, ctypes.c_size_t]),
    "kvc_frame_write": (ctypes.c_int, [_c_pool_p, _u32, _u64, ctypes.c_void_p, ctypes.c_size_t]),
    "kvc_seq_create": (ctypes.c_int, [_c_kvc_p, _c_pool_p, _u64_p]),
    "kvc_seq_fork": (ctypes.c_int, [_c_kvc_p, _u64, _u64_p]),
    "kvc_seq_truncate": (ctypes.c_int, [_c_kvc_p, _u64, _u32]),
    "kvc_seq_free": (ctypes.c_int, [_c_kvc_p, _u64]),
    "kvc_step": (ctypes.c_int, [_c_kvc_p, ctypes.POINTER(KvcStepSeq), _u32, _u32, _i32_p]),
    "kvc_activate": (ctypes.c_int, [_c_kvc_p, _u64_p, _u32, _u32, _i32_p]),
    "kvc_deactivate": (ctypes.c_int, [_c_kvc_p, _u64_p, _u32]),
    "kvc_block_table": (ctypes.c_int, [_c_kvc_p, _u64, ctypes.POINTER(_u32_p), _u32_p]),
    "kvc_append": (ctypes.c_int, [_c_kvc_p, _u64, _u32, _u64_p]),
    "kvc_append_ids": (ctypes.c_int, [_c_kvc_p, _u64, _u32, _u32_p, _u64_p]),
    "kvc_reserve": (ctypes.c_int, [_c_kvc_p, _c_pool_p, _u32]),
    "kvc_reserve_release": (ctypes.c_int, [_c_kvc_p, _c_pool_p]),
    "kvc_admit": (ctypes.c_int, [_c_kvc_p, _c_pool_p, _u32, ctypes.POINTER(KvmemAdmitReply)]),
    "kvc_sync": (ctypes.c_int, [_c_kvc_p]),
    "kvc_stats": (ctypes.c_int, [_c_kvc_p, _u32, _u32, ctypes.c_char_p, ctypes.c_size_t]),
    "kvc_clients": (ctypes.c_int, [_c_kvc_p, ctypes.c_char_p, ctypes.c_size_t]),
    "kvc_sysctl_get": (ctypes.c_int, [_c_kvc_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
    "kvc_sysctl_set": (ctypes.c_int, [_c_kvc_p, ctypes.c_char_p, ctypes.c_char_p]),
    "kvc_drop_caches": (ctypes.c_int, [_c_kvc_p, _u32, _u32]),
    "kvc_checkpoint": (ctypes.c_int, [_c_kvc_p, _u32]),
    "kvc_prefix_match": (ctypes.c_int, [_c_kvc_p, _u64, _u32_p, _u32,
                                        ctypes.POINTER(KvmemPrefixMatchReply)]),
    "kvc_prefix_pin": (ctypes.c_int, [_c_kvc_p, _u64, ctypes.c_char_p]),
    "kvc_prefix_name_op": (ctypes.c_int, [_c_kvc_p, _u32, ctypes.c_char_p, _u32]),
    "kvc_request": (ctypes.c_int, [_c_kvc_p, ctypes.c_uint16, ctypes.c_void_p, ctypes.c_size_t,
                                   ctypes.POINTER(ctypes.c_void_p),
                                   ctypes.POINTER(ctypes.c_size_t)]),
}

_HERE = os.path.dirname(os.path.abspath(__file__))


def source_root():
    """The kvmem checkout this package lies in, or None when installed."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(_HERE)))
    if os.path.isfile(os.path.join(root, "lib", "kvclient", "kvclient.h")):
        return root
    return None


def _installed_value(name):
    try:
        from . import _installed  # written by `make install`
    except ImportError:
        return None
    return getattr(_installed, name, None)


def candidates(env, tree_name, installed_key=None, soname=None, find=None):
    """Paths (or names for the dynamic linker) to try for a library, in order."""
    out = []
    if os.environ.get(env):
        return [os.environ[env]]    # an explicit choice is the only one
    root = source_root()
    if root:
        build = os.environ.get("KVMEM_BUILD") or os.path.join(root, "build")
        out.append(os.path.join(build, tree_name))
    out.append(os.path.join(_HERE, tree_name))
    if installed_key:
        p = _installed_value(installed_key)
        if p:
            out.append(p)
    if soname:
        out.append(soname)
    if find:
        p = ctypes.util.find_library(find)
        if p:
            out.append(p)
    return out


def load_library(what, paths, mode=0):
    """dlopen the first of @paths that loads; ImportError naming all tries."""
    errors = []
    for p in paths:
        if os.sep in p and not os.path.exists(p):
            errors.append("%s: not found" % p)
            continue
        try:
            return ctypes.CDLL(p, mode=mode), p
        except OSError as e:
            errors.append("%s: %s" % (p, e))
    raise ImportError("kvmem: cannot load %s (set $%s); tried:\n  %s" %
                      (what, _ENV_OF.get(what, "KVMEM_..."), "\n  ".join(errors) or "nothing"))


_ENV_OF = {
    "libkvclient": "KVMEM_LIBKVCLIENT",
    "libkvkernels": "KVMEM_LIBKVKERNELS",
    "libkvkernels_cuda": "KVMEM_LIBKVKERNELS_CUDA",
}

_lock = threading.Lock()
_lib = None
_lib_path = None


def lib():
    """The loaded libkvclient, with argtypes and restype set; loads it once."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            paths = candidates("KVMEM_LIBKVCLIENT", "libkvclient.so", "LIBKVCLIENT",
                               "libkvclient.so.1", "kvclient")
            handle, path = load_library("libkvclient", paths)
            for name, (restype, argtypes) in _SIGNATURES.items():
                fn = getattr(handle, name)
                fn.restype = restype
                fn.argtypes = argtypes
            _lib_path = path
            _lib = handle
    return _lib


def lib_path():
    """Path (or name) libkvclient was loaded from."""
    lib()
    return _lib_path
