#!/usr/bin/env python3
"""Clang's thread-safety analysis over rhythm's own sources (GCC ignores ABSL_GUARDED_BY & co).

Reads BUILD_DIR/compile_commands.json (CMake writes it), picks the translation units that use
the annotations (the file itself, or a project header it includes, names ABSL_GUARDED_BY,
ABSL_*LOCKS_* or ABSL_ACQUIRED_*), and runs clang++-14 -fsyntax-only -Wthread-safety
-Werror=thread-safety on each with the build's own flags: nothing is compiled or linked, so it
costs parse time only. Exits 1 listing every TU with a finding, 0 when all are clean, 77 (CTest's
skip) when clang++-14 is missing.

Usage: scripts/thread_safety_check.py [BUILD_DIR] [-j N]
"""
import concurrent.futures
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANNOTATION = re.compile(r"ABSL_(PT_)?GUARDED_BY|ABSL_[A-Z_]*LOCKS_[A-Z_]*|ABSL_ACQUIRED_")
INCLUDE = re.compile(r'^#include "([^"]+)"', re.M)
CLANG = "clang++-14"


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def uses_annotations(path):
    text = read(path)
    if ANNOTATION.search(text):
        return True
    for inc in INCLUDE.findall(text):
        if ANNOTATION.search(read(os.path.join(REPO, inc))):
            return True
    return False


def clang_command(entry):
    args = entry.get("arguments") or shlex.split(entry["command"])
    out = [CLANG]
    skip = False
    for a in args[1:]:
        if skip:
            skip = False
            continue
        if a == "-o":
            skip = True
            continue
        if a in ("-c",) or a.startswith("-fdiagnostics-color"):
            continue
        out.append(a)
    # Only this analysis: the build's own warnings are GCC's business (-Wno-everything first,
    # since a later flag wins).
    return out + ["-fsyntax-only", "-Wno-everything", "-Wthread-safety",
                  "-Werror=thread-safety"]


def check(entry):
    start = time.time()
    p = subprocess.run(clang_command(entry), cwd=entry["directory"], capture_output=True,
                       text=True)
    return entry["file"], p.returncode, p.stderr, time.time() - start


def main():
    argv = sys.argv[1:]
    jobs = 2
    if "-j" in argv:
        i = argv.index("-j")
        jobs = int(argv[i + 1])
        del argv[i:i + 2]
    build = argv[0] if argv else os.path.join(REPO, "build")
    if shutil.which(CLANG) is None:
        print(f"thread_safety_check: {CLANG} not found (apt-get install clang-14); skipped")
        return 77
    with open(os.path.join(build, "compile_commands.json")) as f:
        entries = json.load(f)
    chosen = [e for e in entries
              if e["file"].startswith(REPO + "/") and not e["file"].startswith(build)
              and uses_annotations(e["file"])]
    start = time.time()
    failed = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for path, rc, err, secs in pool.map(check, chosen):
            rel = os.path.relpath(path, REPO)
            print(f"  {'FAIL' if rc else 'ok  '} {rel} ({secs:.1f} s)")
            if rc:
                failed.append(rel)
                sys.stdout.write(err)
    print(f"thread_safety_check: {len(chosen)} translation units, {len(failed)} with findings, "
          f"{time.time() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
