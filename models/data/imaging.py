"""Uploaded scans (JPEG, PNG, DICOM) checked and decoded into RGB arrays, and heatmap overlays for display."""

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.filebase import DicomBytesIO

# The reader's own steps, private in pydicom 3.0 (pinned): the deflate check must find the stream where it does.
from pydicom.filereader import _read_command_set_elements, _read_file_meta_info, read_preamble
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import DeflatedExplicitVRLittleEndian

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
# A deflated DICOM is inflated whole before anything in it can be read: one this large inflated is refused
# before reading (a 255 KB file can inflate to 800 MB). A multi-frame MR series stays far below it.
MAX_INFLATED_BYTES = 64 * 2**20
# Deflated bytes fed, and inflated bytes counted, per zlib call: the check holds one such slice at a time.
INFLATE_SLICE = 2**20
# Native pixel data may carry this much padding beyond what its header declares.
PIXEL_PADDING_BYTES = 1024
# A side this short is a line or a dot, not a slice a model can read.
MIN_SIDE = 2
# Huffman coding spends at least one bit per 8x8 block and scan (512 pixels a byte in a gray image's first
# scan); a JPEG declaring more pixels than this per byte of file has lost its image data (or is arithmetic-coded
# blank, which no scanner writes). libjpeg would pad the missing blocks with gray without an error, and decode a
# few KB into hundreds of MB of mostly invented pixels.
JPEG_MAX_PIXELS_PER_BYTE = 1024
# What a stored JPEG keeps besides the image data: JFIF (APP0), an ICC colour profile (APP2) and Adobe's colour
# transform (APP14). EXIF, XMP, comments and every other application segment may name a person: dropped.
ORIENTATION_TAG = 0x0112
JPEG_KEEP_APP = {0xE0, 0xE2, 0xEE}
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD9)}
# What a stored PNG keeps: the image and its colour interpretation; text, EXIF and time chunks are dropped.
PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs"}


# Images are analysed and shown from a copy at most this many pixels on its longer side. The networks see
# 224 x 224 and the pages a few hundred pixels, and a brain slice is rarely larger, so what a model or a person
# sees barely changes, while a 4096² upload keeps 3 MB of pixels and 4 MB per heatmap instead of 48 and 64 MB.
ANALYSIS_SIDE = 1024


class ImageError(ValueError):
    """A file that cannot be used as a scan; the message is shown to a person as-is."""


@dataclass
class DecodedImage:
    rgb: np.ndarray  # HxWx3 uint8
    stored_bytes: bytes  # the file we keep: the JPEG/PNG without its metadata, or a PNG of the pixels (DICOM)
    stored_suffix: str  # ".jpg" or ".png"
    sha256: str  # of stored_bytes
    width: int
    height: int
    image_format: str  # "JPEG", "PNG" or "DICOM"
    patient_mrn: str | None = None
    study_date: str | None = None
    modality: str | None = None
    series_description: str | None = None
    note: str | None = None
    # A grayscale DICOM's own pixel values after its rescale (at most ANALYSIS_SIDE a side) and its header's
    # first window (center, width): what window and level work on, where the RGB is already windowed.
    values: np.ndarray | None = None
    window: tuple[float, float] | None = None


def decode_image(data: bytes, filename: str, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Check and decode one uploaded file; raises ImageError with a message for the person who uploaded it."""
    if not data:
        raise ImageError(f"{filename}: the file is empty.")
    if len(data) > max_bytes:
        raise ImageError(
            f"{filename}: the file is {len(data) / 2**20:.1f} MB, over the limit of {max_bytes / 2**20:.0f} MB."
        )
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC:
        return _decode_dicom(data, filename, max_pixels=max_pixels)
    if data.startswith(JPEG_MAGIC) or data.startswith(PNG_MAGIC):
        return _decode_raster(data, filename, max_pixels=max_pixels)
    if filename.lower().endswith(".dcm"):
        # DICOM files written without the 128-byte preamble still exist in the wild.
        return _decode_dicom(data, filename, max_pixels=max_pixels)
    raise ImageError(f"{filename}: not a JPEG, PNG or DICOM image.")


def analysis_rgb(rgb: np.ndarray, side: int = ANALYSIS_SIDE) -> np.ndarray:
    """The image scaled down, its aspect kept, to fit within side x side; the image itself when it fits."""
    height, width = rgb.shape[:2]
    if max(height, width) <= side:
        return rgb
    scale = side / max(height, width)
    size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR), dtype=np.uint8)


def analysis_copy(decoded: DecodedImage) -> DecodedImage:
    """The decoded image with its pixels at analysis size (ANALYSIS_SIDE): what predictions, heatmaps and pages
    use. The stored file, its sha256 and the recorded width and height stay the file's."""
    rgb = analysis_rgb(decoded.rgb)
    return decoded if rgb is decoded.rgb else replace(decoded, rgb=rgb)


def _check_pixels(filename: str, height: int, width: int, frames: int, max_pixels: int) -> None:
    if height * width * frames > max_pixels:
        raise ImageError(
            f"{filename}: the image declares {width} x {height} pixels"
            + (f" in {frames} frames" if frames > 1 else "")
            + f", more than the limit of {max_pixels:,}; refused as a possible decompression bomb."
        )


def _check_2d(filename: str, height: int, width: int) -> None:
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"{filename}: the image is {width} x {height} pixels, not a 2-D slice.")


