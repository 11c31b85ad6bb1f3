#!/usr/bin/python3
"""Writes the seed corpora under fuzz/corpus/ (run once; the output is committed).

Sources: runs/warm-countdown3 (the tiny model's config.json, its safetensors header and
rhythm_tokenizer.json), hf_bpe_tokenizer_test.cc's tiny BPE, the first 400 tokens of Qwen3's
tokenizer.json (~/.cache/rhythm/qwen3-tokenizer, fetched by scripts/setup.sh), the deploy and
run configs, and rollouts encoded by hand in protobuf's wire format (rhythm.v1.Rollout).
"""
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    os.makedirs(os.path.join(OUT, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(OUT, target, name), "wb") as f:
        f.write(data)


def read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


# --- hf_config ---
tiny_config = read("runs/warm-countdown3/config.json")
put("hf_config", "tiny_qwen2.json", tiny_config)
qwen3 = {"architectures": ["Qwen3ForCausalLM"], "vocab_size": 151936, "hidden_size": 1024,
         "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
         "head_dim": 128, "intermediate_size": 3072, "max_position_embeddings": 40960,
         "rope_theta": 1000000, "rms_norm_eps": 1e-06, "hidden_act": "silu",
         "attention_bias": False, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
         "bos_token_id": 151643, "eos_token_id": 151645, "rope_scaling": None,
         "use_sliding_window": False}
put("hf_config", "qwen3_0p6b.json", json.dumps(qwen3, indent=2))
llama = {"architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 2048,
         "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
         "intermediate_size": 8192, "max_position_embeddings": 131072, "rope_theta": 500000.0,
         "rms_norm_eps": 1e-05, "hidden_act": "silu", "mlp_bias": False,
         "tie_word_embeddings": True, "torch_dtype": "bfloat16", "bos_token_id": 128000,
         "eos_token_id": [128001, 128008, 128009],
         "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                          "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
put("hf_config", "llama3_1b.json", json.dumps(llama, indent=2))


# --- safetensors ---
def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes)."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    data = b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def f16(values):
    return struct.pack("<%de" % len(values), *values)


def bf16(values):
    return b"".join(struct.pack("<f", v)[2:] for v in values)


names = [("model.embed_tokens.weight", [6, 4]), ("model.layers.0.input_layernorm.weight", [4]),
         ("model.layers.0.self_attn.q_proj.bias", [4]), ("model.norm.weight", [4])]
for dtype, enc in (("F32", f32), ("F16", f16), ("BF16", bf16)):
    tensors = []
    for name, shape in names:
        n = 1
        for d in shape:
            n *= d
        tensors.append((name, dtype, shape, enc([0.25 * (i % 7) - 0.5 for i in range(n)])))
    put("safetensors", "tiny_%s.safetensors" % dtype.lower(),
        safetensors(tensors, {"format": "pt"}))
put("safetensors", "empty.safetensors", safetensors([], {"format": "pt"}))
put("safetensors", "scalar_and_zero.safetensors",
    safetensors([("s", "F32", [], f32([1.5])), ("z", "F16", [0, 3], b"")]))
# The real header of the tiny checkpoint (51 tensors), without its 3 MB of data: rejected as
# truncated, but every entry is parsed first.
real = read("runs/warm-countdown3/model.safetensors")
(header_len,) = struct.unpack("<Q", real[:8])
put("safetensors", "warm_countdown3_header_only.safetensors", real[:8 + header_len])

# --- tokenizer_json ---
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
                r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
              "use_regex": False}
tiny_tok = {
    "version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [{"id": 10, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True}],
    "normalizer": {"type": "NFC"},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated",
         "invert": False}, byte_level]},
    "post_processor": byte_level, "decoder": byte_level,
    "model": {"type": "BPE", "dropout": None, "unk_token": None,
              "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
              "byte_fallback": False, "ignore_merges": False,
              "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "bc": 5, "abc": 6, "Ġa": 7,
                        "Ġab": 8, "cc": 9, "Ã": 11, "©": 12, "Ã©": 13, "Ċ": 14},
              "merges": ["a b", "b c", ["ab", "c"], ["Ġ", "a"], "Ġa b", "c c", "Ã ©"]}}
