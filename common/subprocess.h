// Child processes: run one to completion capturing its output (RunProcess), or keep one running
// in the background and read its stdout line by line (ChildProcess). posix_spawn only: fork
// after OpenMP or gRPC threads exist is unsafe (neither is fork-safe once it has started
// threads; posix_spawn execs the child at once). Used by `rhythm train` to supervise the
// learner and actors, and by the integration tests.
#pragma once

#include <string>
#include <vector>

namespace rhythm::common {

// The absolute path of this process's executable (/proc/self/exe), or "" if it cannot be read.
// `rhythm train` and `rhythm ablate` start their siblings (and themselves) from its folder.
std::string SelfExecutable();

struct ProcessResult {
  // Exit status, or 128 + signal when killed by a signal, or -1 when it could not start.
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs argv[0] (a path) with the given arguments and waits for it; kills it after
// `timeout_seconds`.
ProcessResult RunProcess(const std::vector<std::string>& argv, double timeout_seconds = 60);

// A child process running in the background, its stdout readable line by line and its stderr
// going to a file. The destructor kills it (SIGKILL) if still running. The child gets
// RHYTHM_PARENT_PID in its environment: rhythm's binaries then stop (SIGTERM) when this process
// dies, even by kill -9 (common/startup.h). Not thread-safe.
class ChildProcess {
 public:
  // Starts argv[0] with the arguments; false if it could not be spawned. With `stdout_path`
  // its stdout goes to that file instead of a pipe (ReadLine then returns ""), for a child
  // that prints more than anyone reads.
  bool Start(const std::vector<std::string>& argv, const std::string& stderr_path,
             const std::string& stdout_path = "");
  ~ChildProcess();
  // The next line of stdout (without the newline), or "" after `timeout_seconds` / EOF.
  std::string ReadLine(double timeout_seconds);
  // Sends `signal`, waits up to `timeout_seconds` for exit, returns the exit code (128 + signal
  // when killed by one; -1 if it did not exit in time).
  int Stop(int signal, double timeout_seconds);
  int pid() const { return pid_; }
  // Forgets the child after the caller reaped it itself (waitpid), so nothing signals a pid
  // that may have been reused.
  void Detach() { pid_ = -1; }

 private:
  int pid_ = -1;
  int out_fd_ = -1;
  std::string buffer_;
};

}  // namespace rhythm::common
