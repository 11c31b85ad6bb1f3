#!/usr/bin/python3
"""The PyTorch-eager peer of bench_peer_shape (issue 16): the bench model
(bench/bench_model_config.h) written the way a competent PyTorch user writes it, nn.Module and
eager ops, no torch.compile, run in the same three modes with the same flags and the same
one-line JSON.

  generate  16 ragged, left-padded prompts (prompt i: 16 + i tokens (i*31 + j*7) % 512),
            prefill, then 128 decode steps through a preallocated KV cache, temperature-1
            multinomial sampling, keeping each token's log-prob and entropy; no EOS stop
  train     one learner step on 16 x 128: forward, log_softmax, gather of the next tokens,
            -(adv * logp).mean(), backward, torch.optim.AdamW (lr 3e-4, weight decay 0 as
            rhythm's default), zero_grad
  gemm      FLOP/s of torch.mm on fp32 matrices, the best of a few shapes
generate and train also report tokens per CPU-second of the process (time.process_time(), all
threads), which a busy machine disturbs less than wall clock. Every JSON line names the OpenBLAS
kernels in use ("blas_core"); this script leaves them to OpenBLAS and OPENBLAS_CORETYPE.

Run with Debian's interpreter, which has python3-torch 1.13:
  /usr/bin/python3 bench/peer_eager.py --mode generate|train|gemm [--threads N] [--reps R]
                                       [--warmup W]
  /usr/bin/python3 bench/peer_eager.py --check FILE   (FILE from bench_peer_shape --dump-check):
      loads rhythm's weights and checks that this model is the same function: the training
      forward's logits, rhythm's generated tokens' log-probs and entropies against this
      model, this model's KV-cache generation against its own training forward (and its
      tokens against rhythm's, same seed), the loss, every gradient, and the parameters after
      one AdamW step. Prints one JSON line; exits 1 when anything differs.
"""
import argparse
import ctypes
import json
import math
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# bench/bench_model_config.h on common/model/model_config.h's defaults.
VOCAB = 512
HIDDEN = 256
LAYERS = 4
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 64
FFN = 1024
MAX_POS = 1024
ROPE_THETA = 10000.0
RMS_EPS = 1e-6
INIT_STD = 0.02

