#include "common/config.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/flags.h"
#include "common/status.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "rhythm/v1/options.pb.h"
#include "yaml-cpp/yaml.h"

namespace rhythm::common {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

constexpr absl::string_view kOverrideSource = "--set";

absl::Status ConfigError(absl::string_view text) {
  return absl::InvalidArgumentError(absl::StrCat("config: ", text));
}

// "file.yaml:3" for nodes read from a file, "--set" for overrides.
std::string Where(absl::string_view source, const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (source == kOverrideSource || mark.is_null()) return std::string(source);
  return absl::StrCat(source, ":", mark.line + 1);
}

// A short rendering of a node for messages: the scalar itself, or the node in flow style.
std::string Render(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

std::string FieldKey(absl::string_view prefix, absl::string_view name) {
  return prefix.empty() ? std::string(name) : absl::StrCat(prefix, ".", name);
}

// CreditStrategy -> "CREDIT_STRATEGY_".
std::string EnumPrefix(const EnumDescriptor* e) {
  std::string out;
  for (char c : e->name()) {
    if (absl::ascii_isupper(c) && !out.empty()) out.push_back('_');
    out.push_back(absl::ascii_toupper(c));
  }
  out.push_back('_');
  return out;
}

// CREDIT_STRATEGY_LOCAL_CHUNK -> "local_chunk".
std::string EnumShortName(const EnumValueDescriptor* v) {
  std::string name = v->name();
  const std::string prefix = EnumPrefix(v->type());
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  return absl::AsciiStrToLower(name);
}

const char* TypeName(const FieldDescriptor* f) {
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
      return "an integer";
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64:
      return "a non-negative integer";
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT:
      return "a number";
    case FieldDescriptor::CPPTYPE_BOOL:
      return "true or false";
    case FieldDescriptor::CPPTYPE_STRING:
      return "a string";
    case FieldDescriptor::CPPTYPE_ENUM:
      return "one of the enum names";
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return "a map of keys";
  }
  return "a value";
}

std::string FormatDouble(double v) {
  // The shortest representation that reads back to the same double.
  char buf[64];
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    double back = 0;
    if (absl::SimpleAtod(buf, &back) && back == v) break;
  }
  return buf;
}

// The allowed range of a field, as text: "[0, 1)", ">= 0", "<= 5".
std::string RangeText(const v1::FieldBounds& b) {
  if (b.has_min() && b.has_max()) {
    return absl::StrCat(b.min_exclusive() ? "(" : "[", FormatDouble(b.min()), ", ",
                        FormatDouble(b.max()), b.max_exclusive() ? ")" : "]");
  }
  if (b.has_min()) return absl::StrCat(b.min_exclusive() ? "> " : ">= ", FormatDouble(b.min()));
  return absl::StrCat(b.max_exclusive() ? "< " : "<= ", FormatDouble(b.max()));
}

absl::Status CheckBounds(const FieldDescriptor* f, double value, absl::string_view key,
                         absl::string_view value_text, absl::string_view where) {
  if (!f->options().HasExtension(v1::bounds)) return absl::OkStatus();
  const v1::FieldBounds& b = f->options().GetExtension(v1::bounds);
  bool ok = true;
  if (b.has_min()) ok = ok && (b.min_exclusive() ? value > b.min() : value >= b.min());
  if (b.has_max()) ok = ok && (b.max_exclusive() ? value < b.max() : value <= b.max());
  if (ok) return absl::OkStatus();
  return ConfigError(absl::StrCat(key, " = ", value_text, " is out of range ", RangeText(b),
                                  where.empty() ? "" : absl::StrCat(" (", where, ")")));
}

// Parses an integer, accepting exact integral doubles such as 1e6.
bool ParseInteger(const std::string& text, long double* out) {
  int64_t i = 0;
  uint64_t u = 0;
  if (absl::SimpleAtoi(text, &i)) {
    *out = static_cast<long double>(i);
    return true;
  }
  if (absl::SimpleAtoi(text, &u)) {
    *out = static_cast<long double>(u);
    return true;
  }
  double d = 0;
  if (absl::SimpleAtod(text, &d) && std::isfinite(d) && std::floor(d) == d) {
    *out = d;
    return true;
  }
  return false;
}

