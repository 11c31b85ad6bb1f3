#!/usr/bin/python3
"""CTest deploy_command_lines_test: every rhythm command line shipped in the deployment files,
run through the binary's own `--check-config` (parse the flags and the config, validate, resolve
runtime.device against this build; no model loading, no network).

Files (globbed, so manifests added later are covered):
  docker-compose*.yml / compose*.yml at the top and under deploy/   services' `command`
  deploy/k8s/**/*.yaml|yml                                           containers' command + args
  deploy/systemd/**/*.service                                        ExecStart=

Paths inside a container or on the target host are mapped to repository files:
  compose     its bind mounts (`./deploy/config/rhythm.yaml:/etc/rhythm/rhythm.yaml:ro`);
              named volumes become empty temporary directories;
  Kubernetes  volumeMounts: a ConfigMap volume becomes a directory holding that ConfigMap's data
              (from the manifests themselves), a Secret volume one holding a placeholder file per
              listed item; emptyDir and claims become empty temporary directories;
  systemd     HOST_FILES and ENV_FILES below: add a line there for a new file a unit names.
A variable a unit or pod does not define, or an /etc/rhythm path that maps to nothing, fails.
Each binary runs with the environment it is deployed with: the pod's or service's literal env
values, the unit's Environment, and HOSTNAME as there (a pod: <name>-0, a StatefulSet's first
ordinal; compose: <service>-1; systemd: "host").

Verdicts: exit 0 passes; exit 3 with the line "<binary>: needs the CUDA image: ..." (a valid
configuration that names cuda:N on a CPU-only LibTorch) passes with that note, and only for that
reason, unless the container requests no GPU (nvidia.com/gpu, compose device reservations);
anything else fails, with the binary's line. A command line whose program is not a rhythm
binary (prometheus, grafana) is listed and skipped.

Usage: command_lines_test.py [--root DIR]   (DIR: a tree laid out like the repository; the
default is this repository). Env: RHYTHM_BIN_DIR (default build/bin). yaml is python3-yaml
(scripts/setup.sh installs it); exits 77 (CTest: skipped) only when it or a binary is missing.
"""
import glob
import os
import re
import shlex
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("RHYTHM_BIN_DIR", os.path.join(REPO, "build", "bin"))
RHYTHM_BINARIES = ("rhythm-learner", "rhythm-actor")
NEEDS_CUDA_EXIT = 3  # common/runtime.h kCheckConfigNeedsCuda

# systemd units run on a host set up as the unit files' comments say: these host paths are these
# repository files (relative to --root).
HOST_FILES = {
    "/etc/rhythm/rhythm.yaml": "deploy/config/rhythm.yaml",
}
# EnvironmentFile= contents, as the unit comments describe them (the files are the operator's).
ENV_FILES = {
    "/etc/rhythm/actor.env": {"RHYTHM_LEARNER": "learner-host:50051"},
}
# A template unit (name@.service) is checked with this instance name (%i); the actor's is its
# metrics port.
TEMPLATE_INSTANCE = "9465"


class CommandLine:
    def __init__(self, where, argv, mounts, image="", gpus=None, env=None):
        self.where = where    # "file: what" for messages
        self.argv = argv      # program + arguments, as shipped (variables expanded)
        self.mounts = mounts  # [(path in the container/host, local path)], longest first
        self.image = image    # the container image, "" for systemd
        self.gpus = gpus      # GPUs the container requests; None = not declared here (systemd)
        self.env = env or {}  # the process's environment as deployed (HOSTNAME included)


def map_path(arg, mounts):
    """Rewrites every absolute path in `arg` (alone, after `=`, or after `KEY=`) that lies
    under a mount to the local path. Returns (new arg, unmapped /etc/rhythm paths)."""
    unmapped = []

    def one(path):
        for target, local in mounts:
            t = target.rstrip("/")
            if path == t or path.startswith(t + "/"):
                return local + path[len(t):]
        if path.startswith("/etc/rhythm"):
            unmapped.append(path)
        return path

    parts = re.split(r"(=)", arg)
    return "".join(one(p) if p.startswith("/") else p for p in parts), unmapped


# ---------------------------------------------------------------------------------------------
# compose

def expand_compose(value):
    """${VAR:-default} / ${VAR-default} -> default, ${VAR} / $VAR -> "" (compose run without
    an .env), $$ -> $."""
    value = re.sub(r"\$\{(\w+)(:?-)([^}]*)\}", lambda m: m.group(3), value)
    value = re.sub(r"\$\{?\w+\}?", "", value.replace("$$", "\0"))
    return value.replace("\0", "$")


