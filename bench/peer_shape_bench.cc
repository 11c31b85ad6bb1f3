// The rhythm side of the side-by-side comparison with a plain PyTorch-eager peer
// (bench/peer_eager.py; driver bench/compare_peer.py, issue 16): the same bench model, the same
// three modes, the same flags and the same one-line JSON, so the two can be run alternately on
// one machine and compared as ratios.
//
//   generate  16 ragged prompts (16..31 tokens), 128 new tokens each, temperature 1, no stop
//             ids: GenerationEngine, taps on or off; tokens/s and user-space instructions per
//             generated token (perf_event_open; null when the kernel refuses)
//   train     one learner step on 16 x 128: Forward, log_softmax, gather of the next tokens,
//             -(adv * logp).mean(), backward, AdamW (lr 3e-4, rhythm's defaults), zero grad
//   gemm      FLOP/s of at::mm on fp32 matrices, the best of a few shapes
// generate and train also report tokens per CPU-second of the process (all threads), which a
// busy machine disturbs less than wall clock.
//
// build/bin/bench_peer_shape --mode generate|train|gemm [--threads N] [--reps R] [--warmup W]
//                            [--taps 0|1] [--max-new 128]
// build/bin/bench_peer_shape --dump-check FILE   weights, inputs and reference outputs for
//                                                peer_eager.py --check FILE
// build/bin/bench_peer_shape --blas-core         the OpenBLAS kernels rhythm runs on
// It first has OpenBLAS use the CPU's kernels (UseTheCpusBlasKernels; OPENBLAS_CORETYPE
// overrides), and every JSON line names them ("blas_core").
#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/CPUGeneratorImpl.h"
#include "ATen/Parallel.h"
#include "bench/bench_model_config.h"
#include "common/model/adamw.h"
#include "common/model/safetensors.h"
#include "common/model/transformer.h"
#include "common/rollout/engine.h"
#include "common/runtime.h"

namespace rhythm::bench {
namespace {

namespace model = common::model;
namespace rollout = common::rollout;

constexpr int64_t kBatch = 16;
constexpr int64_t kTrainLen = 128;
constexpr double kLr = 3e-4;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Join(const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s%.6g", i ? ", " : "", v[i]);
    s += buf;
  }
  return s + "]";
}

// CPU seconds of the whole process, every thread (as Python's time.process_time()).
double CpuNow() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double Max(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// User-space instructions of this process, all threads: opened before any worker thread
// exists, with inherit, so the OpenMP pool created later is counted too (ioctl enable/disable
// and read cover inherited children).
class InstructionCounter {
 public:
  InstructionCounter() {
    perf_event_attr attr;
    std::memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_HARDWARE;
    attr.config = PERF_COUNT_HW_INSTRUCTIONS;
    attr.disabled = 1;
    attr.inherit = 1;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    fd_ = static_cast<int>(syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
    if (fd_ < 0) {
      const int e = errno;
      error_ = std::string("perf_event_open(PERF_COUNT_HW_INSTRUCTIONS): ") + std::strerror(e);
      if (e == ENOENT || e == EOPNOTSUPP) {
        error_ += " (no hardware counter: the kernel has no PMU driver here, e.g. a VM without a "
                  "virtual PMU)";
      } else if (e == EACCES || e == EPERM) {
        error_ += " (see /proc/sys/kernel/perf_event_paranoid)";
      }
    }
  }
  ~InstructionCounter() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  const std::string& error() const { return error_; }
  void Start() {
    if (fd_ < 0) return;
    ioctl(fd_, PERF_EVENT_IOC_RESET, 0);
    ioctl(fd_, PERF_EVENT_IOC_ENABLE, 0);
  }
  // Instructions since Start, or -1.
  double Stop() {
    if (fd_ < 0) return -1;
    ioctl(fd_, PERF_EVENT_IOC_DISABLE, 0);
    uint64_t count = 0;
    if (read(fd_, &count, sizeof count) != sizeof count) return -1;
    return static_cast<double>(count);
  }

 private:
  int fd_ = -1;
  std::string error_;
};

struct Flags {
  std::string mode = "generate";
  int threads = 1;
  int reps = 3;
  int warmup = 1;
  bool taps = false;
  int64_t max_new = 128;
  std::string dump_check;
  bool blas_core = false;
};

[[noreturn]] void Usage(const char* msg) {
  std::fprintf(stderr,
               "bench_peer_shape: %s\nusage: bench_peer_shape --mode generate|train|gemm "
               "[--threads N] [--reps R] [--warmup W] [--taps 0|1] [--max-new N]\n"
               "       bench_peer_shape --dump-check FILE\n"
               "       bench_peer_shape --blas-core\n",
               msg);
  std::exit(2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--mode") {
      f.mode = value();
    } else if (a == "--threads") {
      f.threads = std::atoi(value().c_str());
    } else if (a == "--reps") {
      f.reps = std::atoi(value().c_str());
    } else if (a == "--warmup") {
      f.warmup = std::atoi(value().c_str());
    } else if (a == "--taps") {
      f.taps = value() != "0";
    } else if (a == "--max-new") {
      f.max_new = std::atoll(value().c_str());
    } else if (a == "--dump-check") {
      f.dump_check = value();
    } else if (a == "--blas-core") {
      f.blas_core = true;
    } else {
      Usage(("unknown flag " + a).c_str());
    }
  }
  if (f.threads < 1 || f.reps < 1 || f.warmup < 0 || f.max_new < 1) Usage("bad flag value");
  if (f.mode != "generate" && f.mode != "train" && f.mode != "gemm") Usage("bad --mode");
  return f;
}

std::vector<std::vector<int32_t>> BenchPrompts() {
  std::vector<std::vector<int32_t>> prompts(kBatch);
  for (int i = 0; i < kBatch; ++i) {
    for (int j = 0; j < 16 + i; ++j) prompts[i].push_back((i * 31 + j * 7) % 512);  // ragged
  }
  return prompts;
}

std::string Header(const Flags& f) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "{\"side\": \"rhythm\", \"mode\": \"%s\", \"threads\": %d, \"reps\": %d, "
                "\"warmup\": %d, \"blas_core\": \"%s\"",
                f.mode.c_str(), at::get_num_threads(), f.reps, f.warmup,
                common::BlasCore().c_str());
  return buf;
}