// Sets (or, for repeated fields, appends) one scalar value from a YAML scalar node.
absl::Status SetScalar(const FieldDescriptor* f, const YAML::Node& node, absl::string_view key,
                       absl::string_view source, Message& msg) {
  const Reflection* r = msg.GetReflection();
  const std::string where = Where(source, node);
  auto type_error = [&]() {
    return ConfigError(absl::StrCat(key, ": expected ", TypeName(f), ", got '", Render(node),
                                    "' (", where, ")"));
  };
  if (!node.IsScalar()) return type_error();
  const std::string text = node.Scalar();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64: {
      long double v = 0;
      if (!ParseInteger(text, &v)) return type_error();
      long double lo = 0, hi = 0;
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32:
          lo = std::numeric_limits<int32_t>::min();
          hi = std::numeric_limits<int32_t>::max();
          break;
        case FieldDescriptor::CPPTYPE_INT64:
          lo = std::numeric_limits<int64_t>::min();
          hi = std::numeric_limits<int64_t>::max();
          break;
        case FieldDescriptor::CPPTYPE_UINT32:
          hi = std::numeric_limits<uint32_t>::max();
          break;
        default:
          hi = std::numeric_limits<uint64_t>::max();
      }
      if (v < lo || v > hi) {
        return ConfigError(absl::StrCat(key, " = ", text, " does not fit in ",
                                        f->cpp_type_name(), " (", where, ")"));
      }
      RHYTHM_RETURN_IF_ERROR(CheckBounds(f, static_cast<double>(v), key, text, where));
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32:
          rep ? r->AddInt32(&msg, f, static_cast<int32_t>(v))
              : r->SetInt32(&msg, f, static_cast<int32_t>(v));
          break;
        case FieldDescriptor::CPPTYPE_INT64:
          rep ? r->AddInt64(&msg, f, static_cast<int64_t>(v))
              : r->SetInt64(&msg, f, static_cast<int64_t>(v));
          break;
        case FieldDescriptor::CPPTYPE_UINT32:
          rep ? r->AddUInt32(&msg, f, static_cast<uint32_t>(v))
              : r->SetUInt32(&msg, f, static_cast<uint32_t>(v));
          break;
        default:
          rep ? r->AddUInt64(&msg, f, static_cast<uint64_t>(v))
              : r->SetUInt64(&msg, f, static_cast<uint64_t>(v));
      }
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      double v = 0;
      if (!absl::SimpleAtod(text, &v)) return type_error();
      if (!std::isfinite(v)) {
        return ConfigError(
            absl::StrCat(key, " = ", text, " is not a finite number (", where, ")"));
      }
      RHYTHM_RETURN_IF_ERROR(CheckBounds(f, v, key, text, where));
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE) {
        rep ? r->AddDouble(&msg, f, v) : r->SetDouble(&msg, f, v);
      } else {
        rep ? r->AddFloat(&msg, f, static_cast<float>(v))
            : r->SetFloat(&msg, f, static_cast<float>(v));
      }
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      const std::string lower = absl::AsciiStrToLower(text);
      bool v;
      if (lower == "true") {
        v = true;
      } else if (lower == "false") {
        v = false;
      } else {
        return type_error();
      }
      rep ? r->AddBool(&msg, f, v) : r->SetBool(&msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_STRING:
      rep ? r->AddString(&msg, f, text) : r->SetString(&msg, f, text);
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_ENUM: {
      const EnumDescriptor* e = f->enum_type();
      const std::string lower = absl::AsciiStrToLower(text);
      std::vector<std::string> names;
      for (int i = 0; i < e->value_count(); ++i) {
        const EnumValueDescriptor* v = e->value(i);
        // *_UNSPECIFIED is a valid choice only where it is the field's default (actor.dtype:
        // "the learner's"), so that a dump of the defaults reads back.
        if (v->number() == 0 && f->default_value_enum() != v) continue;
        const std::string short_name = EnumShortName(v);
        names.push_back(short_name);
        if (lower == short_name || text == v->name()) {
          rep ? r->AddEnum(&msg, f, v) : r->SetEnum(&msg, f, v);
          return absl::OkStatus();
        }
      }
      const std::string hint = ClosestMatch(lower, names);
      return ConfigError(absl::StrCat(
          key, ": unknown value '", text, "' (", where, "); expected one of ",
          absl::StrJoin(names, ", "),
          hint.empty() ? "" : absl::StrCat("; did you mean '", hint, "'?")));
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  return type_error();
}

absl::Status MergeMap(const YAML::Node& node, absl::string_view prefix, absl::string_view source,
                      Message& msg);

absl::Status SetField(const FieldDescriptor* f, const YAML::Node& value, absl::string_view key,
                      absl::string_view source, Message& msg) {
  const Reflection* r = msg.GetReflection();
  if (value.IsNull()) {  // `key: ~` or `key:` resets to the default.
    r->ClearField(&msg, f);
    return absl::OkStatus();
  }
  if (f->is_repeated()) {
    if (!value.IsSequence()) {
      return ConfigError(absl::StrCat(key, ": expected a list, got '", Render(value), "' (",
                                      Where(source, value), ")"));
    }
    r->ClearField(&msg, f);
    for (size_t i = 0; i < value.size(); ++i) {
      const std::string elem_key = absl::StrCat(key, "[", i, "]");
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        RHYTHM_RETURN_IF_ERROR(MergeMap(value[i], elem_key, source, *r->AddMessage(&msg, f)));
      } else {
        RHYTHM_RETURN_IF_ERROR(SetScalar(f, value[i], elem_key, source, msg));
      }
    }
    return absl::OkStatus();
  }
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    return MergeMap(value, key, source, *r->MutableMessage(&msg, f));
  }
  return SetScalar(f, value, key, source, msg);
}

