"""Images that are not brain MRI slices, to measure the out-of-distribution check (models/evaluation/ood.py) against.

Only what this machine has: pictures drawn here with numpy and Pillow (blank, noise, gradients, screenshots of
text, colour and grayscale scenes standing in for photographs), the DICOM test files bundled with pydicom,
and image files a person names. None of them is ever used to fit the check.
"""

from collections.abc import Callable, Iterable
from hashlib import sha256
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from models.data.imaging import ImageError, decode_image
from models.data.preprocessing import load_rgb

Probe = tuple[str, np.ndarray]  # a name to report it by, and its HxWx3 uint8 pixels

SIDES = (128, 224, 256, 512)
# The vocabulary of the text screenshots.
TEXT = (
    "patient report summary findings impression the of and normal study date signed clinic page total def return "
    "import class self value error warning file edit view help window settings invoice order shipped"
)


def _gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def blank(rng: np.random.Generator, n: int) -> list[Probe]:
    """One level everywhere (black, white, grays), every other one with a little sensor noise."""
    out = []
    for i in range(n):
        side, level = int(rng.choice(SIDES)), int(rng.choice([0, 0, 1, 5, 16, 64, 128, 200, 255]))
        image = np.full((side, side), level, dtype=np.float32)
        if i % 2:
            image += rng.normal(0, 2, image.shape)
        out.append((f"blank {level}{' + noise' if i % 2 else ''} {side}px", _gray3(image)))
    return out


def noise(rng: np.random.Generator, n: int) -> list[Probe]:
    """Uniform and Gaussian noise, in gray and in colour, salt and pepper, and smooth low-frequency blobs."""
    out = []
    for i in range(n):
        side = int(rng.choice(SIDES))
        kind = ("uniform gray", "uniform colour", "gaussian gray", "salt and pepper", "smooth blobs")[i % 5]
        if kind == "uniform gray":
            image = _gray3(rng.integers(0, 256, (side, side)))
        elif kind == "uniform colour":
            image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        elif kind == "gaussian gray":
            image = _gray3(rng.normal(rng.uniform(30, 200), rng.uniform(10, 60), (side, side)))
        elif kind == "salt and pepper":
            image = _gray3(np.where(rng.random((side, side)) < rng.uniform(0.01, 0.2), 255, 0))
        else:
            small = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8))
            image = _gray3(np.asarray(small.resize((side, side), Image.BICUBIC)))
        out.append((f"noise: {kind} {side}px", image))
    return out


def gradients(rng: np.random.Generator, n: int) -> list[Probe]:
    """Horizontal, vertical and radial ramps, gray or between two colours."""
    out = []
    for i in range(n):
        side = int(rng.choice(SIDES[1:]))
        yy, xx = np.mgrid[0:side, 0:side] / (side - 1)
        kind = ("horizontal", "vertical", "radial")[i % 3]
        t = {"horizontal": xx, "vertical": yy, "radial": np.clip(np.hypot(xx - 0.5, yy - 0.5) * 1.4, 0, 1)}[kind]
        t = 1 - t if rng.random() < 0.5 else t
        if i % 2:
            a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            image = (a * (1 - t[..., None]) + b * t[..., None]).astype(np.uint8)
            out.append((f"gradient: {kind}, colour", image))
        else:
            out.append((f"gradient: {kind}, gray", _gray3(t * 255)))
    return out


