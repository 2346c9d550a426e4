"""`initialize` helper shared by the Python-backend models: config parameters and the version folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def model_params(args: dict, required: Sequence[str] = ()) -> tuple[dict[str, str], Path]:
    """Parse a Python model's `initialize` args into (string parameters, version folder).

    Raises:
        TritonModelException: a required parameter is missing (the message names the model and the key).
    """
    import triton_python_backend_utils as pb_utils

    config = json.loads(args["model_config"])
    params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
    for key in required:
        if key not in params:
            raise pb_utils.TritonModelException(f"{args['model_name']}: config parameter '{key}' is missing")
    return params, Path(args["model_repository"]) / args["model_version"]
