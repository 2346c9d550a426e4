"""Pretrained backbone weights into an `EarlyExitEncoder` (HF BERT-family checkpoints, offline)."""

from __future__ import annotations

from pathlib import Path

import torch

from adaptive_serving.encoder import EarlyExitEncoder


def backbone_state_dict(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """Read an HF BERT-family checkpoint's weights, with any `bert.` prefix stripped.

    Raises:
        FileNotFoundError: neither `model.safetensors` nor `pytorch_model.bin` is in the directory.
    """
    d = Path(checkpoint_dir)
    if (d / "model.safetensors").exists():
        from safetensors.torch import load_file

        sd = load_file(str(d / "model.safetensors"))
    elif (d / "pytorch_model.bin").exists():
        sd = torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {d}")
    return {k.removeprefix("bert."): v for k, v in sd.items()}


def load_backbone(model: EarlyExitEncoder, checkpoint_dir: str | Path) -> EarlyExitEncoder:
    """Copy embeddings and the first `config.num_layers` layers of a checkpoint into `model` (heads untouched).

    Raises:
        KeyError: the checkpoint lacks a backbone weight the model needs (names the missing keys).
        ValueError: a weight has the wrong shape (names it).
    """
    sd = backbone_state_dict(checkpoint_dir)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("heads.")}
    missing = sorted(k for k in own if k not in sd)
    if missing:
        raise KeyError(f"{checkpoint_dir}: checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}")
    for k, v in own.items():
        if sd[k].shape != v.shape:
            raise ValueError(f"{checkpoint_dir}: {k} has shape {tuple(sd[k].shape)}, model expects {tuple(v.shape)}")
    model.load_state_dict({k: sd[k] for k in own}, strict=False)
    return model