def _decode_raster(data: bytes, filename: str, *, max_pixels: int) -> DecodedImage:
    try:
        with Image.open(io.BytesIO(data)) as probe:
            kind = probe.format
            width, height = probe.size
            # The size comes from the header, so a bomb is refused before a single pixel is decompressed.
            _check_pixels(filename, height, width, 1, max_pixels)
            if kind in ("JPEG", "MPO") and width * height > JPEG_MAX_PIXELS_PER_BYTE * len(data):
                raise ImageError(
                    f"{filename}: the JPEG declares {width} x {height} pixels but holds only {len(data):,} bytes, "
                    "far too few to code them: its image data is missing or damaged."
                )
            probe.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rotated = img.getexif().get(ORIENTATION_TAG, 1) not in (1, None)
            img = ImageOps.exif_transpose(img)
            rgb = _pil_to_rgb(img)
    except ImageError:
        raise  # already in words (it is a ValueError too, which the clause below would re-wrap)
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"{filename}: the image declares more pixels than the limit of {max_pixels:,}; "
            "refused as a possible decompression bomb."
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{filename}: not a JPEG, PNG or DICOM image.") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt data as any of these, depending on the codec and where it broke.
        raise ImageError(f"{filename}: the image is truncated or damaged ({exc}).") from exc
    # Some cameras write JPEGs that Pillow names MPO (a JPEG with extra pictures appended).
    kind = "JPEG" if kind == "MPO" else kind
    if kind not in ("JPEG", "PNG"):
        raise ImageError(f"{filename}: not a JPEG, PNG or DICOM image.")
    _check_2d(filename, rgb.shape[0], rgb.shape[1])
    stripped = None if rotated else (_strip_jpeg(data) if kind == "JPEG" else _strip_png(data))
    if stripped is None:
        # A rotated or unusual file is stored as a PNG of the pixels the models saw: the same view, no metadata.
        return _decoded(rgb, _png_bytes(rgb), ".png", kind)
    return _decoded(rgb, stripped, ".jpg" if kind == "JPEG" else ".png", kind)


def _strip_jpeg(data: bytes) -> bytes | None:
    """The JPEG without metadata segments, losslessly (the coded image is copied byte for byte); None when
    its layout is one this does not follow (e.g. several pictures in one file)."""
    out, i = [data[:2]], 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in JPEG_STANDALONE:
            out.append(data[i : i + 2])
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        segment = data[i : i + 2 + length]
        if marker == 0xDA:  # start of scan: the coded image up to the end-of-image marker, nothing after it
            end = data.find(b"\xff\xd9", i + 2 + length)
            if end < 0:
                return None
            out.append(data[i : end + 2])
            return b"".join(out)
        payload = segment[4:]
        if marker == 0xE2 and payload.startswith(b"MPF\0"):
            return None  # a multi-picture file: its other pictures carry their own metadata
        application = marker == 0xFE or 0xE0 <= marker <= 0xEF  # comment or APPn: metadata unless kept
        kept = marker in JPEG_KEEP_APP and (marker != 0xE2 or payload.startswith(b"ICC_PROFILE\0"))
        if not application or kept:
            out.append(segment)
        i += 2 + length
    return None


