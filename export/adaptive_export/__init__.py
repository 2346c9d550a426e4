"""Early-exit model family: data views, training, per-stage export and threshold calibration.

Modules, in pipeline order: `data` (BBC News split, views, tokenizer), `model` (BERT encoder, exit heads, stages),
`train` (frozen-backbone features, exit heads), `confidence` (numpy exit policies, shared with serving),
`calibrate` (Learn-then-Test thresholds), `onnx_export` (declared stage export + parity), `tensorrt` (optional
engines), `manifest` (cost model, hashes), `build` (the pipeline), `cli` (`python -m adaptive_export build|byo`).
"""
