"""Predictors of a saved model: in its framework (torch, Keras) or on ONNX Runtime; probabilities and heatmaps."""

import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from domain import CLASSES, INPUT_SIZE
from models.data.preprocessing import head_box, model_input
from models.inference.calibration import apply_temperature
from models.inference.model_meta import OpenCheck, model_meta, read_sidecar

# Images per ONNX Runtime run (twice as many rows with mirror TTA). Larger runs gain nothing on a CPU, and their
# activations (the CNN's first block holds 16 x 224 x 224 floats a row) outgrow the caches and the memory: 64
# images in chunks of 32 took 28.1 ms an image (CNN) and 12.9 (MobileNetV2) with a 1,295 MB peak, in chunks of 8
# 19.6 and 9.6 ms with 442 MB (one thread, AMD EPYC with AVX2).
ONNX_CHUNK = 8


class Predictor(Protocol):
    framework: str

    def predict(self, images: list[np.ndarray]) -> np.ndarray: ...

    def heatmap(self, rgb: np.ndarray) -> np.ndarray: ...

    def input_probs(self, inputs: np.ndarray) -> np.ndarray: ...

    def input_map(self, x: np.ndarray) -> np.ndarray: ...


class FeaturePredictor(Predictor, Protocol):
    """A CNN predictor, on either backend: it also gives the out-of-distribution check's features."""

    def features(self, images: list[np.ndarray]) -> np.ndarray: ...

    def predict_with_features(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...


def _preprocessing(meta: dict) -> tuple[bool, bool, float]:
    """(mirror test-time augmentation, head crop, temperature) as the model was trained and calibrated."""
    return (
        bool(meta.get("tta", False)),
        bool(meta.get("config", {}).get("crop", False)),
        float(meta.get("temperature", 1.0)),
    )


def _stack(images: list[np.ndarray], crop: bool) -> np.ndarray:
    return np.stack([model_input(im, INPUT_SIZE, crop=crop) for im in images])


def _normalise_cam(cam: np.ndarray, rgb: np.ndarray, crop: bool) -> np.ndarray:
    """A coarse activation map scaled to [0, 1] and laid over the image's height and width.

    A model that saw the head's crop gets its map placed back over that box of the original image.
    """
    from PIL import Image

    cam = np.maximum(cam, 0)
    peak = cam.max()
    cam = cam / peak if peak > 0 else np.zeros_like(cam)
    h, w = rgb.shape[:2]
    top, left, side = head_box(rgb) if crop else (0, 0, 0)
    if not crop:
        img = Image.fromarray(cam.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR)
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    img = Image.fromarray(cam.astype(np.float32), mode="F").resize((side, side), Image.BILINEAR)
    boxed = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    out = np.zeros((h, w), dtype=np.float32)
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + side, h), min(left + side, w)
    out[y0:y1, x0:x1] = boxed[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def _cnn_map(cam: np.ndarray, rgb: np.ndarray, crop: bool) -> np.ndarray:
    """The CNN's 56 x 56 HiResCAM, smoothed and laid over the image."""
    return _normalise_cam(_smooth(np.maximum(cam, 0), sigma=1.5), rgb, crop)


def _laid(framework: str, cam: np.ndarray, rgb: np.ndarray, crop: bool) -> np.ndarray:
    return _cnn_map(cam, rgb, crop) if framework == "torch" else _normalise_cam(cam, rgb, crop)


# MobileNetV2's heatmap: occlusion over an 8 x 8 grid of its input. Its last convolution is 4 x 4 at 128 px, too
# coarse to say where in the head; occlusion needs forward passes only, so ONNX Runtime computes it from the
# prediction graph, and hiding a part of the background (black already) changes nothing, so no heat lands there.
OCCLUSION_GRID = 8


def occlusion_windows(size: int, grid: int = OCCLUSION_GRID) -> list[tuple[int, int, int, int, int, int]]:
    """(row, column, top, bottom, left, right) of each window hidden in turn: 2 x 2 cells of the grid, one cell
    apart, the first and last reaching past the edge, so that every cell lies in exactly four windows."""
    edges = np.round(np.linspace(0, size, grid + 1)).astype(int)
    return [
        (i, j, edges[max(i, 0)], edges[min(i + 2, grid)], edges[max(j, 0)], edges[min(j + 2, grid)])
        for i in range(-1, grid)
        for j in range(-1, grid)
    ]


def log_odds(probs: np.ndarray, label: int) -> np.ndarray:
    """log(p / (1 - p)) of class `label` per row, with 1 - p summed from the other classes (no cancellation when
    p is close to 1)."""
    probs = np.asarray(probs, dtype=np.float64)
    rest = np.delete(probs, label, axis=1).sum(axis=1)
    return np.log(np.maximum(probs[:, label], 1e-30)) - np.log(np.maximum(rest, 1e-30))


def occlusion_map(x: np.ndarray, input_probs, grid: int = OCCLUSION_GRID) -> np.ndarray:
    """grid x grid: for each cell, how much the predicted class's log-odds fall, on average, when a window
    holding the cell is blacked out. x: one model input (s x s x 3 uint8); input_probs: N x s x s x 3 -> N x
    classes. Cells whose hiding raises the answer come out negative (the overlay shows them as nothing)."""
    x = np.asarray(x, dtype=np.uint8)
    # A window of background that is black already leaves the input as it is: its fall is 0, with no run.
    windows = [w for w in occlusion_windows(x.shape[0], grid) if x[w[2] : w[3], w[4] : w[5]].any()]
    batch = np.repeat(x[None], 1 + len(windows), axis=0)
    for k, (_, _, top, bottom, left, right) in enumerate(windows, start=1):
        batch[k, top:bottom, left:right] = 0
    probs = input_probs(batch)
    odds = log_odds(probs, int(np.argmax(probs[0])))
    cam = np.zeros((grid, grid), dtype=np.float64)
    for (i, j, *_), fall in zip(windows, odds[0] - odds[1:], strict=True):
        cam[max(i, 0) : i + 2, max(j, 0) : j + 2] += fall
    return (cam / 4).astype(np.float32)


class _Maps:
    """heatmap and input_map from a predictor's input_probs and its map of one model input (_input_cam)."""

    framework: str
    crop: bool

    def _input_cam(self, x: np.ndarray) -> np.ndarray:
        return occlusion_map(x, self.input_probs)

    def input_probs(self, inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def heatmap(self, rgb: np.ndarray) -> np.ndarray:
        """The map over the image (H x W, 0 to 1): where the evidence for the predicted class lies."""
        return _laid(self.framework, self._input_cam(_stack([rgb], self.crop)[0]), rgb, self.crop)

    def input_map(self, x: np.ndarray) -> np.ndarray:
        """The same map over one model input x (INPUT_SIZE x INPUT_SIZE x 3 uint8, already cropped)."""
        return _laid(self.framework, self._input_cam(x), x, False)


def _smooth(cam: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur (in map cells), so the heatmap shows regions rather than speckle."""
    radius = max(1, int(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(cam, radius, mode="edge")
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


class TorchPredictor(_Maps):
    framework = "torch"

    def __init__(self, path: str | Path, check: OpenCheck | None = None) -> None:
        from models.nets.cnn import load_checkpoint

        self.model, ckpt = load_checkpoint(path)
        self.meta = model_meta(path, checkpoint=ckpt, check=check)
        self.tta, self.crop, self.temperature = _preprocessing(self.meta)

    def predict(self, images: list[np.ndarray]) -> np.ndarray:
        from models.nets.cnn import predict_proba

        if not images:
            return np.zeros((0, len(CLASSES)), dtype=np.float32)
        raw = predict_proba(self.model, _stack(images, self.crop), tta=self.tta)
        return apply_temperature(raw, self.temperature).astype(np.float32)

    def features(self, images: list[np.ndarray]) -> np.ndarray:
        """The out-of-distribution check's feature vector per image, from the same preprocessing as predict."""
        from models.nets.cnn import FEATURES, feature_summary

        if not images:
            return np.zeros((0, FEATURES), dtype=np.float32)
        return feature_summary(self.model, _stack(images, self.crop))

    def predict_with_features(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return self.predict(images), self.features(images)

    def input_probs(self, inputs: np.ndarray) -> np.ndarray:
        """The probabilities of model inputs as they are: no mirror, no temperature (what the map explains)."""
        from models.nets.cnn import predict_proba

        return predict_proba(self.model, np.asarray(inputs, dtype=np.uint8))

    def _input_cam(self, x: np.ndarray) -> np.ndarray:
        import torch

        from models.nets.cnn import normalize

        x = normalize(torch.from_numpy(np.ascontiguousarray(x[None])).permute(0, 3, 1, 2))
        # The model is shared by every session and job of the process: no hook is registered on it and no
        # gradient lands in its parameters; the activation is a leaf of this call's own graph.
        with torch.no_grad():
            # The last block's ReLU output (56x56): the finest map that still sees whole structures.
            act = self.model.features[:12](x)
        act.requires_grad_(True)
        with torch.enable_grad():
            logits = self.model.head(self.model.features[12:](act))
            (grad,) = torch.autograd.grad(logits[0, int(logits.argmax(1))], act)
        # HiResCAM: gradient times activation at each position, summed over channels. With a Flatten -> Linear
        # head every position has its own weights, so Grad-CAM's spatially averaged gradient points at the
        # wrong places; this form is exact for such heads (and equals Grad-CAM after global average pooling).
        return (grad[0] * act[0]).sum(0).detach().numpy()


class KerasPredictor(_Maps):
    framework = "keras"

    def __init__(self, path: str | Path, check: OpenCheck | None = None) -> None:
        from models.nets.mobilenet import load_model

        self.model = load_model(path)
        self.tta, self.crop, self.temperature = _preprocessing(model_meta(path, check=check))

    def predict(self, images: list[np.ndarray]) -> np.ndarray:
        from models.nets.mobilenet import predict_proba

        if not images:
            return np.zeros((0, len(CLASSES)), dtype=np.float32)
        raw = predict_proba(self.model, _stack(images, self.crop), tta=self.tta)
        return apply_temperature(raw, self.temperature).astype(np.float32)

    def input_probs(self, inputs: np.ndarray) -> np.ndarray:
        from models.nets.mobilenet import predict_proba

        return predict_proba(self.model, np.asarray(inputs, dtype=np.uint8))


class OnnxPredictor(_Maps):
    """Predictions, heatmaps and the CNN's out-of-distribution features on ONNX Runtime, from the model's export
    (models/inference/onnx_export.py): neither torch nor TensorFlow is imported. The CNN's heatmap graph computes
    HiResCAM in closed form (models/nets/cnn.py `hirescam`); MobileNetV2's occlusion map runs the prediction graph.
    Both are the framework path's maps to within rounding."""

    def __init__(
        self,
        framework: str,
        path: str | Path,
        *,
        sha256: str,
        threads: int = 1,
        int8: bool = False,
        check: OpenCheck | None = None,
    ) -> None:
        from models.inference.onnx_export import exported_meta, open_session

        self.framework = framework
        self.path = Path(path)
        self.sha256 = sha256
        self.threads = threads
        self.check = check
        self.session = open_session(framework, path, sha256, threads=threads, int8=int8, check=check)
        self._cam_session = None
        self._cam_lock = threading.Lock()
        self.has_features = any(output.name == "features" for output in self.session.get_outputs())
        meta = {**exported_meta(self.session), **read_sidecar(path, check)}
        self.tta, self.crop, self.temperature = _preprocessing(meta)

    def _run(self, output: str, x: np.ndarray) -> np.ndarray:
        return self.session.run([output], {"pixels": x})[0]

    def _mirrored_runs(self, images: list[np.ndarray], outputs: list[str]) -> list[list[np.ndarray]]:
        """Per chunk of images, one run's `outputs` over the images and, with mirror TTA, their mirrors: the first
        output averaged over each image and its mirror as the framework path does, the others of the images alone."""
        runs = []
        for start in range(0, len(images), ONNX_CHUNK):
            x = _stack(images[start : start + ONNX_CHUNK], self.crop).astype(np.float32)
            both = np.concatenate([x, x[:, :, ::-1]]) if self.tta else x
            first, *rest = self.session.run(outputs, {"pixels": both})
            if self.tta:
                first = (first[: len(x)] + first[len(x) :]) / 2
            runs.append([first, *(out[: len(x)] for out in rest)])
        return runs

    def _calibrated(self, chunks: list[np.ndarray]) -> np.ndarray:
        if not chunks:
            return np.zeros((0, len(CLASSES)), dtype=np.float32)
        return apply_temperature(np.concatenate(chunks), self.temperature).astype(np.float32)

    def predict(self, images: list[np.ndarray]) -> np.ndarray:
        return self._calibrated([probs for (probs,) in self._mirrored_runs(images, ["probs"])])

    def predict_with_features(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """predict's and features' answers from the one run per chunk (the features of the un-mirrored half): a
        batch job checks and predicts each image at the cost of predicting it."""
        if not self.has_features:
            raise ValueError("only the CNN has out-of-distribution features")
        runs = self._mirrored_runs(images, ["probs", "features"])
        if not runs:
            return self.predict([]), self.features([])
        return self._calibrated([probs for probs, _ in runs]), np.concatenate([features for _, features in runs])

    def features(self, images: list[np.ndarray]) -> np.ndarray:
        """The CNN's out-of-distribution feature vector per image (TorchPredictor.features)."""
        if not self.has_features:
            raise ValueError("only the CNN has out-of-distribution features")
        chunks = [
            self._run("features", _stack(images[start : start + ONNX_CHUNK], self.crop).astype(np.float32))
            for start in range(0, len(images), ONNX_CHUNK)
        ]
        if not chunks:
            width = next(o.shape[1] for o in self.session.get_outputs() if o.name == "features")
            return np.zeros((0, width), dtype=np.float32)
        return np.concatenate(chunks)

    def heatmap_session(self):  # -> onnxruntime.InferenceSession
        """The session whose graph outputs "cam": the CNN's heatmap graph, opened on the first heatmap."""
        from models.inference.onnx_export import open_session

        if self.framework != "torch":
            raise ValueError("only the CNN has a heatmap graph: MobileNetV2's occlusion map runs its prediction graph")

        with self._cam_lock:
            if self._cam_session is None:
                self._cam_session = open_session(
                    self.framework, self.path, self.sha256, threads=self.threads, heatmap=True, check=self.check
                )
            return self._cam_session

    def input_probs(self, inputs: np.ndarray) -> np.ndarray:
        """The probabilities of model inputs as they are: no mirror, no temperature (what the map explains)."""
        inputs = np.asarray(inputs)
        chunks = [
            self._run("probs", inputs[start : start + ONNX_CHUNK].astype(np.float32))
            for start in range(0, len(inputs), ONNX_CHUNK)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(CLASSES)), dtype=np.float32)

    def _input_cam(self, x: np.ndarray) -> np.ndarray:
        if self.framework != "torch":
            return super()._input_cam(x)
        # One run of the un-mirrored input, as the framework path's heatmap; a session keeps nothing between runs.
        return self.heatmap_session().run(["cam"], {"pixels": x[None].astype(np.float32)})[0][0]
