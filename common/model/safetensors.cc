#include "common/model/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <vector>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/json_limits.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace rhythm::common::model {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100 << 20;

absl::Status FileError(absl::string_view path, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
}

absl::Status TensorError(absl::string_view path, absl::string_view name,
                         absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "': ", problem));
}

bool DtypeFromName(const std::string& name, at::ScalarType* out) {
  if (name == "F32") *out = at::kFloat;
  else if (name == "BF16") *out = at::kBFloat16;
  else if (name == "F16") *out = at::kHalf;
  else return false;
  return true;
}

absl::StatusOr<const char*> DtypeName(at::ScalarType t, absl::string_view name) {
  switch (t) {
    case at::kFloat:
      return "F32";
    case at::kBFloat16:
      return "BF16";
    case at::kHalf:
      return "F16";
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': dtype ",
                                                     at::toString(t),
                                                     " cannot be stored (F32, BF16, F16)"));
  }
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Closes the fd when it goes out of scope.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

bool ReadAt(int fd, char* dst, uint64_t size, uint64_t offset) {
  while (size > 0) {
    const ssize_t n = pread(fd, dst, size, static_cast<off_t>(offset));
    if (n <= 0) return false;
    dst += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

absl::Status WriteAll(int fd, const char* data, uint64_t size, absl::string_view path) {
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n <= 0) return absl::InternalError(absl::StrCat(path, ": write failed: ", strerror(errno)));
    data += n;
    size -= static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

struct Entry {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

}  // namespace

absl::StatusOr<TensorMap> ReadSafetensors(const std::string& path) {
  Fd f{open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", strerror(errno)));
  struct stat st;
  fstat(f.fd, &st);
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    return FileError(path, absl::StrCat("truncated: ", file_size,
                                        " bytes, too short for the 8-byte header length"));
  }
  uint64_t header_len = 0;
  unsigned char len_bytes[8];
  ReadAt(f.fd, reinterpret_cast<char*>(len_bytes), 8, 0);
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxHeaderBytes || header_len > file_size - 8) {
    return FileError(path, absl::StrCat("header length ", header_len, " exceeds the file (",
                                        file_size, " bytes): truncated or not safetensors"));
  }
  std::string header(header_len, '\0');
  ReadAt(f.fd, header.data(), header_len, 8);
  bool too_deep = false;
  json j = ParseJsonBounded(header, &too_deep);
  if (too_deep) {
    return FileError(path, absl::StrCat("header nests deeper than ", kMaxJsonDepth, " levels"));
  }
  if (j.is_discarded() || !j.is_object()) {
    return FileError(path, "header is not a JSON object");
  }
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;
  std::vector<Entry> entries;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string& name = it.key();
    const json& e = it.value();
    if (!e.is_object()) return TensorError(path, name, "entry is not an object");
    Entry entry{name, at::kFloat, {}, 0, 0};
    if (!e.contains("dtype") || !e["dtype"].is_string()) {
      return TensorError(path, name, "missing dtype");
    }
    if (!DtypeFromName(e["dtype"].get<std::string>(), &entry.dtype)) {
      return TensorError(path, name,
                         absl::StrCat("dtype ", e["dtype"].dump(),
                                      " is not supported (F32, BF16, F16)"));
    }
    if (!e.contains("shape") || !e["shape"].is_array()) return TensorError(path, name, "missing shape");
    // The byte size is multiplied with overflow checks: [2^32, 2^32] would wrap to 0 and pass
    // the data_offsets check below with [0, 0], then abort in at::empty.
    uint64_t need = at::elementSize(entry.dtype);
    for (const json& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) {
        return TensorError(path, name, absl::StrCat("bad shape ", e["shape"].dump()));
      }
      entry.shape.push_back(d.get<int64_t>());
      if (__builtin_mul_overflow(need, d.get<uint64_t>(), &need) ||
          need > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return TensorError(
            path, name,
            absl::StrCat("shape ", e["shape"].dump(), " of ", e["dtype"].get<std::string>(),
                         " overflows 64-bit byte counts"));
      }
    }
    const json& off = e.contains("data_offsets") ? e["data_offsets"] : json();
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned()) {
      return TensorError(path, name, "data_offsets must be [begin, end]");
    }
    entry.begin = off[0].get<uint64_t>();
    entry.end = off[1].get<uint64_t>();
    if (entry.end < entry.begin || entry.end - entry.begin != need) {
      return TensorError(path, name,
                         absl::StrCat("data_offsets ", off.dump(), " hold ",
                                      entry.end >= entry.begin ? entry.end - entry.begin : 0,
                                      " bytes but shape ", ShapeText(entry.shape), " of ",
                                      e["dtype"].get<std::string>(), " needs ", need));
    }
    if (entry.end > data_size) {
      return TensorError(path, name,
                         absl::StrCat("data_offsets end ", entry.end, " lies past the data (",
                                      data_size, " bytes): the file is truncated"));
    }
    entries.push_back(std::move(entry));
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].begin < entries[i - 1].end) {
      return TensorError(path, entries[i].name,
                         absl::StrCat("data overlaps tensor '", entries[i - 1].name, "'"));
    }
  }
  TensorMap out;
  for (const Entry& e : entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
    if (!ReadAt(f.fd, static_cast<char*>(t.data_ptr()), e.end - e.begin, data_start + e.begin)) {
      return TensorError(path, e.name, "read failed: the file is truncated");
    }
    out.emplace(e.name, std::move(t));
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    RHYTHM_ASSIGN_OR_RETURN(const char* dtype, DtypeName(tensor.scalar_type(), name));
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype},
                    {"shape", std::vector<int64_t>(t.sizes().begin(), t.sizes().end())},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(t));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  Fd f{open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (f.fd < 0) {
    return absl::InternalError(absl::StrCat(path, ": cannot create: ", strerror(errno)));
  }
  unsigned char len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
  RHYTHM_RETURN_IF_ERROR(WriteAll(f.fd, reinterpret_cast<char*>(len), 8, path));
  RHYTHM_RETURN_IF_ERROR(WriteAll(f.fd, text.data(), text.size(), path));
  for (const at::Tensor& t : data) {
    RHYTHM_RETURN_IF_ERROR(WriteAll(f.fd, static_cast<const char*>(t.data_ptr()),
                                    static_cast<uint64_t>(t.numel()) * t.element_size(), path));
  }
  if (fsync(f.fd) != 0) {
    return absl::InternalError(absl::StrCat(path, ": fsync failed: ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<CheckpointTensors> ReadCheckpointTensors(const std::string& dir) {
  CheckpointTensors out;
  const std::string single = dir + "/model.safetensors";
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (access(single.c_str(), F_OK) == 0) {
    RHYTHM_ASSIGN_OR_RETURN(out.tensors, ReadSafetensors(single));
    for (const auto& [name, t] : out.tensors) out.file_of[name] = single;
    return out;
  }
  std::ifstream in(index_path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        dir, ": no model.safetensors and no model.safetensors.index.json"));
  }
  std::stringstream text;
  text << in.rdbuf();
  bool too_deep = false;
  json index = ParseJsonBounded(text.str(), &too_deep);
  if (too_deep) {
    return FileError(index_path, absl::StrCat("nests deeper than ", kMaxJsonDepth, " levels"));
  }
  if (index.is_discarded() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return FileError(index_path, "weight_map missing or not an object");
  }
  std::map<std::string, std::vector<std::string>> names_by_file;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    if (!it.value().is_string() || it.value().get<std::string>().find('/') != std::string::npos) {
      return FileError(index_path, absl::StrCat("weight_map['", it.key(), "'] is not a file name"));
    }
    names_by_file[it.value().get<std::string>()].push_back(it.key());
  }
  for (const auto& [file, names] : names_by_file) {
    const std::string path = dir + "/" + file;
    RHYTHM_ASSIGN_OR_RETURN(TensorMap shard, ReadSafetensors(path));
    for (const std::string& name : names) {
      auto t = shard.find(name);
      if (t == shard.end()) {
        return FileError(index_path, absl::StrCat("maps tensor '", name, "' to ", file,
                                                  ", which does not contain it"));
      }
      out.tensors[name] = t->second;
      out.file_of[name] = path;
    }
  }
  return out;
}

absl::Status WriteCheckpointTensors(const std::string& dir, const TensorMap& tensors,
                                    int64_t max_shard_bytes) {
  int64_t total = 0;
  std::vector<TensorMap> shards(1);
  int64_t shard_bytes = 0;
  for (const auto& [name, t] : tensors) {
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    if (shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back()[name] = t;
    shard_bytes += bytes;
    total += bytes;
  }
  if (shards.size() == 1) return WriteSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file =
        absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    RHYTHM_RETURN_IF_ERROR(WriteSafetensors(dir + "/" + file, shards[i], {{"format", "pt"}}));
    for (const auto& [name, t] : shards[i]) index["weight_map"][name] = file;
  }
  std::ofstream out(dir + "/model.safetensors.index.json");
  out << index.dump(2) << "\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(dir, ": cannot write the index"));
  return absl::OkStatus();
}

}  // namespace rhythm::common::model