int RunGenerate(const Flags& f, InstructionCounter& counter) {
  auto m = *model::Transformer::RandomInit(BenchModelConfig(), 0);
  const auto prompts = BenchPrompts();
  rollout::GenerationOptions o;
  o.max_new_tokens = f.max_new;
  o.taps = f.taps;
  std::vector<double> tok_s, cpu_tok_s, ins_tok;
  int64_t tokens = 0;
  for (int r = 0; r < f.warmup + f.reps; ++r) {
    rollout::GenerationStats stats;
    counter.Start();
    const double t0 = Now(), c0 = CpuNow();
    auto out = rollout::GenerationEngine(*m).Generate(prompts, o, &stats);
    const double dt = Now() - t0, dc = CpuNow() - c0;
    const double ins = counter.Stop();
    if (!out.ok()) {
      std::fprintf(stderr, "generate: %s\n", std::string(out.status().message()).c_str());
      return 1;
    }
    tokens = stats.new_tokens;
    if (r < f.warmup) continue;
    tok_s.push_back(static_cast<double>(tokens) / dt);
    cpu_tok_s.push_back(static_cast<double>(tokens) / dc);
    if (ins >= 0) ins_tok.push_back(ins / static_cast<double>(tokens));
  }
  std::string ins_json = "null";
  std::string ins_all = "null";
  std::string ins_error = "null";
  if (!counter.ok()) {
    ins_error = "\"";
    for (char ch : counter.error()) {
      if (ch == '"' || ch == '\\') ins_error += '\\';
      ins_error += ch;
    }
    ins_error += '"';
  }
  if (!ins_tok.empty()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", Median(ins_tok));
    ins_json = buf;
    ins_all = Join(ins_tok);
  }
  std::printf("%s, \"taps\": %d, \"tokens\": %lld, \"tokens_per_s\": %.6g, \"values\": %s, "
              "\"tokens_per_cpu_s\": %.6g, \"cpu_values\": %s, "
              "\"instructions_per_token\": %s, \"instructions_per_token_values\": %s, "
              "\"instructions_error\": %s}\n",
              Header(f).c_str(), f.taps ? 1 : 0, static_cast<long long>(tokens), Max(tok_s),
              Join(tok_s).c_str(), Max(cpu_tok_s), Join(cpu_tok_s).c_str(), ins_json.c_str(),
              ins_all.c_str(), ins_error.c_str());
  return 0;
}

