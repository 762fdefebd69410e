#!/usr/bin/env python3
"""edge_cover.py: shrink a fuzz corpus to a small set that keeps every edge.

libFuzzer's -set_cover_merge keeps every *feature* (edge hit-count buckets
too), which for this front end is ~250 files. Each error path of the front
end is its own few edges, so about 200 files are needed to keep every edge;
this picks them greedily (most new edges first, smaller file on ties).

    python3 tests/fuzz/edge_cover.py FUZZER CANDIDATE_DIR OUT_DIR

Runs FUZZER -merge=1 on each candidate alone to learn the edges it covers
(the merge control file's COV line), then copies the chosen files to OUT_DIR.
"""
import os
import shutil
import subprocess
import sys
import tempfile


def edges(fuzzer, path, tmp):
    one, empty = os.path.join(tmp, "one"), os.path.join(tmp, "empty")
    for d in (one, empty):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    shutil.copy(path, one)
    mcf = os.path.join(tmp, "mcf")
    if os.path.exists(mcf):  # an existing control file makes libFuzzer resume it
        os.remove(mcf)
    subprocess.run([fuzzer, "-merge=1", "-use_counters=0", "-timeout=5",
                    "-merge_control_file=" + mcf, empty, one],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    with open(mcf) as f:
        for line in f:
            if line.startswith("COV "):
                return set(line.split()[2:])
    return set()


def main():
    fuzzer, src, out = sys.argv[1:4]
    with tempfile.TemporaryDirectory() as tmp:
        cov = {n: edges(fuzzer, os.path.join(src, n), tmp) for n in sorted(os.listdir(src))}
    size = {n: os.path.getsize(os.path.join(src, n)) for n in cov}
    left, chosen = set().union(*cov.values()), []
    while left:
        best = max(cov, key=lambda n: (len(cov[n] & left), -size[n]))
        chosen.append(best)
        left -= cov[best]
    os.makedirs(out, exist_ok=True)
    for n in chosen:
        shutil.copy(os.path.join(src, n), out)
    print(f"{len(chosen)} of {len(cov)} files keep all "
          f"{len(set().union(*cov.values()))} edges ({sum(size[n] for n in chosen)} bytes)")


if __name__ == "__main__":
    main()
