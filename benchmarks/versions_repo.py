"""Model versions under git, measured: ``python -m benchmarks.versions_repo [--workdir DIR]``.

Builds a real git repository in a temporary directory with the dcopt filter, diff and merge
drivers: a BERT-style encoder (4 layers, hidden 256: ``benchmarks.models``) as the base, five
fine-tuned versions on two branches (one layer replaced, a LoRA-style low-rank update, a sparse
edit of the embeddings, another single layer, a full small fine-tune), merged with the merge
driver. Reports the repository size against plain git (same commits, no filter) and against
every version stored whole, ``git diff`` output, merge time, a byte-identical check of every
checked-out version (and that it compiles and runs in dcopt and onnxruntime), and what a damaged
store says.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def sh(cwd, *args, check=True, env=None):
    result = subprocess.run(list(map(str, args)), cwd=cwd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise RuntimeError(f"{args}: {result.stderr}")
    return result


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def variant(base: onnx.ModelProto, change) -> bytes:
    model = onnx.ModelProto()
    model.CopyFrom(base)
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for name, value in change(arrays).items():
        t = next(t for t in model.graph.initializer if t.name == name)
        t.CopyFrom(numpy_helper.from_array(value.astype(arrays[name].dtype), name))
    return model.SerializeToString()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--no-compile", action="store_true", help="skip the dcopt/onnxruntime runs")
    args = parser.parse_args(argv)
    from benchmarks.models import build_transformer

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dcopt-versions-"))
    bench = build_transformer("bert", work / "models")
    base = onnx.load(str(bench.path))
    arrays = {t.name: numpy_helper.to_array(t) for t in base.graph.initializer}
    mats = sorted((n for n, a in arrays.items() if a.ndim == 2 and a.dtype == np.float32 and min(a.shape) >= 256),
                  key=lambda n: (-arrays[n].size, n))
    emb = mats[0]  # word embeddings (30522 x 256)
    layers = [n for n in mats if arrays[n].shape == (256, 256)]
    rng = np.random.default_rng(0)

    def one_layer(name):
        return lambda a: {name: a[name] + rng.standard_normal(a[name].shape) * 0.02}

    def low_rank(names, rank=8):
        return lambda a: {n: a[n] + (rng.standard_normal((a[n].shape[0], rank)).astype(np.float32) * 0.05)
                          @ (rng.standard_normal((rank, a[n].shape[1])).astype(np.float32) * 0.05) for n in names}

    def sparse_rows(name, rows=300):
        def change(a):
            w = a[name].copy()
            w[rng.choice(w.shape[0], rows, replace=False)] += 0.01
            return {name: w}
        return change

    def full(a):
        return {n: v + rng.standard_normal(v.shape) * 1e-3 for n, v in a.items() if v.dtype == np.float32 and v.size > 1}

    versions = {"base": bench.path.read_bytes()}
    plan = [("main", "v1-one-layer", one_layer(layers[0])), ("main", "v2-lora-r8", low_rank(layers[1:3])),
            ("main", "v3-sparse-embedding-rows", sparse_rows(emb)),
            ("feature", "v4-one-layer", one_layer(layers[5])), ("feature", "v5-full-finetune", full)]
    repos = {"dcopt": work / "repo", "plain": work / "plain"}
    for kind, repo in repos.items():
        repo.mkdir(parents=True)
        sh(repo, "git", "init", "-q", "-b", "main")
        sh(repo, "git", "config", "user.email", "bench@example.com")
        sh(repo, "git", "config", "user.name", "bench")
        if kind == "dcopt":
            sh(repo, sys.executable, "-m", "dcopt", "git", "install", "--strategy", "average")
            sh(repo, sys.executable, "-m", "dcopt", "git", "track", "*.onnx")
            sh(repo, "git", "add", ".gitattributes")
    timings = {}
    for kind, repo in repos.items():
        model = repo / "model.onnx"
        model.write_bytes(versions["base"])
        t = time.perf_counter()
        sh(repo, "git", "add", "model.onnx")
        sh(repo, "git", "commit", "-qm", "base")
        timings.setdefault(kind, []).append(time.perf_counter() - t)
    feature_from = None
    state = {"main": base}
    for branch, name, change in plan:
        if branch == "feature" and feature_from is None:
            feature_from = "v1-one-layer"
            for repo in repos.values():
                sh(repo, "git", "checkout", "-q", "-b", "feature", "HEAD~2")
            state["feature"] = onnx.load_from_string(versions["v1-one-layer"])
        data = variant(state[branch], change)
        versions[name] = data
        state[branch] = onnx.load_from_string(data)
        for kind, repo in repos.items():
            (repo / "model.onnx").write_bytes(data)
            t = time.perf_counter()
            sh(repo, "git", "commit", "-qam", name)
            timings[kind].append(time.perf_counter() - t)
    results = {}
    for kind, repo in repos.items():
        sh(repo, "git", "checkout", "-q", "main")
        t = time.perf_counter()
        merge = sh(repo, "git", "merge", "feature", "-m", "merge feature", check=False)
        results[f"{kind}_merge_s"] = time.perf_counter() - t
        results[f"{kind}_merge_rc"] = merge.returncode
        results[f"{kind}_merge_out"] = (merge.stdout + merge.stderr).strip()
    repo = repos["dcopt"]
    versions["merged"] = (repo / "model.onnx").read_bytes()
    if results["plain_merge_rc"] != 0:  # plain git cannot merge a binary: commit dcopt's result by hand
        (repos["plain"] / "model.onnx").write_bytes(versions["merged"])
        sh(repos["plain"], "git", "commit", "-qam", "merge feature (resolved by hand)")

    print(f"workdir: {work}")
    print(f"base model: {bench.description}, {len(versions['base']) / 1e6:.1f} MB, "
          f"{len(arrays)} parameters")
    print("commit times (s): " + ", ".join(f"{k}: {' '.join(f'{x:.1f}' for x in v)}" for k, v in timings.items()))
    for kind in repos:
        print(f"{kind} merge: rc {results[f'{kind}_merge_rc']}, {results[f'{kind}_merge_s']:.1f} s: "
              f"{results[f'{kind}_merge_out'][:300]}")
    whole = sum(len(v) for k, v in versions.items())
    sizes = {"dcopt .git (with store)": du(repo / ".git"), "  of which store": du(repo / ".git" / "dcopt"),
             "plain git .git (loose)": du(repos["plain"] / ".git")}
    sh(repos["plain"], "git", "gc", "-q")
    sizes["plain git .git (after git gc)"] = du(repos["plain"] / ".git")
    sizes[f"every version whole ({len(versions)} files)"] = whole
    for label, size in sizes.items():
        print(f"{label:40s} {size / 1e6:8.1f} MB")

    print("\n$ git diff HEAD~2 HEAD~1 (v2 -> v3 on main, through the dcopt diff driver)")
    print(sh(repo, "git", "log", "--oneline", "--graph").stdout)
    diff = sh(repo, "git", "diff", "HEAD~2", "HEAD~1").stdout
    print(diff)
    t = time.perf_counter()
    log = sh(repo, "git", "log", "-p", "-1", "HEAD~1").stdout
    print(f"$ git log -p -1 HEAD~1 (textconv; {time.perf_counter() - t:.1f} s), first lines of the hunk:")
    print("\n".join(log.splitlines()[:24]))

    print("\nround trip: checkout every commit, compare sha256" + ("" if args.no_compile else ", compile, run"))
    commits = sh(repo, "git", "log", "--format=%H %s", "--all").stdout.splitlines()
    import dcopt

    for line in commits:
        sha, subject = line.split(" ", 1)
        sh(repo, "git", "checkout", "-q", sha)
        data = (repo / "model.onnx").read_bytes()
        key = "merged" if subject.startswith("merge") else subject
        same = hashlib.sha256(data).hexdigest() == hashlib.sha256(versions[key]).hexdigest()
        msg = f"  {subject:28s} byte-identical: {same}"
        if not args.no_compile:
            import onnxruntime as ort

            t = time.perf_counter()
            out = dcopt.compile(repo / "model.onnx").run(None, bench.feeds)[0]
            compile_s = time.perf_counter() - t
            ref = ort.InferenceSession(str(repo / "model.onnx"), providers=["CPUExecutionProvider"]).run(
                None, bench.feeds)[0]
            msg += f"  dcopt vs onnxruntime max|d| {np.abs(out - ref).max():.2e} (compile+run {compile_s:.1f} s)"
        print(msg)
    sh(repo, "git", "checkout", "-q", "main")

    print("\ndamaged store:")
    manifest = sh(repo, "git", "cat-file", "blob", "HEAD~1:model.onnx").stdout
    import json

    param = json.loads(manifest)["params"][3]
    name = param["update"]["sha256"] if param["update"]["type"] == "dense" else param["update"]["base"]["sha256"]
    obj = next(f for f in (repo / ".git" / "dcopt" / "objects").rglob("*") if f.name.startswith(name[2:]))
    saved = obj.read_bytes()
    obj.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
    (repo / "model.onnx").unlink()
    r = sh(repo, "git", "checkout", "HEAD~1", "--", "model.onnx", check=False)
    print(f"  corrupted object -> git exit {r.returncode}: {r.stderr.strip()}")
    obj.unlink()
    r = sh(repo, "git", "checkout", "HEAD~1", "--", "model.onnx", check=False)
    print(f"  missing object   -> git exit {r.returncode}: {r.stderr.strip()}")
    obj.write_bytes(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