absl::Status UnknownKey(const Descriptor* d, absl::string_view prefix, const std::string& name,
                        absl::string_view where) {
  std::vector<std::string> names;
  for (int i = 0; i < d->field_count(); ++i) names.push_back(d->field(i)->name());
  const std::string hint = ClosestMatch(name, names);
  return ConfigError(absl::StrCat(
      "unknown key '", FieldKey(prefix, name), "' (", where,
      hint.empty() ? "" : absl::StrCat("; did you mean '", FieldKey(prefix, hint), "'?"), ")"));
}

absl::Status MergeMap(const YAML::Node& node, absl::string_view prefix, absl::string_view source,
                      Message& msg) {
  if (node.IsNull()) return absl::OkStatus();
  if (!node.IsMap()) {
    return ConfigError(absl::StrCat(prefix.empty() ? "top level" : prefix,
                                    ": expected a map of keys, got '", Render(node), "' (",
                                    Where(source, node), ")"));
  }
  const Descriptor* d = msg.GetDescriptor();
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) {
      return ConfigError(absl::StrCat("keys must be plain names, got '", Render(kv.first),
                                      "' (", Where(source, kv.first), ")"));
    }
    const std::string name = kv.first.Scalar();
    const FieldDescriptor* f = d->FindFieldByName(name);
    if (f == nullptr) return UnknownKey(d, prefix, name, Where(source, kv.first));
    RHYTHM_RETURN_IF_ERROR(SetField(f, kv.second, FieldKey(prefix, name), source, msg));
  }
  return absl::OkStatus();
}

absl::Status ValidateRecursive(const Message& msg, const std::string& prefix) {
  const Descriptor* d = msg.GetDescriptor();
  const Reflection* r = msg.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    const std::string key = FieldKey(prefix, f->name());
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int j = 0; j < r->FieldSize(msg, f); ++j) {
          RHYTHM_RETURN_IF_ERROR(
              ValidateRecursive(r->GetRepeatedMessage(msg, f, j), absl::StrCat(key, "[", j, "]")));
        }
      } else {
        RHYTHM_RETURN_IF_ERROR(ValidateRecursive(r->GetMessage(msg, f), key));
      }
      continue;
    }
    auto value_of = [&](int j) -> std::optional<double> {
      const bool rep = f->is_repeated();
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32:
          return rep ? r->GetRepeatedInt32(msg, f, j) : r->GetInt32(msg, f);
        case FieldDescriptor::CPPTYPE_INT64:
          return static_cast<double>(rep ? r->GetRepeatedInt64(msg, f, j) : r->GetInt64(msg, f));
        case FieldDescriptor::CPPTYPE_UINT32:
          return rep ? r->GetRepeatedUInt32(msg, f, j) : r->GetUInt32(msg, f);
        case FieldDescriptor::CPPTYPE_UINT64:
          return static_cast<double>(rep ? r->GetRepeatedUInt64(msg, f, j)
                                         : r->GetUInt64(msg, f));
        case FieldDescriptor::CPPTYPE_DOUBLE:
          return rep ? r->GetRepeatedDouble(msg, f, j) : r->GetDouble(msg, f);
        case FieldDescriptor::CPPTYPE_FLOAT:
          return rep ? r->GetRepeatedFloat(msg, f, j) : r->GetFloat(msg, f);
        default:
          return std::nullopt;
      }
    };
    const int n = f->is_repeated() ? r->FieldSize(msg, f) : 1;
    for (int j = 0; j < n; ++j) {
      std::optional<double> v = value_of(j);
      if (!v) continue;
      const std::string elem_key = f->is_repeated() ? absl::StrCat(key, "[", j, "]") : key;
      RHYTHM_RETURN_IF_ERROR(CheckBounds(f, *v, elem_key, FormatDouble(*v), ""));
    }
  }
  return absl::OkStatus();
}