put("tokenizer_json", "tiny_bpe.json", json.dumps(tiny_tok, ensure_ascii=False))
gpt2 = json.loads(json.dumps(tiny_tok))
gpt2["normalizer"] = None
gpt2["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                         "use_regex": True}
gpt2["model"]["unk_token"] = "c"
gpt2["added_tokens"].append({"id": 15, "content": " ab", "single_word": True, "lstrip": True,
                             "rstrip": True, "normalized": True, "special": False})
put("tokenizer_json", "gpt2_style.json", json.dumps(gpt2, ensure_ascii=False))
qwen_path = os.path.expanduser("~/.cache/rhythm/qwen3-tokenizer/tokenizer.json")
with open(qwen_path, encoding="utf-8") as f:
    q = json.load(f)
vocab = {t: i for t, i in q["model"]["vocab"].items() if i < 400}
merges = [m for m in q["model"]["merges"]
          if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
q["model"]["vocab"] = vocab
q["model"]["merges"] = merges
q["added_tokens"] = [dict(t, id=400 + k) for k, t in enumerate(q["added_tokens"][:6])]
put("tokenizer_json", "qwen3_first400.json", json.dumps(q, ensure_ascii=False))
put("tokenizer_json", "rhythm_tokenizer.json", read("runs/warm-countdown3/rhythm_tokenizer.json"))


# --- rollout_validation: protobuf wire format by hand ---
def varint(n):
    out = b""
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def field_bytes(num, data):
    return varint((num << 3) | 2) + varint(len(data)) + data


def field_double(num, v):
    return varint((num << 3) | 1) + struct.pack("<d", v)


def packed_varints(num, values):
    return field_bytes(num, b"".join(varint(v) for v in values))


def rollout(n=5, reward=1.0, logprobs=None, spans=((0, 0),), summary=True, vocab_ids=None,
            group_size=4, sample_index=1, rollout_id=7):
    ids = vocab_ids or [3 + i % 20 for i in range(n)]
    lps = logprobs or [-0.5 - 0.1 * i for i in range(n)]
    msg = field_varint(1, rollout_id) + field_bytes(2, b"actor-0") + field_bytes(3, b"run-a1")
    msg += field_varint(4, 42) + field_varint(5, 9) + field_varint(6, sample_index)
    msg += field_varint(7, group_size)
    for begin, version in spans:
        msg += field_bytes(8, field_varint(1, begin) + field_varint(2, version))
    msg += packed_varints(9, [1, 5, 6, 7]) + packed_varints(10, ids)
    msg += field_bytes(11, f32(lps)) + field_bytes(12, f32([0.7] * n))
    msg += field_bytes(13, field_double(1, reward) + field_varint(2, 1) + field_varint(3, 1) +
                       field_bytes(4, b"24") + field_bytes(5, b"ok"))
    msg += field_varint(14, 1)
    if summary:
        s = field_bytes(1, f16([0.1 * i for i in range(n)]))
        s += field_bytes(2, f16([float("nan")] + [0.2] * (n - 1)))
        s += field_varint(4, 4) + field_varint(5, 2) + field_varint(6, 8)
        s += packed_varints(7, [1, 3]) + field_varint(8, 4) + packed_varints(9, [0, 5])
        s += packed_varints(10, [2, 7])
        msg += field_bytes(15, s)
    msg += field_double(16, 0.25)
    return msg


put("rollout_validation", "valid_summary.pb", rollout())
put("rollout_validation", "valid_no_summary.pb", rollout(n=3, summary=False))
put("rollout_validation", "valid_two_spans.pb", rollout(n=6, spans=((0, 0), (3, 0))))
put("rollout_validation", "reward_1e308.pb", rollout(reward=1e308))
put("rollout_validation", "nan_logprob.pb", rollout(logprobs=[-1, float("nan"), -1, -1, -1]))
put("rollout_validation", "span_begin_2p31.pb", rollout(spans=((0, 0), (1 << 31, 0))))
put("rollout_validation", "negative_version.pb", rollout(spans=((0, -1),)))
put("rollout_validation", "out_of_vocab.pb", rollout(vocab_ids=[1, 2, 99999999, 4, 5]))

# --- config_yaml ---
put("config_yaml", "deploy_rhythm.yaml", read("deploy/config/rhythm.yaml"))
put("config_yaml", "ablation.yaml", read("runs/ablation/config.yaml"))
put("config_yaml", "readme_example.yaml",
    "trainer:\n  lr: 1e-6\n  group_size: 8\ncredit:\n  strategy: coupled\n  quantile: 0.4\n"
    "  invert_selection: false\n")
put("config_yaml", "with_set_lines.yaml",
    "#set trainer.lr=2e-6\n#set generation.stop_strings=[\".\\n\"]\ntrainer:\n  lr: ~\n"
    "generation:\n  stop_strings: [\"\\n\\n\"]\n")

# Chat templates (the tokenizer target also reads its input as chat_template.jinja and as
# tokenizer_config.json): Qwen2.5's (a default system prompt), Llama 3 and Llama 3.1.
templates = {}
with open(os.path.join(ROOT, "common/tokenizer/testdata/chat_templates.jsonl")) as f:
    for line in f:
        d = json.loads(line)
        templates[d["name"]] = d
for name, file in (("qwen2.5:0.5b", "qwen2p5_chat_template.jinja"),
                   ("llama3", "llama3_chat_template.jinja"),
                   ("llama3.1:8b", "llama3p1_chat_template.jinja")):
    put("tokenizer_json", file, templates[name]["chat_template"])
put("tokenizer_json", "qwen3_tokenizer_config.json",
    json.dumps({"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                "chat_template": templates["qwen3"]["chat_template"]}))

# Nesting past common/json_limits.h's bound (64 levels): refused, not recursed into.
deep = "[" * 100 + "]" * 100
put("hf_config", "deep_rope_scaling.json",
    tiny_config.decode().rstrip().rstrip("}") + ', "rope_scaling": ' + deep + "}\n")
put("tokenizer_json", "deep_normalizer.json",
    json.dumps(tiny_tok, ensure_ascii=False).replace('{"type": "NFC"}', deep, 1))
deep_header = ('{"t": {"dtype": "F32", "shape": ' + deep + ', "data_offsets": [0, 0]}}').encode()
put("safetensors", "deep_shape.safetensors", struct.pack("<Q", len(deep_header)) + deep_header)
