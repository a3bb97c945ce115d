"""Each model exported to ONNX once, beside its file, and opened on ONNX Runtime: predicting without the framework.

The export of `cnn_default.pth` is `cnn_default.pth.onnx`. It records the sha256 of the file it was made from,
and `open_session` makes it again whenever that no longer matches the model file: a stale export is never used.
A CNN's export also records the checkpoint's own fields (mirror TTA, crop, temperature), so that reading them
needs no torch; a sidecar `<model>.json` still wins over them, as in models/model_meta.py.

Both graphs take N x 224 x 224 x 3 float32 pixels in [0, 255] ("pixels"); mirror TTA, temperature and the
head crop stay outside, in models/predictor.py, exactly as on the framework path.

- torch (the CNN): torch.onnx.export's TorchScript-based exporter (dynamo=False; the dynamo exporter needs
  onnxscript). Outputs "probs" and "features" (models/cnn.py `logits_and_features`, one pass for both).
- keras (MobileNetV2): tf2onnx.convert.from_keras. Output "probs". Keras 3's own
  `model.export(format="onnx")` also runs on TF 2.21, but its graph of the shipped MobileNetV2 gave
  probabilities up to 0.50 away from the model's on the sample images, so it is not used.
"""

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from domain import Framework
from models.model_meta import CHECKPOINT_FIELDS

OPSET = 17
INPUT = "pixels"
# Bumped when the exported graph changes shape or outputs, so older exports are made again.
EXPORT_VERSION = "1"


def export_path(model_path: str | Path) -> Path:
    return Path(str(model_path) + ".onnx")


def _torch_graph(model_path: Path) -> tuple[bytes, dict[str, Any]]:
    import io

    import torch

    from domain import INPUT_SIZE
    from models.cnn import load_checkpoint, logits_and_features, normalize

    net, ckpt = load_checkpoint(model_path)

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits, features = logits_and_features(self.net, normalize(pixels.permute(0, 3, 1, 2)))
            return torch.softmax(logits, dim=1), features

    buffer = io.BytesIO()
    example = torch.zeros(1, INPUT_SIZE, INPUT_SIZE, 3)
    with warnings.catch_warnings():
        # The TorchScript-based exporter warns that it is deprecated; it is the one that needs no onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Graph().eval(),
            (example,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=["probs", "features"],
            dynamic_axes={INPUT: {0: "n"}, "probs": {0: "n"}, "features": {0: "n"}},
        )
    meta = {key: ckpt[key] for key in CHECKPOINT_FIELDS if key in ckpt}
    return buffer.getvalue(), meta


def _keras_graph(model_path: Path) -> tuple[bytes, dict[str, Any]]:
    import tensorflow as tf
    import tf2onnx

    from domain import INPUT_SIZE
    from models.mobilenet import load_model

    model = load_model(model_path)
    # tf2onnx names the graph's output after the model's last layer ("probs").
    spec = (tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32, name=INPUT),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    return proto.SerializeToString(), {}


def export(framework: str, model_path: str | Path, sha256: str) -> bytes:
    """The model's ONNX graph, tagged with `sha256` (of the model file) and the fields it carries."""
    import onnx

    graph, meta = (_torch_graph if framework == Framework.TORCH else _keras_graph)(Path(model_path))
    proto = onnx.load_from_string(graph)
    tags = {"source_sha256": sha256, "export_version": EXPORT_VERSION, "meta": json.dumps(meta, default=float)}
    del proto.metadata_props[:]
    for key, value in tags.items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def _write_beside(path: Path, data: bytes) -> bool:
    """Write atomically (two processes exporting at once each rename a whole file); False where not writable."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the export from the app's other users
        os.replace(tmp, path)
        return True
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return False


def _session_options(threads: int):  # -> onnxruntime.SessionOptions
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle pool threads would spin on cores that the other framework, the app and the worker share.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _is_current(session, sha256: str) -> bool:  # session: onnxruntime.InferenceSession
    tags = session.get_modelmeta().custom_metadata_map
    return tags.get("source_sha256") == sha256 and tags.get("export_version") == EXPORT_VERSION


def open_session(framework: str, model_path: str | Path, sha256: str, *, threads: int = 1):
    """An onnxruntime.InferenceSession for the model file whose sha256 is `sha256`: its export beside it when
    that was made from this very file, else a new export (written beside it where the folder is writable)."""
    import onnxruntime as ort

    path = export_path(model_path)
    options = _session_options(threads)
    if path.is_file():
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        if _is_current(session, sha256):
            return session
    data = export(framework, model_path, sha256)
    _write_beside(path, data)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def exported_meta(session) -> dict[str, Any]:  # session: onnxruntime.InferenceSession
    """The fields the export recorded from its model file (a CNN checkpoint's tta, config, temperature...)."""
    return json.loads(session.get_modelmeta().custom_metadata_map.get("meta", "{}"))
