# SPDX-License-Identifier: MIT
"""Greedy generation of a Hugging Face model with its KV in kvmem, beside
transformers' own cache and attention (SDPA), on models built from configs
with random weights (nothing is downloaded).

    python3 -m kvmem.hf_compare [--socket PATH] [--tokens 64] [--device cuda]
                                [--train STEPS]

With random weights the next-token logits are nearly flat, and greedy
choices between near-equal logits are decided by bf16 rounding (transformers'
own eager attention and its SDPA part there too). --train fits the random
model, in a few seconds, to a synthetic rule (the next token is a fixed
permutation of the current one: see rule()); its greedy choices are then
clear, and the tokens must be equal. Attention still shapes every logit:
the logits are compared as for random weights.

needs a kvmemd whose pools "llama" and "qwen2" have the geometry of the two
models below (POOLS is the config text: see kvmemd_pools()). Prints, per
model: whether every generated token is the same, the largest logit
difference relative to the logits' range, and decode tokens/s of both.
"""

import argparse
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from . import hf
from .client import Client

# Llama architecture with GQA 4:1; Qwen2 architecture (attention biases)
# with GQA 7:1, Qwen2.5-0.5B's head layout. head_dim 64: the kernels take
# 64, 128 and 256.
MODELS = {
    "llama": (LlamaForCausalLM, dict(
        vocab_size=1024, hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=2, head_dim=64,
        max_position_embeddings=1024, rope_theta=10000.0)),
    "qwen2": (Qwen2ForCausalLM, dict(
        vocab_size=1024, hidden_size=896, intermediate_size=1536, num_hidden_layers=4,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=1024,
        rope_theta=10000.0)),
}
CONFIGS = {"llama": LlamaConfig, "qwen2": Qwen2Config}
PROMPT_LENS = (5, 17, 33, 60)
INIT_RANGE = 0.08
TRAIN_STEPS = 300
TOL = 2e-2      # bf16: a few ulps of the logits' range
PAD = 0


def kvmemd_pools(block_tokens=16, device_mem="64M", host_mem="64M"):
    """Config text of the pools the comparison needs (bf16 KV)."""
    text = []
    for name, (_, c) in MODELS.items():
        keys = {"layers": c["num_hidden_layers"], "kv_heads": c["num_key_value_heads"],
                "head_dim": c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
                "block_tokens": block_tokens, "dtype": "bf16", "device_mem": device_mem,
                "host_mem": host_mem}
        text += ["pool.%s.%s = %s\n" % (name, k, v) for k, v in keys.items()]
    return "".join(text)


def rule(vocab, device, seed=7):
    """The synthetic language of trained models: a random permutation
    @perm of the vocabulary, the token after x being perm[x]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(vocab, generator=g).to(device)


def train(model, steps, seed=5, batch=64, length=128):
    """Fit @model (fp32) to rule() on random token sequences for @steps
    AdamW steps; returns the last step's loss."""
    vocab = model.config.vocab_size
    perm = rule(vocab, model.device)
    g = torch.Generator(device=model.device).manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps,
                                                pct_start=0.1)
    model.train()
    loss = torch.zeros(())
    for _ in range(steps):
        x = torch.randint(3, vocab, (batch, length), generator=g, device=model.device)
        logits = model(input_ids=x).logits.float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab),
                                                 perm[x].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return float(loss.detach())


def build(kind, device, seed=1234, init=INIT_RANGE, steps=0):
    """A model of @kind with random weights from @seed, trained for @steps
    on rule() when @steps, then bf16, eval mode."""
    cls, kw = MODELS[kind]
    torch.manual_seed(seed)
    cfg = CONFIGS[kind](initializer_range=init, pad_token_id=PAD, bos_token_id=1,
                        eos_token_id=None, tie_word_embeddings=False, **kw)
    model = cls(cfg).to(device=device)
    if steps:
        with torch.enable_grad():
            model.train_loss = train(model, steps)
    model = model.to(dtype=torch.bfloat16).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = PAD
    # Logits in fp32: bf16 logits of random weights tie exactly (many
    # equal values among 1024), and a tie is decided by the last bit.
    model.lm_head.float()
    model.lm_head.register_forward_pre_hook(lambda m, a: (a[0].float(),))
    return model


