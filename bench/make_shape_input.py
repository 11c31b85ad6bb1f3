#!/usr/bin/python3
"""Writes a synthetic `rhythm shape` input: N responses x T tokens, groups of G.

WAAD has the saw-tooth shape of real responses (peaks at chunk starts), FAI is undefined on
the last 10 tokens as the band makes it, entropy and rewards are random. Seeded.
usage: make_shape_input.py OUT.jsonl [--responses 10000] [--tokens 512] [--group 8] [--seed 0]
"""
import argparse

import numpy as np


def fmt(values):
    return "[" + ",".join(np.char.mod("%.4g", values)) + "]"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--responses", type=int, default=10000)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    t = a.tokens
    with open(a.out, "w") as f:
        for i in range(a.responses):
            phase = np.arange(t) % rng.integers(4, 12)
            waad = 1.0 + 8.0 * (phase == 0) + rng.random(t)
            fai = rng.random(t) * 0.05
            fai_text = fmt(fai[: max(0, t - 10)])
            fai_text = fai_text[:-1] + ("," if t > 10 else "") + ",".join(["null"] * min(t, 10)) + "]"
            entropy = rng.random(t) * 2.0
            reward = float(rng.random() < 0.4)
            f.write('{"group": %d, "reward": %s, "waad": %s, "fai": %s, "entropy": %s}\n'
                    % (i // a.group, reward, fmt(waad), fai_text, fmt(entropy)))


if __name__ == "__main__":
    main()
