"""A tiny local rhythm run for the deploy tests: one learner and N actors on 127.0.0.1 with free
ports, the fast tiny configuration of tests/actor_integration_test.cc, and cleanup that kills
every child however the test ends (exception, failed assertion, SIGTERM from CTest's timeout).

Python standard library only. Binaries from $RHYTHM_BIN_DIR (CTest passes the build's bin
directory), else build/bin of this checkout.
"""
import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("RHYTHM_BIN_DIR", os.path.join(REPO, "build", "bin"))

TINY = ["task.kind=arithmetic", "trainer.group_size=2", "trainer.batch_groups=2",
        "generation.max_new_tokens=6", "model.tiny.hidden_size=32", "model.tiny.num_layers=2",
        "model.tiny.num_heads=2", "model.tiny.num_kv_heads=1", "model.tiny.intermediate_size=64",
        "trainer.lr=1e-3", "credit.drop_zero_variance_groups=false", "runtime.torch_threads=1"]

_children = []


def _kill_all(*_):
    for p in reversed(_children):
        if p.poll() is None:
            try:
                p.terminate()
            except OSError:
                pass
    deadline = time.time() + 10
    for p in reversed(_children):
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    _children.clear()


def _on_signal(signum, _frame):
    _kill_all()
    sys.exit(128 + signum)


atexit.register(_kill_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def kill_all():
    _kill_all()


def spawn(argv, log_path):
    """Starts a child whose stdout is a pipe (its first line is read) and stderr a log file."""
    log = open(log_path, "w")
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
    _children.append(p)
    return p


def read_line(p, what, timeout=60):
    """The child's first stdout line, within timeout seconds."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise RuntimeError(f"{what}: no start-up line in {timeout} s")
    line = p.stdout.readline().strip()
    if not line:
        raise RuntimeError(f"{what}: exited before printing its start-up line (rc {p.poll()})")
    return line


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def scrape(port, timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        return r.read().decode()


def value(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class LocalRun:
    """A learner and `actors` actors. Attributes: learner_metrics, actor_metrics (ports), tmp."""

    def __init__(self, actors=2, tmp=None):
        for b in ("rhythm-learner", "rhythm-actor"):
            if not os.access(os.path.join(BIN, b), os.X_OK):
                raise FileNotFoundError(f"{os.path.join(BIN, b)} not built")
        self.tmp = tmp or tempfile.mkdtemp(prefix="rhythm-deploy-")
        sets = []
        for kv in TINY:
            sets += ["--set", kv]
        learner = spawn([os.path.join(BIN, "rhythm-learner"), *sets,
                         "--set", f"learner.run_dir={self.tmp}/run",
                         "--set", "learner.address=127.0.0.1:0",
                         "--set", "learner.metrics_address=127.0.0.1:0"],
                        os.path.join(self.tmp, "learner.log"))
        # "rhythm-learner: listening on PORT metrics PORT"
        f = read_line(learner, "rhythm-learner").split()
        self.learner_port, self.learner_metrics = int(f[3]), int(f[5])
        self.actor_metrics = []
        self.actor_ids = []
        for i in range(actors):
            aid = f"deploy-actor-{i}"
            a = spawn([os.path.join(BIN, "rhythm-actor"), *sets,
                       "--set", f"actor.learner_address=127.0.0.1:{self.learner_port}",
                       "--set", "actor.metrics_address=127.0.0.1:0",
                       "--set", f"actor.actor_id={aid}",
                       "--set", "actor.heartbeat_interval_s=0.2",
                       "--set", "actor.backoff_initial_s=0.05", "--set", "actor.backoff_max_s=0.5"],
                      os.path.join(self.tmp, f"{aid}.log"))
            # "rhythm-actor: ID metrics PORT"
            self.actor_metrics.append(int(read_line(a, aid).split()[3]))
            self.actor_ids.append(aid)

    def wait_trained(self, learner_version=2, actor_version=1, timeout=60):
        """Until the learner has published learner_version and every actor swapped one in."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                ok = (value(scrape(self.learner_metrics), "rhythm_learner_policy_version") or 0) \
                    >= learner_version and all(
                        (value(scrape(p), "rhythm_actor_policy_version") or 0) >= actor_version
                        for p in self.actor_metrics)
            except OSError:
                ok = False
            if ok:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the loop did not reach version {learner_version} in {timeout} s "
                           f"(logs in {self.tmp})")


def cleanup(run, ok):
    """Kills the children; removes the run's files, or prints the tail of its logs on failure."""
    import shutil
    _kill_all()
    if run is None:
        return
    if not ok:
        for name in sorted(os.listdir(run.tmp)):
            if name.endswith(".log"):
                with open(os.path.join(run.tmp, name), errors="replace") as f:
                    tail = f.readlines()[-15:]
                print(f"--- {name} (last lines)\n" + "".join(tail))
    shutil.rmtree(run.tmp, ignore_errors=True)
