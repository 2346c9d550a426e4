"""Tensor names, defined once. ONNX graphs, config.pbtxt files and clients all use these (HF names where they exist)."""

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
HIDDEN = "hidden"
LOGITS = "logits"

# Entry model (`adaptive`) inputs and outputs.
TEXT = "text"
LABEL = "label"
CONFIDENCE = "confidence"
EXIT_STAGE = "exit_stage"
EXIT_LAYER = "exit_layer"
MODEL_SIZE = "model_size"
DEADLINE_CUT = "deadline_cut"
# The answer in the user's words: the label name the export was trained with (BYTES), beside the index `label`.
LABEL_NAME = "label_name"

# Stages >= 2 read the previous stage's HIDDEN output under this name: a middle stage both reads and writes hidden
# states, and ONNX graphs (and Triton configs) need distinct input and output names.
HIDDEN_IN = "hidden_in"

# Tokenizer output, router and cascade input: `time.monotonic_ns()` when the request reached the tokenizer, the entry's
# first step. The gate models count a request's deadline from it, so time spent before them is not budgeted twice.
ENTERED_NS = "entered_ns"

# Optional gate-model input, set only by the configs' `model_warmup` sample: the request warms the model's paths while
# it loads (`adaptive_serving.gate_model`) and never fails the load.
WARMUP = "warmup"

# Router outputs (the `adaptive` entry when a router is built).
COMPLEXITY = "complexity"
ESCALATIONS = "escalations"

# Outputs of the cascade models, and of the router (the cascade's and two more).
CASCADE_OUTPUTS = (LABEL, CONFIDENCE, EXIT_STAGE, EXIT_LAYER, MODEL_SIZE, DEADLINE_CUT, LABEL_NAME)
ROUTER_OUTPUTS = (*CASCADE_OUTPUTS, COMPLEXITY, ESCALATIONS)
