"""Each model exported to ONNX once, beside its file and tagged with its sha256, and opened on ONNX Runtime:
predictions and heatmaps without the framework (docs/design/onnx.md).
"""

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from domain import Framework
from models.inference.model_meta import CHECKPOINT_FIELDS, OpenCheck

OPSET = 17
INPUT = "pixels"
# Bumped when the exported graph changes shape or outputs, so older exports are made again.
EXPORT_VERSION = "3"


def export_path(model_path: str | Path, *, int8: bool = False, heatmap: bool = False) -> Path:
    if heatmap:
        return Path(str(model_path) + ".cam.onnx")
    return Path(str(model_path) + (".int8.onnx" if int8 else ".onnx"))


def _torch_graph(model_path: Path, heatmap: bool) -> tuple[bytes, dict[str, Any]]:
    import io

    import torch

    from domain import INPUT_SIZE
    from models.nets.cnn import class_gradients, forward_parts, hirescam, load_checkpoint, normalize

    net, ckpt = load_checkpoint(model_path)

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            # A constant of the weights, stored once in the graph rather than computed on every run.
            self.register_buffer("gradients", class_gradients(net))

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
            logits, features, kept = forward_parts(self.net, normalize(pixels.permute(0, 3, 1, 2)))
            if heatmap:
                return (hirescam(kept, logits, self.net, self.gradients),)
            return torch.softmax(logits, dim=1), features

    outputs = ["cam"] if heatmap else ["probs", "features"]
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
            output_names=outputs,
            dynamic_axes={INPUT: {0: "n"}, **{name: {0: "n"} for name in outputs}},
        )
    meta = {key: ckpt[key] for key in CHECKPOINT_FIELDS if key in ckpt}
    return buffer.getvalue(), meta


def _keras_graph(model_path: Path, heatmap: bool) -> tuple[bytes, dict[str, Any]]:
    import tensorflow as tf
    import tf2onnx

    from domain import INPUT_SIZE
    from models.nets.mobilenet import load_model

    model = load_model(model_path)
    # tf2onnx names the graph's output after the model's output layer ("probs").
    spec = (tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32, name=INPUT),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    return proto.SerializeToString(), {}


def _int8_linear(proto):  # (onnx.ModelProto) -> onnx.ModelProto
    """The graph with its large fully connected layer's weights in int8 and its activations quantized per call.

    ONNX Runtime's dynamic quantization takes MatMul, not the Gemm torch exports for a Linear: the Gemm whose
    weight is largest becomes MatMul + Add first.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = proto.graph
    weights = {init.name: init for init in graph.initializer}
    gemm = max(
        (n for n in graph.node if n.op_type == "Gemm" and n.input[1] in weights),
        key=lambda n: len(weights[n.input[1]].raw_data),
    )
    attrs = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
    x, w, bias = gemm.input
    matrix = numpy_helper.to_array(weights[w])
    matrix = matrix.T if attrs.get("transB", 0) else matrix
    graph.initializer.remove(weights[w])
    graph.initializer.append(numpy_helper.from_array(matrix.copy(), w))
    at = list(graph.node).index(gemm)
    graph.node.remove(gemm)
    product = gemm.output[0] + "/matmul"
    graph.node.insert(at, helper.make_node("Add", [product, bias], list(gemm.output), name=gemm.name + "/add"))
    graph.node.insert(at, helper.make_node("MatMul", [x, w], [product], name=gemm.name + "/matmul"))
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, source)
        quantize_dynamic(
            source, target, nodes_to_quantize=[gemm.name + "/matmul"], weight_type=QuantType.QInt8, per_channel=True
        )
        return onnx.load(target)


def export(framework: str, model_path: str | Path, sha256: str, *, int8: bool = False, heatmap: bool = False) -> bytes:
    """The model's ONNX graph, tagged with `sha256` (of the model file) and the fields it carries; int8 (the
    CNN only) with its large Linear layer quantized; heatmap (the CNN only: MobileNetV2's occlusion map runs
    its prediction graph) the graph of its heatmap alone."""
    import onnx

    if heatmap and framework != Framework.TORCH:
        raise ValueError("only the CNN has a separate heatmap graph")
    graph, meta = (_torch_graph if framework == Framework.TORCH else _keras_graph)(Path(model_path), heatmap)
    proto = onnx.load_from_string(graph)
    if int8:
        if framework != Framework.TORCH:
            raise ValueError("only the CNN has an int8 export")
        proto = _int8_linear(proto)
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
    # Memory patterns keep a block planned for each input shape seen: the CNN at a 32-image chunk held 940 MB
    # with them and 540 MB without, at 3 % of its speed (one thread, Xeon with AVX-512).
    options.enable_mem_pattern = False
    return options


def _is_current(session, sha256: str) -> bool:  # session: onnxruntime.InferenceSession
    tags = session.get_modelmeta().custom_metadata_map
    return tags.get("source_sha256") == sha256 and tags.get("export_version") == EXPORT_VERSION


def open_session(
    framework: str,
    model_path: str | Path,
    sha256: str,
    *,
    threads: int = 1,
    int8: bool = False,
    heatmap: bool = False,
    check: OpenCheck | None = None,
):
    """An onnxruntime.InferenceSession for the model file whose sha256 is `sha256`: its export beside it when
    that was made from this very file, else a new export (written beside it where the folder is writable).
    heatmap: the CNN's heatmap graph (output "cam"), kept apart because its operations would slow every
    prediction (ONNX Runtime runs a whole graph whatever outputs are asked for). `check` sees the export's
    bytes before ONNX Runtime reads them, and a new export's once it is made."""
    import onnxruntime as ort

    from models.inference.model_meta import file_sha256

    path = export_path(model_path, int8=int8, heatmap=heatmap)
    options = _session_options(threads)
    if path.is_file():
        data = path.read_bytes()
        if check is not None:
            check(path, data, False)
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        if _is_current(session, sha256):
            return session
    if file_sha256(model_path) != sha256:
        raise ValueError(f"model file {model_path} changed after it was registered")
    data = export(framework, model_path, sha256, int8=int8, heatmap=heatmap)
    if _write_beside(path, data) and check is not None:
        check(path, data, True)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def make_exports(
    framework: str,
    model_path: str | Path,
    sha256: str,
    *,
    threads: int = 1,
    int8: bool = False,
    check: OpenCheck | None = None,
) -> None:
    """Every export the model's OnnxPredictor opens made beside it where missing or stale: its prediction graph
    (int8 where asked) and, for the CNN, its heatmap graph (MobileNetV2's occlusion map runs its prediction graph)."""
    open_session(framework, model_path, sha256, threads=threads, int8=int8, check=check)
    if framework == Framework.TORCH:
        open_session(framework, model_path, sha256, threads=threads, heatmap=True, check=check)


def exported_meta(session) -> dict[str, Any]:  # session: onnxruntime.InferenceSession
    """The fields the export recorded from its model file (a CNN checkpoint's tta, config, temperature...)."""
    return json.loads(session.get_modelmeta().custom_metadata_map.get("meta", "{}"))
