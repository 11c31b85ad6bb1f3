#!/usr/bin/python3
"""CTest deploy_command_lines_bad_test: deploy_command_lines_test (command_lines_test.py) fails
on command lines the binaries refuse, and passes a CUDA device on a CPU build only as "needs
the CUDA image".

It builds a copy of the deployment tree in a temporary directory from the shipped files, breaks
one command line of each kind, and runs command_lines_test.py --root on it:
  compose     the learner gets --set runtime.device=tpu:0         (not a device)
  Kubernetes  the learner StatefulSet gets --set trainer.lr=fast   (not a number)
              a manifest in a new folder (deploy/k8s/variants/), a Job whose --config names a
              file the ConfigMap does not hold                    (globbing picks it up)
  systemd     the actor unit gets --no-such-flag                   (unknown flag)
              a copy of the actor Deployment without its nvidia.com/gpu request (on a CPU-only
              build, where cuda:0 is only "needs the CUDA image": it must fail all the same)
The checker must exit 1 and name each; the shipped actor Deployment (cuda:0) must not be among
the failures. Env: RHYTHM_BIN_DIR. Exits 77 when command_lines_test.py would.
"""
import copy
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CHECKER = os.path.join(HERE, "command_lines_test.py")


def main():
    try:
        import yaml
    except ImportError:
        print("SKIP: python3-yaml missing")
        return 77
    with tempfile.TemporaryDirectory() as root:
        for rel in ("docker-compose.yml", "deploy/config", "deploy/k8s", "deploy/systemd"):
            src, dst = os.path.join(REPO, rel), os.path.join(root, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, dst)

        # compose: the learner service.
        path = os.path.join(root, "docker-compose.yml")
        with open(path) as f:
            compose = yaml.safe_load(f)
        compose["services"]["learner"]["command"] += ["--set", "runtime.device=tpu:0"]
        with open(path, "w") as f:
            yaml.safe_dump(compose, f)

        # Kubernetes: the learner StatefulSet, and a Job in a folder of its own.
        path = os.path.join(root, "deploy", "k8s", "base", "learner.yaml")
        with open(path) as f:
            docs = list(yaml.safe_load_all(f))
        learner = next(d for d in docs if d.get("kind") == "StatefulSet")
        container = learner["spec"]["template"]["spec"]["containers"][0]
        container["args"] = list(container.get("args") or []) + ["--set", "trainer.lr=fast"]
        with open(path, "w") as f:
            yaml.safe_dump_all(docs, f)
        job_pod = copy.deepcopy(learner["spec"]["template"])
        job_container = job_pod["spec"]["containers"][0]
        job_container["args"] = ["--config", "/etc/rhythm/missing.yaml"]
        job_pod["spec"]["restartPolicy"] = "Never"
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "broken-job"},
               "spec": {"template": job_pod}}
        os.makedirs(os.path.join(root, "deploy", "k8s", "variants"))
        with open(os.path.join(root, "deploy", "k8s", "variants", "job.yaml"), "w") as f:
            yaml.safe_dump(job, f)

        # A copy of the shipped actor Deployment (cuda:0) without its GPU request.
        with open(os.path.join(root, "deploy", "k8s", "base", "actor.yaml")) as f:
            actor = next(d for d in yaml.safe_load_all(f) if d and d.get("kind") == "Deployment")
        actor["metadata"]["name"] = "actor-without-gpu"
        for c in actor["spec"]["template"]["spec"]["containers"]:
            for part in ("requests", "limits"):
                ((c.get("resources") or {}).get(part) or {}).pop("nvidia.com/gpu", None)
        with open(os.path.join(root, "deploy", "k8s", "variants", "actor-cpu.yaml"), "w") as f:
            yaml.safe_dump(actor, f)

        # systemd: the actor unit.
        path = os.path.join(root, "deploy", "systemd", "rhythm-actor@.service")
        with open(path) as f:
            unit = f.read()
        assert "ExecStart=/usr/local/bin/rhythm-actor " in unit, "the actor unit changed shape"
        with open(path, "w") as f:
            f.write(unit.replace("ExecStart=/usr/local/bin/rhythm-actor ",
                                 "ExecStart=/usr/local/bin/rhythm-actor --no-such-flag "))

        r = subprocess.run([sys.executable, CHECKER, "--root", root], capture_output=True,
                           text=True, timeout=300)
    out = r.stdout + r.stderr
    if os.environ.get("VERBOSE"):
        print(out)
    if r.returncode == 77:
        print(out.strip())
        return 77
    fails = [line for line in out.splitlines() if line.startswith("FAIL:")]
    problems = []
    if r.returncode != 1:
        problems.append(f"the checker exited {r.returncode}, want 1")
    want = {
        "compose learner, runtime.device=tpu:0":
            ("docker-compose.yml: service learner", "runtime.device = 'tpu:0'"),
        "Kubernetes learner, trainer.lr=fast":
            ("StatefulSet rhythm-learner", "trainer.lr"),
        "new Kubernetes Job, missing config":
            ("deploy/k8s/variants/job.yaml: Job broken-job", "missing.yaml"),
        "systemd actor, --no-such-flag":
            ("rhythm-actor@.service", "no-such-flag"),
    }
    for what, (where, why) in want.items():
        if not any(where in line and why in line for line in fails):
            problems.append(f"not caught: {what}")
    if any("Deployment rhythm-actor" in line for line in fails):
        problems.append("the shipped actor Deployment (cuda:0) was failed, not noted")
    bin_dir = os.environ.get("RHYTHM_BIN_DIR", os.path.join(REPO, "build", "bin"))
    cpu_only = subprocess.run([os.path.join(bin_dir, "rhythm-actor"), "--check-config", "--set",
                               "runtime.device=cuda:0"], capture_output=True).returncode == 3
    if cpu_only and not any(line.startswith("FAIL:") and "Deployment actor-without-gpu" in line
                            and "requests no GPU" in line for line in fails):
        problems.append("not caught: a cuda:0 Deployment that requests no GPU")
    if cpu_only and not any(line.startswith("note:") and "Deployment rhythm-actor" in line and
                            "needs the CUDA image" in line for line in out.splitlines()):
        problems.append("the actor Deployment is not noted as needing the CUDA image")
    if problems:
        print(out)
        for p in problems:
            print(f"FAIL: {p}")
        return 1
    print(f"deploy_command_lines_bad_test: all {len(want) + int(cpu_only)} broken command lines caught "
          f"({len(fails)} FAIL lines), the CUDA-only one noted, not failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
