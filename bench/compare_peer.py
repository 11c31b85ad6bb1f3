#!/usr/bin/python3
"""rhythm against a plain PyTorch-eager peer, side by side in one run (issue 16).

For each round and each thread count it runs, one subprocess each and alternately, so both
sides see the same machine load:

  peer gemm, rhythm gemm, peer generate, rhythm generate taps=0, rhythm generate taps=1,
  peer train, rhythm train

(peer = bench/peer_eager.py on Debian's python3-torch 1.13; rhythm = build/bin/bench_peer_shape
on the same LibTorch), then prints a markdown table: every round's figure for each side, the
median of the per-round ratios rhythm / peer, and each side's fraction of the machine's GEMM
peak (the best at::mm / torch.mm FLOP/s measured at that thread count, either side, any round).
Achieved FLOP/s = tokens/s x FLOP per token, counted from the model config (flop_per_token()).
Generate and train are also given per CPU-second of the process (all threads), which other load
on the machine disturbs less than wall clock.
Before timing anything it checks that the peer is the same function as rhythm's model
(bench_peer_shape --dump-check, peer_eager.py --check) and stops if not.

  /usr/bin/python3 bench/compare_peer.py [--rounds 3] [--threads 1,2] [--reps 3] [--warmup 1]
                                         [--json FILE] [--bin build/bin/bench_peer_shape]
                                         [--blas-coretype NAME | --peer-blas-as-is] [--no-check]
BLAS kernels: bench_peer_shape has OpenBLAS use the CPU's kernels (common/runtime.h
UseTheCpusBlasKernels; Debian's OpenBLAS 0.3.21 falls back to its SSE3 "Prescott" kernel on CPUs
newer than it knows; rhythm's own mains warn and leave the choice to OPENBLAS_CORETYPE). By default the peer is given the same kernels (OPENBLAS_CORETYPE), so the
ratios compare the frameworks; --peer-blas-as-is leaves it what OpenBLAS detects (what a plain
Python user gets); --blas-coretype forces one kernel for both. The header names them.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEER = os.path.join(HERE, "peer_eager.py")
PYTHON = "/usr/bin/python3"  # Debian's, with python3-torch

# bench/bench_model_config.h
CONFIG = dict(vocab=512, hidden=256, layers=4, heads=4, kv_heads=2, head_dim=64, ffn=1024)
BATCH, TRAIN_LEN, NEW_TOKENS = 16, 128, 128
PROMPT_LENS = [16 + i for i in range(BATCH)]  # generation_bench.cc's ragged prompts


def flop_per_token():
    """Useful FLOP, matmuls and attention only (norms, RoPE, softmax, sampling, the optimiser
    are left out; so is padding and any work a side repeats): 2 x (matmul parameters a token
    passes through) + per layer 2 x 2 x S x (heads x head_dim) for QK^T and PV at context S."""
    c = CONFIG
    q = c["heads"] * c["head_dim"]
    kv = c["kv_heads"] * c["head_dim"]
    d = c["hidden"]
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * c["ffn"]
    body = c["layers"] * per_layer          # q, k, v, o, gate, up, down
    lm_head = c["vocab"] * c["hidden"]      # tied to the embedding; the lookup itself is free
    attn_per_ctx = c["layers"] * 2 * 2 * q  # FLOP per token per key attended
    fwd_mm = 2 * (body + lm_head)
    # Train: every one of the T positions through body and lm_head, causal context 1..T
    # (average (T + 1) / 2); forward + backward = 3 x forward.
    s_train = (TRAIN_LEN + 1) / 2
    train_fwd = fwd_mm + attn_per_ctx * s_train
    # Generate, per row with a prompt of L tokens: the prompt (context 1..L) and the 127 fed
    # response tokens (context L + 1 .. L + 127) through the body; lm_head for the 128 positions
    # whose logits are sampled from (the prompt's last and the 127 fed). Per generated token.
    total = 0.0
    ctx_sum = 0.0
    for L in PROMPT_LENS:
        fed = NEW_TOKENS - 1
        ctx = L * (L + 1) / 2 + sum(L + j for j in range(1, fed + 1))
        ctx_sum += ctx
        total += 2 * body * (L + fed) + 2 * lm_head * NEW_TOKENS + attn_per_ctx * ctx
    gen_tokens = BATCH * NEW_TOKENS
    positions = sum(L + NEW_TOKENS - 1 for L in PROMPT_LENS)
    return {
        "matmul_params_body": body,
        "matmul_params_lm_head": lm_head,
        "forward_matmul_flop_per_token": fwd_mm,
        "attention_flop_per_token_per_key": attn_per_ctx,
        "train_avg_context": s_train,
        "train_forward_flop_per_token": train_fwd,
        "train": 3 * train_fwd,
        "generate_avg_context": ctx_sum / positions,
        "generate": total / gen_tokens,
    }


# Environments of the two sides' subprocesses (they differ in OPENBLAS_CORETYPE only).
RHYTHM_ENV = dict(os.environ)
PEER_ENV = dict(os.environ)


def run_json(cmd, env):
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        sys.exit(f"compare_peer: {' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-2000:]}")
    lines = [l for l in p.stdout.splitlines() if l.strip().startswith("{")]
    if not lines:
        sys.exit(
            f"compare_peer: {' '.join(cmd)} printed no JSON:\n"
            f"{p.stdout[-2000:]}{p.stderr[-2000:]}"
        )
    out = json.loads(lines[-1])
    out["stderr"] = p.stderr.strip()
    return out


def check_equivalence(binary):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "check.safetensors")
        p = subprocess.run([binary, "--dump-check", path], cwd=ROOT, env=RHYTHM_ENV,
                           capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"compare_peer: {binary} --dump-check failed:\n{p.stderr}")
        p = subprocess.run(
            [PYTHON, PEER, "--check", path], cwd=ROOT, env=PEER_ENV, capture_output=True, text=True
        )
        lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
        result = json.loads(lines[-1]) if lines else {"ok": False, "failures": [p.stderr[-2000:]]}
        return result


def git(*args):
    try:
        p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return p.stdout.strip()
    except OSError:
        return ""


def fmt_rate(v, unit):
    if unit == "GFLOP/s":
        return f"{v / 1e9:.1f}"
    return f"{v:,.0f}"


def pct(x):
    return f"{100 * x:.1f}%"


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument(
        "--reps", type=int, default=3, help="timed repetitions per subprocess (best is kept)"
    )
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin", "bench_peer_shape"))
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--no-check", action="store_true", help="skip the equivalence check")
    ap.add_argument("--blas-coretype", metavar="NAME",
                    help="OPENBLAS_CORETYPE for both sides (default: the kernels rhythm picks)")
    ap.add_argument("--peer-blas-as-is", action="store_true",
                    help="leave the peer the kernels OpenBLAS picks for it on its own")
    args = ap.parse_args()
    if not (os.path.isfile(args.bin) and os.access(args.bin, os.X_OK)):
        sys.exit(f"compare_peer: {args.bin} is missing; build it first:\n"
                 f"  cmake --build build -j 1 --target bench_peer_shape")
    if not os.path.isfile(PYTHON):
        sys.exit(f"compare_peer: {PYTHON} is missing (the peer needs Debian's python3-torch)")
    threads = [int(t) for t in args.threads.split(",")]
    # BLAS kernels. bench_peer_shape has OpenBLAS use the CPU's kernels (UseTheCpusBlasKernels)
    # unless OPENBLAS_CORETYPE is set; a Python user gets what OpenBLAS detects, which on CPUs
    # newer than Debian's OpenBLAS 0.3.21 is its generic SSE3 ("Prescott") kernel. By default
    # the peer gets rhythm's kernels, so the ratios compare the frameworks, not the BLAS.
    if args.blas_coretype:
        RHYTHM_ENV["OPENBLAS_CORETYPE"] = PEER_ENV["OPENBLAS_CORETYPE"] = args.blas_coretype
    rhythm_core = run_json([args.bin, "--blas-core"], RHYTHM_ENV)["blas_core"]
    if not args.blas_coretype and not args.peer_blas_as_is and rhythm_core:
        PEER_ENV["OPENBLAS_CORETYPE"] = rhythm_core
    cores = {"rhythm": set(), "peer": set()}

    status = git("status", "--porcelain", "--", "common", "actor", "learner")
    dirty = [l[3:] for l in status.splitlines()]
    cpu = platform.processor()
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip()
            break
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "git_head": git("rev-parse", "--short", "HEAD"),
        "uncommitted_in_common_actor_learner": dirty,
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "openblas_coretype_rhythm": RHYTHM_ENV.get("OPENBLAS_CORETYPE"),
        "openblas_coretype_peer": PEER_ENV.get("OPENBLAS_CORETYPE"),
        "loadavg_start": os.getloadavg(),
        "rounds": args.rounds, "threads": threads, "reps": args.reps, "warmup": args.warmup,
    }
    flop = flop_per_token()

    check = None
    if not args.no_check:
        check = check_equivalence(args.bin)
        if not check.get("ok"):
            sys.exit("compare_peer: the peer is not the same function as rhythm's model; "
                     "not comparing:\n  " + "\n  ".join(check.get("failures", [])))

    common = ["--reps", str(args.reps), "--warmup", str(args.warmup)]
    order = [
        ("peer", "gemm", [PYTHON, PEER, "--mode", "gemm"]),
        ("rhythm", "gemm", [args.bin, "--mode", "gemm"]),
        ("peer", "generate", [PYTHON, PEER, "--mode", "generate"]),
        ("rhythm", "generate", [args.bin, "--mode", "generate", "--taps", "0"]),
        ("rhythm", "generate_taps", [args.bin, "--mode", "generate", "--taps", "1"]),
        ("peer", "train", [PYTHON, PEER, "--mode", "train"]),
        ("rhythm", "train", [args.bin, "--mode", "train"]),
    ]
    runs = []
    # results[threads][(side, mode)] = [per-round figure]
    results = {t: {} for t in threads}
    ins = {t: {} for t in threads}
    ins_error = None
    for r in range(args.rounds):
        for t in threads:
            for side, mode, cmd in order:
                env = PEER_ENV if side == "peer" else RHYTHM_ENV
                out = run_json(cmd + ["--threads", str(t)] + common, env)
                out["round"] = r
                cores[side].add(out.get("blas_core") or "unknown")
                runs.append(out)
                v = out["flops_per_s"] if mode == "gemm" else out["tokens_per_s"]
                results[t].setdefault((side, mode), []).append(v)
                if "tokens_per_cpu_s" in out:
                    results[t].setdefault((side, mode + "_cpu"), []).append(out["tokens_per_cpu_s"])
                if side == "rhythm" and mode.startswith("generate"):
                    if out.get("instructions_per_token") is not None:
                        ins[t].setdefault(mode, []).append(out["instructions_per_token"])
                    elif out.get("instructions_error"):
                        ins_error = out["instructions_error"]
                print(f"round {r + 1}/{args.rounds} threads {t} {side:6s} {mode:13s} "
                      f"{fmt_rate(v, 'GFLOP/s' if mode == 'gemm' else 'tok/s')}", file=sys.stderr)
    meta["loadavg_end"] = os.getloadavg()
    meta["openblas_core"] = {side: sorted(c) for side, c in cores.items()}

    lines = []
    say = lines.append
    dirty_note = f" + uncommitted changes to {len(dirty)} files in common/actor/learner"
    dirty_note = dirty_note if dirty else ""
    def kernels(side, env):
        how = (f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}" if "OPENBLAS_CORETYPE" in env
               else "OpenBLAS's own choice")
        if side == "rhythm" and "OPENBLAS_CORETYPE" not in os.environ and not args.blas_coretype:
            how = "rhythm's UseTheCpusBlasKernels"
        elif side == "peer" and not args.blas_coretype and "OPENBLAS_CORETYPE" in env:
            how += ", as rhythm's"
        return f"{side} {'/'.join(meta['openblas_core'][side])} ({how})"
    say(f"rhythm (`bench_peer_shape`) vs PyTorch eager (`bench/peer_eager.py`), {meta['date']}, "
        f"HEAD {meta['git_head']}{dirty_note}; {meta['cpus']} CPUs ({meta['cpu']}), "
        f"OpenBLAS kernels: {kernels('rhythm', RHYTHM_ENV)}, {kernels('peer', PEER_ENV)}; "
        f"{args.rounds} rounds, each figure the best of {args.reps} timed runs after "
        f"{args.warmup} warm-up; load average {meta['loadavg_start'][0]:.2f} at the start, "
        f"{meta['loadavg_end'][0]:.2f} at the end.")
    say("")
    if check is not None:
        say("Same function: on rhythm's weights the peer's training-forward logits differ by "
            f"{check['forward_logits']['max_abs_diff']:.2g} at most; rhythm's generated tokens' "
            f"log-probs by {check['rhythm_generate_logprobs']['max_abs_diff']:.2g} from the peer's "
            f"forward; the peer's KV-cache generation by "
            f"{check['peer_generate_logprobs']['max_abs_diff']:.2g}; "
            f"{check['same_sampled_tokens']} sampled tokens identical with the same seed; "
            f"loss diff "
            f"{check['loss']['max_abs_diff']:.2g}; worst gradient rel. diff "
            f"{check['grad_worst_rel_diff']['rel']:.2g}; after one AdamW step "
            f"{check['adamw_step_worst_rel_diff']['rel']:.2g} "
            f"({check['parameters']:,} parameters).")
        say("")
    say(f"FLOP per token (matmuls and attention only, useful work only): a token through the "
        f"model is 2 x {flop['matmul_params_body']:,} body matmul parameters (q, k, v, o, gate, "
        f"up, down x 4 layers) + 2 x {flop['matmul_params_lm_head']:,} for lm_head (the embedding "
        f"lookup is free) + {flop['attention_flop_per_token_per_key']:,} FLOP per attended key "
        f"(QK^T and PV, 4 heads x 64, 4 layers). Train: 3 x forward at the average causal context "
        f"{flop['train_avg_context']:.1f} = {flop['train'] / 1e6:.2f} MFLOP per token. Generate: "
        f"each row's prompt (16..31 tokens, lm_head only for its last) and 127 fed tokens, each "
        f"at its own context (average {flop['generate_avg_context']:.1f}), over the 2,048 "
        f"generated tokens = {flop['generate'] / 1e6:.2f} MFLOP per generated token.")
    summary = {}
    for t in threads:
        res = results[t]
        peak = max(res[("peer", "gemm")] + res[("rhythm", "gemm")])
        summary[t] = {"gemm_peak_flops_per_s": peak, "modes": {}}
        say("")
        say(f"**{t} thread{'s' if t > 1 else ''}** — GEMM peak {peak / 1e9:.1f} GFLOP/s "
            f"(best fp32 mm of 2048x256x1024, 1024^3, 2048^3, either side, any round)")
        say("")
        say("| mode | unit | peer, per round | rhythm, per round | rhythm / peer (median) "
            "| peer % of peak | rhythm % of peak |")
        say("|---|---|---|---|---|---|---|")
        rows = [("gemm", "gemm", "GFLOP/s", None),
                ("generate, taps off", "generate", "tok/s", flop["generate"]),
                ("generate, taps on", "generate_taps", "tok/s", flop["generate"]),
                ("train step", "train", "tok/s", flop["train"]),
                ("generate, taps off", "generate_cpu", "tok/CPU-s", flop["generate"]),
                ("generate, taps on", "generate_taps_cpu", "tok/CPU-s", flop["generate"]),
                ("train step", "train_cpu", "tok/CPU-s", flop["train"])]
        for label, mode, unit, fpt in rows:
            peer_mode = mode.replace("generate_taps", "generate")
            pv, rv = res[("peer", peer_mode)], res[("rhythm", mode)]
            ratio = statistics.median(b / a for a, b in zip(pv, rv))
            to_flops = (lambda v: v) if fpt is None else (lambda v, f=fpt: v * f)
            pf = to_flops(statistics.median(pv)) / peak
            rf = to_flops(statistics.median(rv)) / peak
            # Per CPU-second against the one-thread peak only (at t > 1 a CPU-second is a
            # fraction of the t-thread machine).
            show_peak = not mode.endswith("_cpu") or t == 1
            summary[t]["modes"][mode] = {"peer": pv, "rhythm": rv, "ratio_median": ratio,
                                         "peer_fraction_of_peak": pf, "rhythm_fraction_of_peak": rf,
                                         "unit": unit}
            peer_note = " (peer: no taps)" if mode.startswith("generate_taps") else ""
            say(f"| {label}{peer_note} | {unit} | {' / '.join(fmt_rate(v, unit) for v in pv)} | "
                f"{' / '.join(fmt_rate(v, unit) for v in rv)} | {ratio:.2f} | "
                f"{pct(pf) if show_peak else '–'} | {pct(rf) if show_peak else '–'} |")
        off, on = res[("rhythm", "generate")], res[("rhythm", "generate_taps")]
        paired = [a / b - 1 for a, b in zip(off, on)]  # time on / time off - 1
        taps = {"wall_clock_overhead_median": statistics.median(paired),
                "wall_clock_overhead_rounds": paired}
        c_off, c_on = res[("rhythm", "generate_cpu")], res[("rhythm", "generate_taps_cpu")]
        c_paired = [a / b - 1 for a, b in zip(c_off, c_on)]
        taps.update(cpu_time_overhead_median=statistics.median(c_paired),
                    cpu_time_overhead_rounds=c_paired)
        say("")
        line = (f"Taps overhead ({t} thread{'s' if t > 1 else ''}): wall clock "
                f"{100 * statistics.median(paired):+.1f}% (median of paired rounds: "
                f"{', '.join(f'{100 * x:+.1f}%' for x in paired)}); CPU time "
                f"{100 * statistics.median(c_paired):+.1f}% "
                f"({', '.join(f'{100 * x:+.1f}%' for x in c_paired)})")
        if ins[t].get("generate") and ins[t].get("generate_taps"):
            i_off = statistics.median(ins[t]["generate"])
            i_on = statistics.median(ins[t]["generate_taps"])
            taps.update(instructions_per_token_off=i_off, instructions_per_token_on=i_on,
                        instructions_overhead=i_on / i_off - 1)
            line += (f"; user-space instructions per token {i_off:,.0f} off, {i_on:,.0f} on: "
                     f"{100 * (i_on / i_off - 1):+.1f}%")
        else:
            taps["instructions_unavailable"] = ins_error
            line += f"; instructions per token: unavailable ({ins_error})"
        summary[t]["taps"] = taps
        say(line + ".")
    text = "\n".join(lines)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "check": check, "flop_per_token": flop,
                       "summary": {str(k): v for k, v in summary.items()}, "runs": runs,
                       "markdown": text}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