def compose_lines(root, path, tmp, yaml):
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    out = []
    base = os.path.dirname(path)
    for name, svc in (doc.get("services") or {}).items():
        cmd = svc.get("command")
        if cmd is None:
            continue
        argv = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
        entry = svc.get("entrypoint")
        if entry:  # an explicit entrypoint runs first (tini-like wrappers are dropped below)
            argv = (shlex.split(entry) if isinstance(entry, str) else list(entry)) + argv
        argv = [expand_compose(a) for a in argv]
        mounts = []
        for v in svc.get("volumes") or []:
            if isinstance(v, dict):
                src, target, kind = v.get("source"), v.get("target"), v.get("type")
            else:
                bits = expand_compose(str(v)).split(":")
                if len(bits) < 2:
                    continue
                src, target = bits[0], bits[1]
                kind = "bind" if src.startswith((".", "/", "~")) else "volume"
            if kind == "bind":
                local = os.path.normpath(os.path.join(base, src))
            else:
                local = tempfile.mkdtemp(prefix="vol-", dir=tmp)
            mounts.append((target, local))
        mounts.sort(key=lambda m: -len(m[0]))
        devices = ((((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {})
                   .get("devices") or [])
        gpus = sum(int(d.get("count", 1)) if str(d.get("count", 1)).isdigit() else 1
                   for d in devices if "gpu" in (d.get("capabilities") or []))
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env if "=" in e)
        env = {k: expand_compose(str(v)) for k, v in env.items()}
        env.setdefault("HOSTNAME", str(svc.get("hostname", f"{name}-1")))
        out.append(CommandLine(f"{os.path.relpath(path, root)}: service {name}", argv, mounts,
                               str(svc.get("image", "")), gpus, env))
    return out


# ---------------------------------------------------------------------------------------------
# Kubernetes

def pod_specs(doc):
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "Pod":
        yield spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job",
                  "ReplicationController"):
        yield (spec.get("template") or {}).get("spec") or {}
    elif kind == "CronJob":
        yield (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}) \
            .get("spec") or {}


def expand_k8s(value, env):
    """$(VAR) from the container's env; $$(VAR) stays literal, as Kubernetes does."""
    return re.sub(r"(\$?)\$\((\w+)\)",
                  lambda m: f"$({m.group(2)})" if m.group(1) else env.get(m.group(2), m.group(0)),
                  value)


def k8s_lines(root, files, tmp, yaml):
    docs = []
    for path in files:
        with open(path) as f:
            docs += [(path, d) for d in yaml.safe_load_all(f) if isinstance(d, dict)]
    configmaps = {d["metadata"]["name"]: d.get("data") or {}
                  for _, d in docs if d.get("kind") == "ConfigMap"}
    out = []
    for path, doc in docs:
        for spec in pod_specs(doc):
            volumes = {v["name"]: v for v in spec.get("volumes") or []}
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                argv = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
                if not argv:
                    continue
                env = {e["name"]: str(e["value"]) for e in c.get("env") or []
                       if "value" in e}
                argv = [expand_k8s(a, env) for a in argv]
                mounts = []
                for m in c.get("volumeMounts") or []:
                    local = tempfile.mkdtemp(prefix="vol-", dir=tmp)
                    v = volumes.get(m["name"], {})
                    if "configMap" in v:
                        data = configmaps.get(v["configMap"].get("name"))
                        if data is None:
                            local = None  # the checker reports the path as unmapped
                        else:
                            items = v["configMap"].get("items")
                            names = {i["key"]: i["path"] for i in items} if items else \
                                {k: k for k in data}
                            for key, rel in names.items():
                                dst = os.path.join(local, rel)
                                os.makedirs(os.path.dirname(dst), exist_ok=True)
                                with open(dst, "w") as f:
                                    f.write(data.get(key, ""))
                    elif "secret" in v:
                        for i in v["secret"].get("items") or []:
                            with open(os.path.join(local, i["path"]), "w") as f:
                                f.write("placeholder for the Secret's " + i["key"] + "\n")
                    if local is None:
                        continue
                    if m.get("subPath"):
                        local = os.path.join(local, m["subPath"])
                    mounts.append((m["mountPath"], local))
                mounts.sort(key=lambda x: -len(x[0]))
                name = doc.get("metadata", {}).get("name", "?")
                env.setdefault("HOSTNAME", f"{name}-0")  # the pod's name: a StatefulSet's ordinal
                out.append(CommandLine(
                    f"{os.path.relpath(path, root)}: {doc.get('kind')} {name} container "
                    f"{c.get('name')}", argv, mounts, str(c.get("image", "")),
                    int(((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0)),
                    env))
    return out


# ---------------------------------------------------------------------------------------------
# systemd

def systemd_lines(root, path, problems):
    unit = os.path.basename(path)
    text = re.sub(r"\\\n", " ", open(path).read())
    env, execs = {}, []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("EnvironmentFile="):
            f = line.split("=", 1)[1].lstrip("-")
            if f not in ENV_FILES:
                problems.append(f"{unit}: EnvironmentFile {f} is not in ENV_FILES of this test")
            env.update(ENV_FILES.get(f, {}))
        elif line.startswith("Environment="):
            for kv in shlex.split(line.split("=", 1)[1]):
                k, _, v = kv.partition("=")
                env[k] = v
        elif line.startswith("ExecStart="):
            execs.append(line.split("=", 1)[1].lstrip("-@+!:"))
    instance = TEMPLATE_INSTANCE if "@." in unit else ""
    specifiers = {"i": instance, "I": instance, "H": "host", "h": "/var/lib/rhythm",
                  "n": unit, "N": unit.rsplit(".", 1)[0], "%": "%"}
    mounts = sorted(((p, os.path.join(root, r)) for p, r in HOST_FILES.items()),
                    key=lambda m: -len(m[0]))
    out = []
    for cmd in execs:
        cmd = re.sub(r"%(.)", lambda m: specifiers.get(m.group(1), m.group(0)), cmd)

        def var(m):
            name = m.group(1) or m.group(2)
            if name not in env:
                problems.append(f"{unit}: ${{{name}}} is defined nowhere the test knows")
            return env.get(name, "")

        argv = [re.sub(r"\$\{(\w+)\}|\$(\w+)", var, a) for a in shlex.split(cmd)]
        out.append(CommandLine(f"{os.path.relpath(path, root)}: ExecStart", argv, mounts,
                               env=dict(env, HOSTNAME="host")))
    return out


# ---------------------------------------------------------------------------------------------

def check(line, problems, notes, passed):
    argv = list(line.argv)
    while argv and os.path.basename(argv[0]) in ("tini", "--", "dumb-init", "exec"):
        argv = argv[1:]
    prog = os.path.basename(argv[0]) if argv else ""
    if not argv or argv[0].startswith("-"):  # only arguments: the image's own entrypoint runs
        notes.append(f"{line.where}: arguments to the entrypoint of image {line.image!r}, "
                     "not a rhythm binary; skipped")
        return
    if prog not in RHYTHM_BINARIES:
        if prog.startswith("rhythm"):
            problems.append(f"{line.where}: {prog} is shipped in a manifest but has no "
                            "--check-config (add it, and to RHYTHM_BINARIES here)")
        else:
            notes.append(f"{line.where}: {prog or '(empty)'} is not a rhythm binary; skipped")
        return
    args = []
    for a in argv[1:]:
        mapped, unmapped = map_path(a, line.mounts)
        for u in unmapped:
            problems.append(f"{line.where}: {u} is not mounted from any repository file")
        args.append(mapped)
    exe = os.path.join(BIN, prog)
    r = subprocess.run([exe] + args + ["--check-config"], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, **line.env))
    said = (r.stdout + r.stderr).strip()
    shown = " ".join(shlex.quote(a) for a in argv)
    if r.returncode == NEEDS_CUDA_EXIT and line.gpus == 0:
        problems.append(f"{line.where}: names a CUDA device but requests no GPU: {said}")
    elif r.returncode == 0 and len(said.splitlines()) == 1:
        passed.append(f"{line.where}: {said}")
    elif (r.returncode == NEEDS_CUDA_EXIT and len(said.splitlines()) == 1 and
          said.startswith(f"{prog}: needs the CUDA image: ")):
        notes.append(f"{line.where}: {said[len(prog) + 2:]}")
        passed.append(f"{line.where}: needs the CUDA image")
    else:
        problems.append(f"{line.where}: `{shown}` refused (exit {r.returncode}): {said}")