// Constraints that involve more than one field.
absl::Status ValidateCrossField(const v1::RhythmConfig& c) {
  const auto& tiny = c.model().tiny();
  if (tiny.num_heads() % tiny.num_kv_heads() != 0) {
    return ConfigError(absl::StrCat("model.tiny.num_kv_heads = ", tiny.num_kv_heads(),
                                    " must divide model.tiny.num_heads = ", tiny.num_heads()));
  }
  if (tiny.hidden_size() % tiny.num_heads() != 0) {
    return ConfigError(absl::StrCat("model.tiny.num_heads = ", tiny.num_heads(),
                                    " must divide model.tiny.hidden_size = ", tiny.hidden_size()));
  }
  const auto& g = c.generation();
  if (g.fai_band_lo() > g.fai_band_hi()) {
    return ConfigError(absl::StrCat("generation.fai_band_lo = ", g.fai_band_lo(),
                                    " must not exceed generation.fai_band_hi = ",
                                    g.fai_band_hi()));
  }
  const auto& a = c.actor();
  if (a.backoff_initial_s() > a.backoff_max_s()) {
    return ConfigError(absl::StrCat("actor.backoff_initial_s = ",
                                    FormatDouble(a.backoff_initial_s()),
                                    " must not exceed actor.backoff_max_s = ",
                                    FormatDouble(a.backoff_max_s())));
  }
  if (c.task().kind() == v1::TASK_KIND_JSONL && c.task().dataset_path().empty()) {
    return ConfigError("task.dataset_path must be set when task.kind = jsonl");
  }
  return absl::OkStatus();
}

void EmitValue(YAML::Emitter& out, const Message& msg, const FieldDescriptor* f, int index);

void EmitMessage(YAML::Emitter& out, const Message& msg) {
  const Descriptor* d = msg.GetDescriptor();
  const Reflection* r = msg.GetReflection();
  out << YAML::BeginMap;
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    out << YAML::Key << f->name() << YAML::Value;
    if (f->is_repeated()) {
      const bool scalar = f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE;
      if (scalar) out << YAML::Flow;
      out << YAML::BeginSeq;
      for (int j = 0; j < r->FieldSize(msg, f); ++j) EmitValue(out, msg, f, j);
      out << YAML::EndSeq;
    } else {
      EmitValue(out, msg, f, -1);
    }
  }
  out << YAML::EndMap;
}