def _strip_png(data: bytes) -> bytes | None:
    """The PNG with only the chunks that describe its pixels; None when its chunks don't parse."""
    out, i = [PNG_MAGIC], len(PNG_MAGIC)
    while i + 12 <= len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        chunk = data[i : i + 12 + length]
        if kind in PNG_KEEP:
            out.append(chunk)
        if kind == b"IEND":
            return b"".join(out)
        i += 12 + length
    return None


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode as HxWx3 uint8; transparent areas become black, deep grayscale is stretched."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return _gray_to_rgb(_stretch(np.asarray(img, dtype=np.float64)))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def deflated_stream(data: bytes) -> memoryview | None:
    """The deflated dataset of a file whose File Meta names Deflated Explicit VR Little Endian, found exactly where
    pydicom's reader will inflate it from (preamble, meta group element by element, any command set); None for any
    other transfer syntax. The meta group's own length and the byte offsets are never trusted: the reader ignores
    them too, so a file that lies in them would otherwise be inflated unchecked."""
    fp = DicomBytesIO(data)
    read_preamble(fp, True)
    meta = _read_file_meta_info(fp)
    _read_command_set_elements(fp)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return None
    return memoryview(data)[fp.tell() :]


def _inflated_size_within(stream: bytes | memoryview, limit: int) -> bool:
    """Whether a raw deflate stream inflates to at most `limit` bytes, counted a slice at a time without keeping it.
    Counting stops at the end of the stream: bytes after it (pydicom pads the stream to an even length) are not
    deflate data, and zlib keeps handing them back as unconsumed input."""
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    for offset in range(0, len(stream), INFLATE_SLICE):
        pending = stream[offset : offset + INFLATE_SLICE]
        while pending and not inflater.eof:
            total += len(inflater.decompress(pending, INFLATE_SLICE))
            if total > limit:
                return False
            pending = inflater.unconsumed_tail
        if inflater.eof:
            break
    return True


def _check_deflated(data: bytes, filename: str) -> None:
    """Refuse, before pydicom inflates it whole, a deflated DICOM that inflates past MAX_INFLATED_BYTES or whose
    deflate stream is damaged."""
    try:
        stream = deflated_stream(data)
    except Exception as exc:  # pydicom raises many types on a malformed preamble or meta group
        raise ImageError(f"{filename}: the file is not a readable DICOM file ({str(exc)[:120]}).") from exc
    if stream is None:
        return
    try:
        within = _inflated_size_within(stream, MAX_INFLATED_BYTES)
    except zlib.error as exc:
        raise ImageError(f"{filename}: the DICOM file is deflated and its compressed data is damaged ({exc}).") from exc
    if not within:
        raise ImageError(
            f"{filename}: the DICOM file is deflated and inflates to more than {MAX_INFLATED_BYTES // 2**20} MB; "
            "refused as a possible decompression bomb."
        )


def _is_decoder_panic(exc: BaseException) -> bool:
    """Whether `exc` is a Rust decoder's panic: pylibjpeg-rle panics on some damaged RLE data, and pyo3 raises
    that as pyo3_runtime.PanicException, a BaseException (so `except Exception` misses it) with no importable name."""
    return type(exc).__name__ == "PanicException"


def _pixel_error(filename: str, ds: pydicom.Dataset, exc: BaseException) -> ImageError:
    """Why the pixel data could not be decoded, in words for the person who uploaded the file."""
    text = str(exc)
    syntax = getattr(ds, "file_meta", pydicom.Dataset()).get("TransferSyntaxUID")
    name = getattr(syntax, "name", None) or "an unknown encoding"
    if "less than expected" in text or "truncat" in text.lower():
        why = "the file is cut short: its pixel data is shorter than its header declares"
    elif "missing" in text and "dependenc" in text:
        why = f"no decoder for its compression ({name}) is installed here"
    elif syntax is not None and syntax.is_compressed:
        why = f"its compressed pixel data ({name}) is damaged: every decoder for it failed on this file"
    else:
        why = f"its pixel data does not match what its header declares ({text.splitlines()[0][:120]})"
    return ImageError(f"{filename}: the DICOM image could not be decoded: {why}.")