def main(argv):
    root = REPO
    if len(argv) >= 2 and argv[0] == "--root":
        root = os.path.abspath(argv[1])
    try:
        import yaml  # python3-yaml
    except ImportError:
        print("SKIP: python3-yaml missing (apt-get install python3-yaml)")
        return 77
    for b in RHYTHM_BINARIES:
        if not os.path.exists(os.path.join(BIN, b)):
            print(f"SKIP: {os.path.join(BIN, b)} not built")
            return 77
    problems, notes, passed = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        lines = []
        compose = sorted(set(glob.glob(os.path.join(root, "*compose*.y*ml")) +
                             glob.glob(os.path.join(root, "deploy", "**", "*compose*.y*ml"),
                                       recursive=True)))
        for path in compose:
            lines += compose_lines(root, path, tmp, yaml)
        k8s = sorted(glob.glob(os.path.join(root, "deploy", "k8s", "**", "*.yaml"), recursive=True)
                     + glob.glob(os.path.join(root, "deploy", "k8s", "**", "*.yml"),
                                 recursive=True))
        lines += k8s_lines(root, k8s, tmp, yaml)
        for path in sorted(glob.glob(os.path.join(root, "deploy", "systemd", "**", "*.service"),
                                     recursive=True)):
            lines += systemd_lines(root, path, problems)
        for line in lines:
            check(line, problems, notes, passed)
    for p in passed:
        print(f"ok: {p}")
    for n in notes:
        print(f"note: {n}")
    checked = len([line for line in lines if line.argv])
    if not compose or not k8s:
        problems.append(f"found {len(compose)} compose files and {len(k8s)} Kubernetes "
                        "manifests under the root; expected both")
    if problems:
        for p in problems:
            print(f"FAIL: {p}")
        return 1
    cuda = sum(1 for n in notes if "needs the CUDA image" in n)
    print(f"deploy_command_lines_test: {len(passed)} rhythm command lines accepted by "
          f"--check-config ({cuda} of them need the CUDA image) out of {checked} in "
          f"{len(compose)} compose, {len(k8s)} Kubernetes and the systemd files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