BATCH = 16
TRAIN_LEN = 128
LR = 3e-4


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=RMS_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(HIDDEN, HEADS * HEAD_DIM, bias=True)
        self.k_proj = nn.Linear(HIDDEN, KV_HEADS * HEAD_DIM, bias=True)
        self.v_proj = nn.Linear(HIDDEN, KV_HEADS * HEAD_DIM, bias=True)
        self.o_proj = nn.Linear(HEADS * HEAD_DIM, HIDDEN, bias=False)

    def forward(self, x, cos, sin, mask, cache=None, start=0):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, HEADS, HEAD_DIM).transpose(1, 2)
        k = self.k_proj(x).view(b, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
        v = self.v_proj(x).view(b, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            ck, cv = cache
            ck[:, :, start:start + t] = k
            cv[:, :, start:start + t] = v
            k = ck[:, :, :start + t]
            v = cv[:, :, :start + t]
        k = k.repeat_interleave(HEADS // KV_HEADS, dim=1)
        v = v.repeat_interleave(HEADS // KV_HEADS, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(HEAD_DIM)
        scores = scores.masked_fill(~mask, float("-inf"))
        out = scores.softmax(dim=-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, t, HEADS * HEAD_DIM))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj = nn.Linear(HIDDEN, FFN, bias=False)
        self.up_proj = nn.Linear(HIDDEN, FFN, bias=False)
        self.down_proj = nn.Linear(FFN, HIDDEN, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm = RMSNorm(HIDDEN)
        self.self_attn = Attention()
        self.post_attention_layernorm = RMSNorm(HIDDEN)
        self.mlp = MLP()

    def forward(self, x, cos, sin, mask, cache=None, start=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = RMSNorm(HIDDEN)


class Qwen2(nn.Module):
    """Qwen2-style decoder, Hugging Face parameter names, tied embeddings."""

    def __init__(self):
        super().__init__()
        self.model = Backbone()
        inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM))
        freqs = torch.outer(torch.arange(MAX_POS).float(), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_table", emb.cos(), persistent=False)
        self.register_buffer("sin_table", emb.sin(), persistent=False)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, 0.0, INIT_STD)

    def forward(self, ids, positions, mask, caches=None, start=0):
        """ids, positions [B, T]; mask bool broadcastable to [B, H, T, S]; caches: per layer
        (k, v) [B, KV_HEADS, capacity, HEAD_DIM], written at [start, start + T)."""
        cos = self.cos_table[positions].unsqueeze(1)
        sin = self.sin_table[positions].unsqueeze(1)
        x = self.model.embed_tokens(ids)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, mask, caches[i] if caches is not None else None, start)
        return F.linear(self.model.norm(x), self.model.embed_tokens.weight)


def padded_mask(valid):
    """bool [B, 1, T, T]: real keys at or before the query; a padding query sees itself."""
    t = valid.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    eye = torch.eye(t, dtype=torch.bool)
    return ((causal[None] & valid[:, None, :]) | eye[None])[:, None]


def prefill(model, ids, valid, capacity):
    b = ids.shape[0]
    shape = (b, KV_HEADS, capacity, HEAD_DIM)
    caches = [(torch.zeros(shape), torch.zeros(shape)) for _ in range(LAYERS)]
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    logits = model(ids, positions, padded_mask(valid), caches, 0)
    return logits, caches


@torch.inference_mode()
def generate(model, prompts, max_new, generator):
    """Left-pads, prefills, samples max_new tokens per prompt; returns ids, log-probs and
    entropies as lists."""
    b = len(prompts)
    p = max(len(x) for x in prompts)
    ids = torch.zeros(b, p, dtype=torch.long)
    valid = torch.zeros(b, p, dtype=torch.bool)
    for i, x in enumerate(prompts):
        ids[i, p - len(x):] = torch.tensor(x)
        valid[i, p - len(x):] = True
    capacity = p + max_new
    key_valid = torch.zeros(b, capacity, dtype=torch.bool)
    key_valid[:, :p] = valid
    logits, caches = prefill(model, ids, valid, capacity)
    logits = logits[:, -1]
    next_pos = valid.sum(1, keepdim=True)
    out_ids = torch.empty(b, max_new, dtype=torch.long)
    out_logp = torch.empty(b, max_new)
    out_ent = torch.empty(b, max_new)
    for q in range(max_new):
        logp = logits.log_softmax(-1)
        probs = logp.exp()
        # replacement=True as rhythm's sampler: for one draw the same distribution as the
        # default, and the same RNG path, so a shared seed gives the same tokens (--check).
        tok = torch.multinomial(probs, 1, replacement=True, generator=generator)
        out_ids[:, q] = tok[:, 0]
        out_logp[:, q] = logp.gather(-1, tok)[:, 0]
        out_ent[:, q] = -(probs * logp).sum(-1)
        if q + 1 == max_new:
            break
        slot = p + q
        key_valid[:, slot] = True
        logits = model(tok, next_pos, key_valid[:, None, None, :slot + 1], caches, slot)[:, -1]
        next_pos += 1
    return out_ids.tolist(), out_logp.tolist(), out_ent.tolist()


def step_loss(model, ids, adv):
    t = ids.shape[1]
    positions = torch.arange(t)[None]
    causal = torch.ones(t, t, dtype=torch.bool).tril()[None, None]
    logits = model(ids, positions, causal)
    logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return -(adv[:, None] * logp).mean()


def make_optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=0.0)


def bench_prompts():
    return [[(i * 31 + j * 7) % 512 for j in range(16 + i)] for i in range(BATCH)]


def blas_core():
    """The OpenBLAS kernels LibTorch runs on (OPENBLAS_CORETYPE chooses them), or ""."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return ""


def header(args):
    return {"side": "peer", "mode": args.mode, "threads": torch.get_num_threads(),
            "reps": args.reps, "warmup": args.warmup, "blas_core": blas_core()}


def run_generate(args):
    torch.manual_seed(0)
    model = Qwen2().eval()
    prompts = bench_prompts()
    values, cpu_values = [], []
    for r in range(args.warmup + args.reps):
        gen = torch.Generator().manual_seed(0)
        t0, c0 = time.perf_counter(), time.process_time()
        out_ids, _, _ = generate(model, prompts, args.max_new, gen)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        tokens = sum(len(x) for x in out_ids)
        if r >= args.warmup:
            values.append(tokens / dt)
            cpu_values.append(tokens / dc)
    return dict(header(args), taps=0, tokens=tokens, tokens_per_s=max(values), values=values,
                tokens_per_cpu_s=max(cpu_values), cpu_values=cpu_values,
                instructions_per_token=None, instructions_per_token_values=None)


def run_train(args):
    torch.manual_seed(0)
    model = Qwen2()
    opt = make_optimizer(model)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(VOCAB, (BATCH, TRAIN_LEN), generator=g)
    adv = torch.randn(BATCH, generator=g)
    values, cpu_values = [], []
    for r in range(args.warmup + args.reps):
        t0, c0 = time.perf_counter(), time.process_time()
        step_loss(model, ids, adv).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if r >= args.warmup:
            values.append(BATCH * TRAIN_LEN / dt)
            cpu_values.append(BATCH * TRAIN_LEN / dc)
    return dict(header(args), tokens=BATCH * TRAIN_LEN, tokens_per_s=max(values), values=values,
                tokens_per_cpu_s=max(cpu_values), cpu_values=cpu_values)


def run_gemm(args):
    shapes = [(2048, 256, 1024), (1024, 1024, 1024), (2048, 2048, 2048)]  # (M, K, N)
    per_shape, values = {}, []
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        flop = 2.0 * m * k * n
        iters = max(1, int(1e10 / flop))
        best = 0.0
        for r in range(args.warmup + args.reps):
            t0 = time.perf_counter()
            for _ in range(iters):
                torch.mm(a, b)
            v = flop * iters / (time.perf_counter() - t0)
            if r >= args.warmup:
                values.append(v)
                best = max(best, v)
        per_shape[f"{m}x{k}x{n}"] = best
    best_shape = max(per_shape, key=per_shape.get)
    return dict(header(args), flops_per_s=per_shape[best_shape], best_shape=best_shape,
                per_shape=per_shape, values=values)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in meta.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        flat = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.float32)
        out[name] = flat.reshape(info["shape"])
    return out


def teacher_forced(model, prompts, responses):
    """Log-prob and entropy of every response token under the training forward: [B, R] each."""
    seqs = [list(p) + list(r) for p, r in zip(prompts, responses)]
    n = max(len(x) for x in seqs)
    ids = torch.zeros(len(seqs), n, dtype=torch.long)
    valid = torch.zeros(len(seqs), n, dtype=torch.bool)
    for i, x in enumerate(seqs):
        ids[i, n - len(x):] = torch.tensor(x)
        valid[i, n - len(x):] = True
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    r = len(responses[0])
    logp = model(ids, positions, padded_mask(valid))[:, n - r - 1:n - 1].log_softmax(-1)
    tok = ids[:, n - r:]
    return logp.gather(-1, tok[..., None])[..., 0], -(logp.exp() * logp).sum(-1)


def run_check(path):
    """Is this model the same function as rhythm's? Compares, on rhythm's weights: the training
    forward's logits; rhythm's sampled tokens' log-probs and entropies (its engine's decode path)
    against this model's training forward; this model's own KV-cache generation against its
    training forward and, token for token, against rhythm's with the same seed; the loss, every
    gradient, and the parameters after one AdamW step."""
    t = read_safetensors(path)
    model = Qwen2()
    weights = {k: v for k, v in t.items() if not k.startswith("check.")}
    model.load_state_dict(weights, strict=True)
    ids = t["check.ids"].long()
    valid = t["check.mask"].bool()
    adv = t["check.adv"]
    results = {"parameters": sum(p.numel() for p in model.parameters())}
    failures = []

    def compare(name, got, want, rel=None, abs_tol=None):
        diff = (got - want).abs().max().item()
        scale = want.abs().max().item()
        results[name] = {"max_abs_diff": diff, "max_abs_ref": scale}
        tol = abs_tol if abs_tol is not None else rel * max(scale, 1e-30)
        if not diff <= tol:
            failures.append(f"{name}: max |diff| {diff:.3g} > {tol:.3g} (max |ref| {scale:.3g})")

    prompts = bench_prompts()
    with torch.inference_mode():
        # The training forward over a left-padded pair; padding positions are not compared.
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        logits = model(ids, positions, padded_mask(valid))
        compare("forward_logits", logits[valid], t["check.forward_logits"][valid], rel=1e-5)
        # rhythm's engine (prefill + decode through its cache, whatever kernels it takes)
        # against this model's training forward on the same tokens.
        r_ids = t["check.gen_ids"].long()
        r_lp, r_ent = teacher_forced(model, prompts, r_ids.tolist())
        compare("rhythm_generate_logprobs", r_lp, t["check.gen_logprobs"], abs_tol=1e-4)
        compare("rhythm_generate_entropy", r_ent, t["check.gen_entropy"], abs_tol=1e-4)
        # This model's generation (the benchmarked KV-cache path) against its training forward,
        # and its tokens against rhythm's (same seed, same CPU generator).
        seeded = torch.Generator().manual_seed(0)
        p_ids, p_lp, p_ent = generate(model, prompts, r_ids.shape[1], seeded)
        f_lp, f_ent = teacher_forced(model, prompts, p_ids)
        compare("peer_generate_logprobs", torch.tensor(p_lp), f_lp, abs_tol=1e-4)
        compare("peer_generate_entropy", torch.tensor(p_ent), f_ent, abs_tol=1e-4)
        same = torch.tensor(p_ids) == r_ids
        results["same_sampled_tokens"] = f"{int(same.sum())}/{same.numel()}"
        # Sampling is a float comparison of probabilities: rounding differences between two
        # decode paths may flip a rare token (and the rest of that row). Most must agree.
        if int(same[:, 0].sum()) < same.shape[0] - 1 or float(same.float().mean()) < 0.75:
            failures.append(f"sampled tokens: only {results['same_sampled_tokens']} as rhythm's")
    # The learner step.
    opt = make_optimizer(model)
    loss = step_loss(model, ids, adv)
    loss.backward()
    compare("loss", loss.detach().reshape(1), t["check.loss"], rel=1e-5)
    grads = [(compare_quiet(p.grad, t["check.grad." + n]), n) for n, p in model.named_parameters()
             if "check.grad." + n in t]
    results["gradients_compared"] = len(grads)
    if len(grads) != len(list(model.parameters())):
        n = len(list(model.parameters()))
        failures.append(f"rhythm dumped {len(grads)} gradients, the model has {n}")
    worst = max(grads)
    results["grad_worst_rel_diff"] = {"tensor": worst[1], "rel": worst[0]}
    if not worst[0] <= 1e-4:
        failures.append(f"gradient of {worst[1]}: relative diff {worst[0]:.3g}")
    opt.step()
    worst = max(
        (compare_quiet(p.detach(), t["check.step." + n]), n) for n, p in model.named_parameters()
    )
    results["adamw_step_worst_rel_diff"] = {"tensor": worst[1], "rel": worst[0]}
    if not worst[0] <= 1e-5:
        failures.append(f"after AdamW, {worst[1]}: relative diff {worst[0]:.3g}")
    results["ok"] = not failures
    results["failures"] = failures
    print(json.dumps(results))
    if failures:
        print("peer_eager.py --check: the peer is NOT the same function as rhythm's model:\n  " +
              "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def compare_quiet(got, want):
    """max |got - want| relative to max |want|."""
    return (got - want).abs().max().item() / max(want.abs().max().item(), 1e-30)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mode", choices=["generate", "train", "gemm"], default="generate")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--check", metavar="FILE", help="bench_peer_shape --dump-check output")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.check:
        return run_check(args.check)
    run = {"generate": run_generate, "train": run_train, "gemm": run_gemm}[args.mode]
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