def prompts(device, vocab, seed=99):
    """A left-padded batch of prompts of PROMPT_LENS tokens."""
    g = torch.Generator().manual_seed(seed)
    width = max(PROMPT_LENS)
    ids = torch.full((len(PROMPT_LENS), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(PROMPT_LENS):
        ids[b, width - n:] = torch.randint(3, vocab, (n,), generator=g)
        mask[b, width - n:] = 1
    return ids.to(device), mask.to(device)


def _generate(model, ids, mask, tokens, cache=None):
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = model.generate(ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                         do_sample=False, past_key_values=cache, return_dict_in_generate=True,
                         output_logits=True)
    sync()
    return out, time.perf_counter() - t0


def _run(model, ids, mask, tokens, client, pool):
    """(output, seconds) with transformers' cache, or with kvmem's when @pool."""
    if pool is None:
        model.set_attn_implementation("sdpa")
        return _generate(model, ids, mask, tokens)
    cache = hf.KvmemCache(client, pool, model)
    try:
        return _generate(model, ids, mask, tokens, cache)
    finally:
        cache.close()
        model.set_attn_implementation("sdpa")


def _decode_rate(model, ids, mask, tokens, client, pool):
    """(output, decode tokens/s): generates of @tokens and of @tokens / 2,
    both timed after a warm-up of @tokens; the rate is of the difference,
    so prefill and one-time costs cancel."""
    _run(model, ids, mask, tokens, client, pool)
    half = max(1, tokens // 2)
    _, th = _run(model, ids, mask, half, client, pool)
    out, tn = _run(model, ids, mask, tokens, client, pool)
    return out, ids.shape[0] * (tokens - half) / max(tn - th, 1e-9)


def _rel(a, b):
    """Largest difference of two logit rows relative to the first's range."""
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / (a.max() - a.min()).clamp_min(1e-6))


def teacher_forced(model, ids, mask, ref, client, pool):
    """The kvmem path fed the reference's tokens, step by step: per step,
    the largest logit difference to the reference and whether the argmax
    agrees wherever the reference is not within @TOL of a tie."""
    width, tokens = ids.shape[1], len(ref.logits)
    cache = hf.KvmemCache(client, pool, model)
    worst, disagree = 0.0, 0
    try:
        pos = (mask.long().cumsum(-1) - 1).clamp_min(0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                    past_key_values=cache, use_cache=True)
        for s in range(tokens):
            a, b = ref.logits[s].float(), out.logits[:, -1].float()
            for r in range(a.shape[0]):
                worst = max(worst, _rel(a[r], b[r]))
                top = a[r].topk(2).values
                clear = (top[0] - top[1]) / (a[r].max() - a[r].min()) > TOL
                disagree += bool(clear and a[r].argmax() != b[r].argmax())
            if s + 1 == tokens:
                break
            tok = ref.sequences[:, width + s:width + s + 1]
            mask = torch.cat([mask, torch.ones_like(tok)], 1)
            pos = mask.long().sum(-1, keepdim=True) - 1
            out = model(input_ids=tok, attention_mask=mask, position_ids=pos,
                        past_key_values=cache, use_cache=True)
    finally:
        cache.close()
        model.set_attn_implementation("sdpa")
    return worst, disagree


def chunked(model, ids, mask, client, pool):
    """The prompts in two chunks onto a kvmem cache (the second attends to
    the first through kv_prefill: chunked prefill; rows whose first chunk
    is all padding get a plain prefill) against one SDPA forward of the
    whole prompts without a cache: (largest logit difference over the
    second chunk's real positions, how many of them choose another token
    where the reference's choice is clear)."""
    pos = (mask.long().cumsum(-1) - 1).clamp_min(0)
    ref = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    half = ids.shape[1] // 2
    cache = hf.KvmemCache(client, pool, model)
    try:
        model(input_ids=ids[:, :half], attention_mask=mask[:, :half],
              position_ids=pos[:, :half], past_key_values=cache, use_cache=True)
        got = model(input_ids=ids[:, half:], attention_mask=mask,
                    position_ids=pos[:, half:], past_key_values=cache, use_cache=True).logits
    finally:
        cache.close()
        model.set_attn_implementation("sdpa")
    worst, bad = 0.0, 0
    real = mask[:, half:].bool()
    for a, b in zip(ref[:, half:][real], got[real]):
        worst = max(worst, _rel(a, b))
        top = a.float().topk(2).values
        clear = (top[0] - top[1]) / (a.max() - a.min()).float() > TOL
        bad += bool(clear and a.argmax() != b.argmax())
    return worst, bad


def _free_diff(ref, got, width):
    """(first step where the tokens part or None, the largest logit
    difference up to and including it)."""
    first = None
    if not torch.equal(ref.sequences, got.sequences):
        diff = (ref.sequences[:, width:] != got.sequences[:, width:]).any(0).nonzero()
        first = int(diff[0]) if diff.numel() else None
    worst = 0.0
    for s in range(len(ref.logits) if first is None else first + 1):
        for r in range(ref.logits[s].shape[0]):
            worst = max(worst, _rel(ref.logits[s][r], got.logits[s][r]))
    return first, worst


def _margins(ref):
    """Smallest gap between the reference's top two logits, relative to
    the logits' range, over every step and sequence."""
    low = 1.0
    for step in ref.logits:
        a = step.float()
        top = a.topk(2, dim=-1).values
        gap = (top[:, 0] - top[:, 1]) / (a.amax(-1) - a.amin(-1)).clamp_min(1e-6)
        low = min(low, float(gap.min()))
    return low


def _rule_hits(model, ref, width):
    """Share of the generated tokens that follow rule()."""
    seq = ref.sequences
    perm = rule(model.config.vocab_size, seq.device)
    want = perm[seq[:, width - 1:-1]]
    return float((seq[:, width:] == want).float().mean())


def compare(kind, client, device="cuda", tokens=64, init=INIT_RANGE, seed=1234, steps=0):
    """Generate with both caches; a dict of what matched and how fast.
    @steps: train the model on rule() first (see train())."""
    model = build(kind, device, seed, init, steps)
    ids, mask = prompts(device, model.config.vocab_size)
    with torch.no_grad():
        ref, ref_rate = _decode_rate(model, ids, mask, tokens, client, None)
        got, kv_rate = _decode_rate(model, ids, mask, tokens, client, kind)
    width = ids.shape[1]
    # The noise floor: transformers' eager attention beside its SDPA.
    model.set_attn_implementation("eager")
    with torch.no_grad():
        eager, _ = _generate(model, ids, mask, tokens)
    model.set_attn_implementation("sdpa")
    eager_first, floor = _free_diff(ref, eager, width)
    same = torch.equal(ref.sequences, got.sequences)
    first, worst = _free_diff(ref, got, width)
    margin = None
    if first is not None:
        # How close the reference's choice was where the two first parted.
        rows = (ref.sequences[:, width + first] != got.sequences[:, width + first]).nonzero()
        a = ref.logits[first][int(rows[0])].float()
        top = a.topk(2).values
        margin = float((top[0] - top[1]) / (a.max() - a.min()).clamp_min(1e-6))
    with torch.no_grad():
        forced_diff, forced_bad = teacher_forced(model, ids, mask, ref, client, kind)
        chunk_diff, chunk_bad = chunked(model, ids, mask, client, kind)
    return {"model": kind, "trained": steps, "same_tokens": same,
            "min_margin": _margins(ref),
            "rule_hits": _rule_hits(model, ref, width) if steps else None,
            "train_loss": getattr(model, "train_loss", None),
            "first_difference": first, "margin": margin,
            "logit_diff": worst, "tokens": tokens, "batch": ids.shape[0],
            "forced_logit_diff": forced_diff, "forced_disagree": forced_bad,
            "chunked_logit_diff": chunk_diff, "chunked_disagree": chunk_bad,
            "eager_logit_diff": floor, "eager_first_difference": eager_first,
            "sdpa_tok_s": ref_rate, "kvmem_tok_s": kv_rate}


def verdict(r):
    """"" when @r passes: the same tokens, or tokens that part only where
    the reference was within TOL of a tie; logits within TOL or twice what
    separates transformers' own eager attention from its SDPA (the bf16
    noise floor, measured in the same run), free-running, teacher-forced
    over every step and after a chunked prefill; no teacher-forced step or
    chunked-prefill position whose clear argmax differs.
    A trained model (clear choices) must give the same tokens. Else what
    failed."""
    why = []
    tol = max(TOL, 2 * r["eager_logit_diff"])
    if r["trained"] and not r["same_tokens"]:
        why.append("trained model: tokens part at step %s" % r["first_difference"])
    elif not r["same_tokens"] and (r["margin"] is None or r["margin"] >= TOL):
        why.append("tokens part at step %s where the reference's margin is %s" %
                   (r["first_difference"], r["margin"]))
    if r["logit_diff"] >= tol:
        why.append("logits differ by %.2e" % r["logit_diff"])
    if r["forced_logit_diff"] >= tol:
        why.append("teacher-forced logits differ by %.2e" % r["forced_logit_diff"])
    if r["forced_disagree"]:
        why.append("%d teacher-forced steps choose another token" % r["forced_disagree"])
    if r["chunked_logit_diff"] >= tol:
        why.append("chunked prefill's logits differ by %.2e" % r["chunked_logit_diff"])
    if r["chunked_disagree"]:
        why.append("%d chunked-prefill positions choose another token" % r["chunked_disagree"])
    return "; ".join(why)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", default=None)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="llama,qwen2")
    ap.add_argument("--train", type=int, default=0, metavar="STEPS",
                    help="train each model on rule() for STEPS steps first")
    a = ap.parse_args(argv)
    bad = 0
    with Client(a.socket) as client:
        print(HEADER)
        for kind in a.models.split(","):
            r = compare(kind, client, a.device, a.tokens, steps=a.train)
            print(row(r))
            why = verdict(r)
            if why:
                print("  FAIL: " + why)
            bad += bool(why)
    return 1 if bad else 0


HEADER = "%-6s %-7s %5s %6s %-22s %10s %-18s %10s %8s %10s %8s %8s %10s %10s" % (
    "model", "weights", "batch", "tokens", "kvmem: same tokens", "logit diff",
    "eager vs sdpa", "forced", "forced", "chunked", "chunked", "least", "sdpa", "kvmem")
HEADER += "\n%-6s %-7s %5s %6s %-22s %10s %-18s %10s %8s %10s %8s %8s %10s %10s" % (
    "", "", "", "", "", "", "(tokens part, diff)", "diff", "argmax", "diff", "argmax",
    "margin", "tok/s", "tok/s")


def row(r):
    """One line of the comparison table."""
    same = "yes" if r["same_tokens"] else "tie at step %s (%.1e)" % (r["first_difference"],
                                                                     r["margin"] or 0)
    eager = "%s, %.2e" % ("never" if r["eager_first_difference"] is None else
                          "step %d" % r["eager_first_difference"], r["eager_logit_diff"])
    weights = "trained" if r["trained"] else "random"
    return "%-6s %-7s %5d %6d %-22s %10.2e %-18s %10.2e %8s %10.2e %8s %8.1e %10.0f %10.0f" % (
        r["model"], weights, r["batch"], r["tokens"], same, r["logit_diff"], eager,
        r["forced_logit_diff"],
        "ok" if not r["forced_disagree"] else "%d bad" % r["forced_disagree"],
        r["chunked_logit_diff"],
        "ok" if not r["chunked_disagree"] else "%d bad" % r["chunked_disagree"],
        r["min_margin"], r["sdpa_tok_s"], r["kvmem_tok_s"]) + (
        "" if not r["trained"] else
        "\n%15s(%d training steps, loss %.3f; %.0f%% of the generated tokens follow the rule)"
        % ("", r["trained"], r["train_loss"], 100 * r["rule_hits"]))


if __name__ == "__main__":
    sys.exit(main())
