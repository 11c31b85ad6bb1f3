#include "common/version.h"

namespace rhythm::common {
const char* RhythmVersion() { return RHYTHM_VERSION_STRING; }
}  // namespace rhythm::common