// A learner step's loss without clipping or credit shaping: -(adv * log p(next token)), averaged
// over every position of every row.
at::Tensor StepLoss(const model::Transformer& m, const at::Tensor& ids, const at::Tensor& mask,
                    const at::Tensor& adv) {
  const int64_t t = ids.size(1);
  const at::Tensor logits = m.Forward(ids, mask).value().logits;
  const at::Tensor logp = at::log_softmax(logits.narrow(1, 0, t - 1), -1)
                              .gather(-1, ids.narrow(1, 1, t - 1).unsqueeze(-1))
                              .squeeze(-1);
  return -(adv.unsqueeze(1) * logp).mean();
}

int RunTrain(const Flags& f) {
  auto m = *model::Transformer::RandomInit(BenchModelConfig(), 0);
  m->SetRequiresGrad(true);
  model::AdamW opt(m->NamedParameters(), model::AdamW::Options{});
  at::Generator gen = at::detail::createCPUGenerator(1);
  const at::Tensor ids = at::randint(512, {kBatch, kTrainLen}, gen, at::kLong);
  const at::Tensor mask = at::ones({kBatch, kTrainLen});
  const at::Tensor adv = at::randn({kBatch}, gen);
  std::vector<double> tok_s, cpu_tok_s;
  for (int r = 0; r < f.warmup + f.reps; ++r) {
    const double t0 = Now(), c0 = CpuNow();
    StepLoss(*m, ids, mask, adv).backward();
    opt.Step(kLr);
    opt.ZeroGrad();
    const double dt = Now() - t0, dc = CpuNow() - c0;
    if (r < f.warmup) continue;
    tok_s.push_back(kBatch * kTrainLen / dt);
    cpu_tok_s.push_back(kBatch * kTrainLen / dc);
  }
  std::printf("%s, \"tokens\": %lld, \"tokens_per_s\": %.6g, \"values\": %s, "
              "\"tokens_per_cpu_s\": %.6g, \"cpu_values\": %s}\n",
              Header(f).c_str(), static_cast<long long>(kBatch * kTrainLen), Max(tok_s),
              Join(tok_s).c_str(), Max(cpu_tok_s), Join(cpu_tok_s).c_str());
  return 0;
}

int RunGemm(const Flags& f) {
  // (M, K, N): the train forward's MLP shape, a square one and a large one.
  const std::vector<std::array<int64_t, 3>> shapes = {
      {2048, 256, 1024}, {1024, 1024, 1024}, {2048, 2048, 2048}};
  std::vector<double> best_per_shape, all;
  std::string shape_json = "{";
  double best = 0;
  std::string best_shape;
  for (const auto& [mm, k, n] : shapes) {
    const at::Tensor a = at::randn({mm, k}), b = at::randn({k, n});
    const double flop = 2.0 * mm * k * n;
    // Enough iterations for ~0.2 s at 50 GFLOP/s.
    const int iters = std::max<int>(1, static_cast<int>(1e10 / flop));
    double shape_best = 0;
    for (int r = 0; r < f.warmup + f.reps; ++r) {
      const double t0 = Now();
      for (int i = 0; i < iters; ++i) at::mm(a, b);
      const double v = flop * iters / (Now() - t0);
      if (r < f.warmup) continue;
      all.push_back(v);
      shape_best = std::max(shape_best, v);
    }
    char name[64];
    std::snprintf(name, sizeof name, "%lldx%lldx%lld", static_cast<long long>(mm),
                  static_cast<long long>(k), static_cast<long long>(n));
    char entry[128];
    std::snprintf(entry, sizeof entry, "%s\"%s\": %.6g", shape_json.size() > 1 ? ", " : "", name,
                  shape_best);
    shape_json += entry;
    if (shape_best > best) {
      best = shape_best;
      best_shape = name;
    }
  }
  shape_json += "}";
  std::printf("%s, \"flops_per_s\": %.6g, \"best_shape\": \"%s\", \"per_shape\": %s, "
              "\"values\": %s}\n",
              Header(f).c_str(), best, best_shape.c_str(), shape_json.c_str(),
              Join(all).c_str());
  return 0;
}

