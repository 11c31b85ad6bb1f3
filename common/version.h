// rhythm's version string, set by CMake from project(VERSION). Defined in one small TU so a
// version bump recompiles one file.
#pragma once

namespace rhythm::common {
const char* RhythmVersion();
}  // namespace rhythm::common
