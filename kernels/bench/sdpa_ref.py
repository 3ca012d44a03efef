#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""PyTorch SDPA decode on contiguous KV: the reference for bench-kernels-gpu.

For each decode shape, one query token per sequence, K and V contiguous as
[batch, kv_heads, ctx, head_dim], enable_gqa=True, timed with the flash and
the cuDNN backends. Like bench-kernels-gpu, every timed run follows a pass
over 256 MiB (more than L2): a read (default) or, with -F write, a write;
the time is the median of the runs, in ms.

Prints one line per shape: q_heads kv_heads head_dim dtype batch ctx flash_ms cudnn_ms
(nan where a backend refuses the shape), then the causal prefill shapes of
prefill() as "P batch new_tokens ctx flash_ms cudnn_ms". Usage: sdpa_ref.py [-q] [-r REPS] [-F read|write]
"""
import argparse
import math
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def shapes(quick):
    out = []
    for qh in (32, 64):
        for b in (1, 16, 64, 256):
            for c in (1024, 4096, 16384):
                if quick and (b in (1, 256) or c == 1024):
                    continue
                out.append((qh, 8, 128, "bf16", b, c))
    out += [(32, 8, 128, "bf16", 1, 131072), (64, 8, 128, "bf16", 1, 131072),
            (32, 8, 64, "fp16", 16, 2048)]
    return out


def time_ms(fn, reps, flush, write):
    fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    t = []
    for i in range(reps):
        if write:
            flush.fill_(i & 0xff)
        else:
            flush.view(torch.int32).sum()  # a read pass: see -F
        start.record()
        fn()
        end.record()
        end.synchronize()
        t.append(start.elapsed_time(end))
    return statistics.median(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-q", action="store_true")
    ap.add_argument("-r", type=int, default=30)
    ap.add_argument("-F", choices=("read", "write"), default="read",
                    help="L2 flush: read 256 MiB (default) or write it")
    args = ap.parse_args()
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    print("# torch", torch.__version__, torch.cuda.get_device_name(0), file=sys.stderr)
    for qh, kvh, hd, dt, b, c in shapes(args.q):
        dtype = torch.float16 if dt == "fp16" else torch.bfloat16
        q = torch.randn(b, qh, 1, hd, device="cuda", dtype=dtype)
        k = torch.randn(b, kvh, c, hd, device="cuda", dtype=dtype)
        v = torch.randn(b, kvh, c, hd, device="cuda", dtype=dtype)
        res = []
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
            try:
                with sdpa_kernel(backend):
                    res.append(time_ms(lambda: F.scaled_dot_product_attention(
                        q, k, v, scale=1.0 / math.sqrt(hd), enable_gqa=True),
                        args.r, flush, args.F == "write"))
            except Exception as e:  # a backend may refuse a shape
                print(f"# {backend} {qh}:{kvh} b{b} c{c}: {e}".splitlines()[0],
                      file=sys.stderr)
                res.append(float("nan"))
        print(qh, kvh, hd, dt, b, c, "%.5f %.5f" % tuple(res), flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    prefill(args, flush)


PREFILL = ((8, 2048, 2048), (2, 8192, 8192), (1, 16384, 16384), (1, 512, 4096),
           (1, 512, 8192), (1, 512, 16384), (1, 512, 32768))


def prefill(args, flush):
    """Causal prefill, 32:8, head_dim 128, bf16, contiguous: batch b of nq
    new tokens each on a context of ctx (the queries are its last nq
    tokens: the causal mask is aligned to the lower right). Prints
    "P b nq ctx flash_ms cudnn_ms"."""
    from torch.nn.attention.bias import causal_lower_right
    for b, nq, ctx in PREFILL:
        q = torch.randn(b, 32, nq, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(b, 8, ctx, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(b, 8, ctx, 128, device="cuda", dtype=torch.bfloat16)
        if nq == ctx:
            kw = dict(is_causal=True)
        else:
            kw = dict(attn_mask=causal_lower_right(nq, ctx))
        res = []
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
            try:
                with sdpa_kernel(backend):
                    res.append(time_ms(lambda: F.scaled_dot_product_attention(
                        q, k, v, scale=1.0 / math.sqrt(128), enable_gqa=True, **kw),
                        max(5, args.r // 3), flush, args.F == "write"))
            except Exception as e:  # a backend may refuse a shape
                print(f"# {backend} prefill b{b} nq{nq} ctx{ctx}: {e}".splitlines()[0],
                      file=sys.stderr)
                res.append(float("nan"))
        print("P", b, nq, ctx, "%.5f %.5f" % tuple(res), flush=True)
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