// Weights, inputs and rhythm's outputs for the peer's equivalence check (only public API that
// the training forward and the engine use, so the check covers whatever decode path the engine
// takes):
//   the model's parameters under their Hugging Face names;
//   check.ids / check.mask [2, 24], the second row left-padded by 7, and Forward's logits
//   check.forward_logits [2, 24, V];
//   the bench's generation (16 prompts, 32 new tokens, seed 0, taps off): check.gen_ids,
//   check.gen_logprobs and check.gen_entropy [16, 32];
//   the learner step on check.ids (mask all ones) with check.adv [2]: check.loss,
//   check.grad.<name> and check.step.<name> (the parameters after one AdamW step, lr 3e-4).
// Ids are stored as float32 (exact below 2^24).
int DumpCheck(const std::string& path) {
  constexpr int64_t kNew = 32;
  auto m = *model::Transformer::RandomInit(BenchModelConfig(), 0);
  model::TensorMap out;
  for (const auto& [name, t] : m->NamedParameters()) out[name] = t.clone();
  at::Generator gen = at::detail::createCPUGenerator(7);
  const int64_t t = 24, pad = 7;
  at::Tensor ids = at::randint(512, {2, t}, gen, at::kLong);
  at::Tensor mask = at::ones({2, t});
  ids[1].narrow(0, 0, pad).fill_(0);
  mask[1].narrow(0, 0, pad).fill_(0);
  const at::Tensor adv = at::randn({2}, gen);
  out["check.ids"] = ids.to(at::kFloat);
  out["check.mask"] = mask;
  out["check.adv"] = adv;
  {
    at::InferenceMode guard;
    out["check.forward_logits"] = m->Forward(ids, mask).value().logits.clone();
  }
  rollout::GenerationOptions o;
  o.max_new_tokens = kNew;
  o.taps = false;
  auto samples = rollout::GenerationEngine(*m).Generate(BenchPrompts(), o);
  if (!samples.ok()) {
    std::fprintf(stderr, "generate: %s\n", std::string(samples.status().message()).c_str());
    return 1;
  }
  at::Tensor gen_ids = at::zeros({kBatch, kNew}), gen_lp = at::zeros({kBatch, kNew}),
             gen_ent = at::zeros({kBatch, kNew});
  for (int64_t b = 0; b < kBatch; ++b) {
    const rollout::GeneratedSample& sample = (*samples)[b];
    if (static_cast<int64_t>(sample.response_ids.size()) != kNew) {
      std::fprintf(stderr, "generate: sample %lld has %zu tokens, expected %lld\n",
                   static_cast<long long>(b), sample.response_ids.size(),
                   static_cast<long long>(kNew));
      return 1;
    }
    for (int64_t q = 0; q < kNew; ++q) {
      gen_ids[b][q] = static_cast<float>(sample.response_ids[q]);
      gen_lp[b][q] = sample.logprobs[q];
      gen_ent[b][q] = sample.entropy[q];
    }
  }
  out["check.gen_ids"] = gen_ids;
  out["check.gen_logprobs"] = gen_lp;
  out["check.gen_entropy"] = gen_ent;
  m->SetRequiresGrad(true);
  model::AdamW opt(m->NamedParameters(), model::AdamW::Options{});
  const at::Tensor loss = StepLoss(*m, ids, at::ones_like(mask), adv);
  loss.backward();
  out["check.loss"] = loss.detach().reshape({1}).clone();
  for (const auto& [name, p] : m->NamedParameters()) {
    if (p.grad().defined()) out["check.grad." + name] = p.grad().clone();
  }
  opt.Step(kLr);
  for (const auto& [name, p] : m->NamedParameters()) {
    out["check.step." + name] = p.detach().clone();
  }
  const absl::Status st = model::WriteSafetensors(path, out);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "wrote %s (%lld parameters)\n", path.c_str(),
               static_cast<long long>(m->NumParameters()));
  return 0;
}

}  // namespace
}  // namespace rhythm::bench

int main(int argc, char** argv) {
  using namespace rhythm::bench;
  // First, before LibTorch starts any thread: the counter (so it inherits to every thread) and
  // the BLAS kernels the CPU has (common/runtime.h).
  InstructionCounter counter;
  rhythm::common::UseTheCpusBlasKernels();
  rhythm::common::KeepFreedMemoryInTheHeap();
  const Flags f = ParseFlags(argc, argv);
  if (f.blas_core) {
    std::printf("{\"blas_core\": \"%s\"}\n", rhythm::common::BlasCore().c_str());
    return 0;
  }
  at::set_num_threads(f.threads);
  if (!f.dump_check.empty()) return DumpCheck(f.dump_check);
  if (f.mode == "generate") {
    if (!counter.ok()) {
      std::fprintf(stderr, "bench_peer_shape: %s; instructions_per_token is null\n",
                   counter.error().c_str());
    }
    return RunGenerate(f, counter);
  }
  if (f.mode == "train") return RunTrain(f);
  return RunGemm(f);
}