def text_screens(rng: np.random.Generator, n: int) -> list[Probe]:
    """Screenshots of text: light and dark themes, some with a title bar and a side panel."""
    out, words = [], TEXT.split()
    for i in range(n):
        w, h = int(rng.choice([640, 800, 1024])), int(rng.choice([400, 600, 768]))
        dark, window = i % 3 == 2, i % 4 == 1
        background, ink = ((20, 20, 24), (220, 220, 220)) if dark else ((255, 255, 255), (20, 20, 20))
        image = Image.new("RGB", (w, h), background)
        draw = ImageDraw.Draw(image)
        size = int(rng.choice([12, 14, 16, 20, 28]))
        font = ImageFont.load_default(size=size)
        left = 10
        if window:
            draw.rectangle([0, 0, w, 30], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
            draw.rectangle([0, 30, w // 5, h], fill=(40, 40, 46) if dark else (235, 235, 240))
            left = w // 5 + 10
        for y in range(40, h - size, int(size * 1.5)):
            draw.text((left, y), " ".join(rng.choice(words, int(rng.integers(3, 12)))), fill=ink, font=font)
        theme = "dark" if dark else "light"
        out.append((f"text screenshot: {theme}{', window' if window else ''}, {size}px font", np.asarray(image)))
    return out


def scenes(rng: np.random.Generator, n: int) -> list[Probe]:
    """Stand-ins for colour photographs: a sky gradient over the ground, shapes, blur and sensor noise."""
    out = []
    for i in range(n):
        w, h = int(rng.choice([320, 480, 640])), int(rng.choice([240, 360, 480]))
        height = np.linspace(0, 1, h)[:, None, None]
        image = np.broadcast_to(rng.integers(60, 200, 3) * (1 - height) + rng.integers(150, 256, 3) * height, (h, w, 3))
        image = image.copy()
        image[int(h * rng.uniform(0.4, 0.75)) :] = rng.integers(20, 160, 3)
        picture = Image.fromarray(image.astype(np.uint8))
        draw = ImageDraw.Draw(picture)
        for _ in range(int(rng.integers(3, 12))):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            box = [x0, y0, x0 + int(rng.integers(10, w // 3)), y0 + int(rng.integers(10, h // 3))]
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        picture = picture.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2))))
        pixels = np.asarray(picture, dtype=np.float32) + rng.normal(0, rng.uniform(2, 12), (h, w, 3))
        out.append((f"scene {i}", np.clip(pixels, 0, 255).astype(np.uint8)))
    return out


def grayscale(probes: list[Probe]) -> list[Probe]:
    """The same pictures in gray: colour alone must not be what gives a photograph away."""
    return [(f"{name}, gray", _gray3(np.asarray(Image.fromarray(rgb).convert("L")))) for name, rgb in probes]


def pydicom_test_files() -> tuple[list[Probe], list[Probe]]:
    """pydicom's bundled test files the app's reader decodes, split into (not MR, MR), each picture once."""
    import pydicom
    from pydicom.data import get_testdata_files
    from pydicom.errors import InvalidDicomError

    other: list[Probe] = []
    mr: list[Probe] = []
    seen: set[str] = set()
    for name in sorted(get_testdata_files()):
        path = Path(name)
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            modality = str(pydicom.dcmread(path, stop_before_pixels=True, force=True).get("Modality", "") or "")
            decoded = decode_image(data, f"{path.stem}.dcm", max_bytes=len(data) + 1, max_pixels=4096 * 4096)
        except (ImageError, InvalidDicomError, OSError, ValueError, AttributeError, TypeError):
            continue  # not a DICOM image (a report, a plan, a directory) or not one the app reads
        digest = sha256(decoded.rgb.tobytes()).hexdigest()
        if digest in seen:
            continue  # the same picture in another transfer syntax
        seen.add(digest)
        (mr if modality == "MR" else other).append((f"{modality or 'no modality'} {path.name}", decoded.rgb))
    return other, mr


def image_files(paths: Iterable[str | Path]) -> list[Probe]:
    """Image files (or every image in folders) a person names, e.g. photographs and screenshots on this machine."""
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(f for f in p.rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png")) if p.is_dir() else [p]
    return [(str(f), load_rgb(f)) for f in files]


# The families a report measures, each drawn from its own seed so that adding one leaves the others as they were.
SYNTHETIC: dict[str, tuple[Callable[[np.random.Generator, int], list[Probe]], int]] = {
    "blank or near-constant": (blank, 30),
    "noise": (noise, 50),
    "gradients": (gradients, 30),
    "screenshots of text": (text_screens, 40),
    "colour scenes (photograph stand-ins)": (scenes, 50),
}


def families(seed: int = 0, extra_files: Iterable[str | Path] = ()) -> dict[str, list[Probe]]:
    """Every family of not-brain-MRI pictures this machine can offer, by name."""
    out = {}
    for offset, (name, (make, count)) in enumerate(SYNTHETIC.items()):
        out[name] = make(np.random.default_rng(seed + offset), count)
    out["grayscale scenes (photograph stand-ins)"] = grayscale(out["colour scenes (photograph stand-ins)"])
    other, mr = pydicom_test_files()
    out["DICOM, not MR (pydicom test files)"] = other
    out["DICOM, MR of other body parts or sizes (pydicom test files)"] = mr
    extra = image_files(extra_files)
    if extra:
        out["image files named for the report"] = extra
    return out