void EmitValue(YAML::Emitter& out, const Message& msg, const FieldDescriptor* f, int j) {
  const Reflection* r = msg.GetReflection();
  const bool rep = j >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      out << (rep ? r->GetRepeatedInt32(msg, f, j) : r->GetInt32(msg, f));
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      out << (rep ? r->GetRepeatedInt64(msg, f, j) : r->GetInt64(msg, f));
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      out << (rep ? r->GetRepeatedUInt32(msg, f, j) : r->GetUInt32(msg, f));
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      out << (rep ? r->GetRepeatedUInt64(msg, f, j) : r->GetUInt64(msg, f));
      break;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      out << FormatDouble(rep ? r->GetRepeatedDouble(msg, f, j) : r->GetDouble(msg, f));
      break;
    case FieldDescriptor::CPPTYPE_FLOAT:
      out << FormatDouble(rep ? r->GetRepeatedFloat(msg, f, j) : r->GetFloat(msg, f));
      break;
    case FieldDescriptor::CPPTYPE_BOOL:
      out << ((rep ? r->GetRepeatedBool(msg, f, j) : r->GetBool(msg, f)) ? "true" : "false");
      break;
    case FieldDescriptor::CPPTYPE_STRING:
      out << YAML::DoubleQuoted << (rep ? r->GetRepeatedString(msg, f, j) : r->GetString(msg, f));
      break;
    case FieldDescriptor::CPPTYPE_ENUM:
      out << EnumShortName(rep ? r->GetRepeatedEnum(msg, f, j) : r->GetEnum(msg, f));
      break;
    case FieldDescriptor::CPPTYPE_MESSAGE:
      EmitMessage(out, rep ? r->GetRepeatedMessage(msg, f, j) : r->GetMessage(msg, f));
      break;
  }
}

}  // namespace

absl::Status MergeYaml(absl::string_view yaml, absl::string_view source, Message& msg) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return ConfigError(absl::StrCat("YAML syntax error (", source, ":", e.mark.line + 1, ":",
                                    e.mark.column + 1, "): ", e.msg));
  }
  return MergeMap(root, "", source, msg);
}

absl::Status ApplyOverride(absl::string_view assignment, Message& msg) {
  const size_t eq = assignment.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return ConfigError(absl::StrCat("override '", assignment, "' must look like key=value (",
                                    kOverrideSource, ")"));
  }
  const std::string path(absl::StripAsciiWhitespace(assignment.substr(0, eq)));
  const std::string text(assignment.substr(eq + 1));
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  Message* target = &msg;
  std::string prefix;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Descriptor* d = target->GetDescriptor();
    const FieldDescriptor* f = d->FindFieldByName(parts[i]);
    if (f == nullptr) return UnknownKey(d, prefix, parts[i], kOverrideSource);
    const std::string key = FieldKey(prefix, parts[i]);
    if (i + 1 < parts.size()) {
      if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || f->is_repeated()) {
        return ConfigError(absl::StrCat("'", key, "' has no sub-keys (in override '",
                                        assignment, "')"));
      }
      target = target->GetReflection()->MutableMessage(target, f);
      prefix = key;
      continue;
    }
    // A string is taken verbatim, so `--set model.path=` sets "" and no YAML quoting is needed.
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING && !f->is_repeated()) {
      target->GetReflection()->SetString(target, f, text);
      return absl::OkStatus();
    }
    YAML::Node value;
    try {
      value = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      return ConfigError(absl::StrCat(key, ": cannot parse '", text, "' (", kOverrideSource,
                                      "): ", e.msg));
    }
    return SetField(f, value, key, kOverrideSource, *target);
  }
  return ConfigError("empty override key");
}

std::string EnumShortName(const EnumDescriptor* type, int number) {
  const EnumValueDescriptor* v = type->FindValueByNumber(number);
  return v == nullptr ? absl::StrCat(number) : EnumShortName(v);
}

absl::Status ValidateBounds(const Message& msg) { return ValidateRecursive(msg, ""); }

std::string ConfigToYaml(const Message& msg) {
  YAML::Emitter out;
  EmitMessage(out, msg);
  return std::string(out.c_str()) + "\n";
}

absl::StatusOr<v1::RhythmConfig> LoadConfig(const std::string& path,
                                            const std::vector<std::string>& overrides) {
  v1::RhythmConfig config;
  if (!path.empty()) {
    std::ifstream in(path);
    if (!in) return ConfigError(absl::StrCat("cannot read config file '", path, "'"));
    std::stringstream text;
    text << in.rdbuf();
    RHYTHM_RETURN_IF_ERROR(MergeYaml(text.str(), path, config));
  }
  for (const std::string& o : overrides) RHYTHM_RETURN_IF_ERROR(ApplyOverride(o, config));
  RHYTHM_RETURN_IF_ERROR(ValidateBounds(config));
  RHYTHM_RETURN_IF_ERROR(ValidateCrossField(config));
  return config;
}

}  // namespace rhythm::common