def _decode_dicom(data: bytes, filename: str, *, max_pixels: int) -> DecodedImage:
    _check_deflated(data, filename)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        # pydicom converts an element's value when it is first used: convert all now, so that a malformed one
        # (e.g. an unknown VR) is refused here rather than raising wherever it is first read.
        list(getattr(ds, "file_meta", ()))
        list(ds)
    except Exception as exc:  # pydicom raises many types (InvalidDicomError, struct.error, ...) on bad headers
        raise ImageError(f"{filename}: the file is not a readable DICOM file ({str(exc)[:120]}).") from exc
    # An empty element reads as None: no image either.
    if not ds.get("PixelData"):
        raise ImageError(f"{filename}: the DICOM file holds no image (it has no pixel data): not a scan.")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bytes_per_sample = (int(ds.get("BitsAllocated") or 8) + 7) // 8
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageError(
            f"{filename}: the DICOM header does not say the image size (Rows and Columns are missing or "
            "malformed), so its pixels cannot be read."
        ) from exc
    frames = max(frames, 1)
    _check_pixels(filename, rows, cols, frames, max_pixels)
    _check_2d(filename, rows, cols)
    syntax = getattr(ds, "file_meta", pydicom.Dataset()).get("TransferSyntaxUID")
    if syntax is not None and not getattr(syntax, "is_transfer_syntax", False):
        # Nothing says how its pixels are encoded (and pydicom's UID checks raise on such a value).
        raise ImageError(
            f"{filename}: the DICOM file names its encoding '{str(syntax)[:64]}', which is not a DICOM "
            "transfer syntax, so its pixels cannot be read."
        )
    declared = rows * cols * frames * samples * bytes_per_sample
    if (syntax is None or not syntax.is_compressed) and len(ds.PixelData) > declared + PIXEL_PADDING_BYTES:
        raise ImageError(
            f"{filename}: the DICOM pixel data holds {len(ds.PixelData):,} bytes, more than the {declared:,} its "
            "header declares; refused rather than guessing which part is the image."
        )
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for bad, short or undecodable pixel data
        raise _pixel_error(filename, ds, exc) from exc
    except BaseException as exc:
        if not _is_decoder_panic(exc):
            raise
        raise _pixel_error(filename, ds, exc) from exc
    planes = pixels.ndim - (1 if samples == 3 else 0)
    if (frames > 1 and (planes != 3 or pixels.shape[0] != frames)) or (frames == 1 and planes != 2):
        raise ImageError(
            f"{filename}: the DICOM pixel data holds frames its header does not declare ({frames} declared); "
            "refused rather than guessing which one is the slice."
        )

    note = None
    if frames > 1:
        middle = frames // 2
        pixels = pixels[middle]
        note = f"middle frame {middle + 1} of {frames}"
    color = samples == 3 or photometric == "PALETTE COLOR"
    expected_ndim = 3 if samples == 3 else 2
    if pixels.ndim != expected_ndim or min(pixels.shape[:2]) < MIN_SIDE:
        raise ImageError(f"{filename}: the DICOM pixel data has shape {pixels.shape}, not a 2-D slice.")

    try:
        if color:
            rgb, window_note = _dicom_color(pixels, ds, photometric), None
        else:
            values = apply_modality_lut(pixels, ds)
            gray, window_note = _dicom_gray(values, ds)
            if photometric == "MONOCHROME1":
                # MONOCHROME1 means low values are bright: invert so every image reads the same way.
                gray = 255 - gray
            rgb = _gray_to_rgb(gray)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, NotImplementedError) as exc:
        # pydicom's LUT functions check the palette and rescale fields only when they apply them.
        raise ImageError(
            f"{filename}: the DICOM header's palette or rescale fields cannot be applied to its pixels "
            f"({str(exc)[:120]})."
        ) from exc
    note = "; ".join(n for n in (note, window_note) if n) or None

    stored = _png_bytes(rgb if color else rgb[..., 0])
    decoded = _decoded(rgb, stored, ".png", "DICOM")
    # Whole, not cut to 64 characters: a longer id breaks the rule and is refused in words, not shortened.
    decoded.patient_mrn = header_value(ds, "PatientID") or None
    decoded.study_date = header_study_date(ds)
    decoded.modality = _header_text(ds, "Modality", 16)
    decoded.series_description = _header_text(ds, "SeriesDescription", 256)
    decoded.note = note
    if not color:
        decoded.values, decoded.window = _analysis_values(values), _header_window(ds)
    return decoded


def _analysis_values(values: np.ndarray) -> np.ndarray:
    """Pixel values as float32, scaled down (aspect kept) to fit ANALYSIS_SIDE like the analysed RGB."""
    height, width = values.shape[:2]
    out = np.asarray(values, dtype=np.float32)
    if max(height, width) <= ANALYSIS_SIDE:
        return out
    scale = ANALYSIS_SIDE / max(height, width)
    size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
    return np.asarray(Image.fromarray(out).resize(size, Image.BILINEAR), dtype=np.float32)


def _header_window(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """The header's first window (center, width), or None when it has none that reads as numbers."""
    try:
        center, width = (ds.get(keyword) for keyword in ("WindowCenter", "WindowWidth"))
        center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (center, width) if width > 0 and np.isfinite([center, width]).all() else None


def _dicom_gray(values: np.ndarray, ds: pydicom.Dataset) -> tuple[np.ndarray, str | None]:
    """VOI LUT/window over the rescaled values, mapped to uint8 over the window's output range."""
    if ds.get("VOILUTSequence"):
        # A VOI LUT indexes by integer stored values; the rescale may have produced floats. A rescale far beyond
        # any LUT's range saturates here instead of wrapping around in the cast to int64.
        values = np.rint(np.clip(values, -(2.0**62), 2.0**62)).astype(np.int64)
    try:
        windowed = apply_voi_lut(values, ds)
        if windowed is values:
            return _stretch(values.astype(np.float64)), None
        low, high = _voi_output_range(ds)
    except (ValueError, NotImplementedError, AttributeError, IndexError, TypeError, struct.error) as exc:
        # struct.error: LUT data shorter than its descriptor says.
        return _stretch(values.astype(np.float64)), f"window in the header ignored ({exc})"
    return _stretch(windowed.astype(np.float64), low, high), None


def _voi_output_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The lowest and highest value the dataset's VOI LUT or window can produce."""
    if ds.get("VOILUTSequence"):
        entries, first, _bits = (int(v) for v in ds.VOILUTSequence[0].LUTDescriptor)
        probe = np.arange(first, first + (entries or 2**16), dtype=np.int64)
    else:
        # Values far outside any window land on the window's floor and ceiling.
        probe = np.array([-1e12, 1e12])
    out = apply_voi_lut(probe, ds)
    return float(out.min()), float(out.max())


def _dicom_color(pixels: np.ndarray, ds: pydicom.Dataset, photometric: str) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    bits = 16 if photometric == "PALETTE COLOR" else int(ds.get("BitsStored") or 16)
    return _stretch(pixels.astype(np.float64), 0.0, float(2**bits - 1))


def _stretch(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Map [low, high] (the data's own range by default) linearly onto 0..255."""
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _header_text(ds: pydicom.Dataset, keyword: str, max_len: int) -> str | None:
    value = header_value(ds, keyword)
    return value[:max_len] or None


def header_value(ds: pydicom.Dataset, keyword: str) -> str:
    """A header field as its text; a field of several values keeps DICOM's backslash between them (pydicom's
    list would otherwise read as "['A', 'B']"), so a rule on the text sees what the file holds."""
    value = ds.get(keyword, "") or ""
    if isinstance(value, MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()


def header_study_date(ds: pydicom.Dataset) -> str | None:
    """StudyDate as YYYY-MM-DD when it is a proper DICOM date, else as written."""
    raw = _header_text(ds, "StudyDate", 16)
    if raw and len(raw) == 8 and raw.isdigit():
        return f"{raw[:4]}-{raw[4:6]}-{raw[6:]}"
    return raw


def _decoded(rgb: np.ndarray, stored: bytes, suffix: str, image_format: str) -> DecodedImage:
    return DecodedImage(
        rgb=rgb,
        stored_bytes=stored,
        stored_suffix=suffix,
        sha256=hashlib.sha256(stored).hexdigest(),
        width=int(rgb.shape[1]),
        height=int(rgb.shape[0]),
        image_format=image_format,
    )


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as HxWx3 uint8 colours running blue, cyan, yellow, red."""
    v = np.clip(values.astype(np.float32), 0.0, 1.0)[..., None]
    channels = np.concatenate([1.5 - np.abs(4 * v - 3), 1.5 - np.abs(4 * v - 2), 1.5 - np.abs(4 * v - 1)], axis=-1)
    return (np.clip(channels, 0.0, 1.0) * 255).astype(np.uint8)


def make_overlay(rgb: np.ndarray, heatmap: np.ndarray, opacity: float) -> np.ndarray:
    """The heatmap, coloured, blended over the image at `opacity` (0: image only, 1: heatmap only)."""
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {heatmap.shape}")
    height, width = rgb.shape[:2]
    if heatmap.shape != (height, width):
        # Nearest-neighbour resampling: the heatmap is coarse anyway and this keeps it pure numpy.
        rows = np.arange(height) * heatmap.shape[0] // height
        cols = np.arange(width) * heatmap.shape[1] // width
        heatmap = heatmap[rows[:, None], cols[None, :]]
    alpha = float(np.clip(opacity, 0.0, 1.0))
    blended = rgb.astype(np.float32) * (1 - alpha) + jet_colormap(heatmap).astype(np.float32) * alpha
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
