"""What decoding an upload in the sandbox costs against decoding it in the app's own process.

    .venv/bin/python -m scripts.bench_decode      (make bench runs it too)

Each of the 80 sample JPEGs, and a 512 x 512 MR DICOM, is decoded to analysis size both ways, the two calls in
turn: in this process (models/data/imaging.py, as before the sandbox) and in a warm child of the sandbox
(models/data/sandbox.py, with the settings' limits), which adds the pipe both ways and the child's checks. Also
recorded: how long a cold child takes to be ready, and each warm child's resident memory.
"""

import io
import statistics
import time
from pathlib import Path

import numpy as np

from models.data.imaging import analysis_copy, decode_image
from models.data.sandbox import DecodeSandbox, Limits
from settings import SAMPLE_DIR, get_settings

ROUNDS = 3


def _mr_dicom() -> bytes:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("bench.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.Rows, ds.Columns = MRImageStorage, generate_uid(), "MR", 512, 512
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    yy, xx = np.mgrid[0:512, 0:512]
    ds.PixelData = ((np.hypot(yy - 256, xx - 256) < 200) * 3000 + (xx * 7) % 900).astype("<u2").tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure() -> dict[str, float]:
    settings = get_settings()
    limits = Limits(settings.decode_cpu_s, settings.decode_memory_mb, settings.decode_timeout_s)
    files = [(p.name, p.read_bytes()) for p in sorted(SAMPLE_DIR.rglob("*.jpg"))]
    dicom = [("bench.dcm", _mr_dicom())]
    bounds = {"max_bytes": settings.max_upload_mb * 2**20, "max_pixels": settings.max_image_pixels}
    started = time.perf_counter()
    sandbox = DecodeSandbox(limits, processes=1)
    sandbox.decode(files[0][1], files[0][0], **bounds)
    cold_s = time.perf_counter() - started
    times: dict[str, list[float]] = {"jpeg here": [], "jpeg sandbox": [], "dicom here": [], "dicom sandbox": []}
    try:
        for _ in range(ROUNDS):
            for kind, batch in (("jpeg", files), ("dicom", dicom * 20)):
                for name, data in batch:
                    for where in ("here", "sandbox"):
                        t = time.perf_counter()
                        if where == "here":
                            analysis_copy(decode_image(data, name, **bounds))
                        else:
                            sandbox.decode(data, name, **bounds)
                        times[f"{kind} {where}"].append((time.perf_counter() - t) * 1000)
        [child] = list(sandbox._idle.queue)
        rss = _rss_mb(child.process.pid)
    finally:
        sandbox.close()
    return {
        **{f"{key} p50 ms": statistics.median(values) for key, values in times.items()},
        "cold child s": cold_s,
        "child RSS MB": rss,
    }


def markdown(result: dict[str, float]) -> list[str]:
    return [
        "| file | in the process, p50 ms | in the sandbox, p50 ms | a cold child ready, s | a warm child's RSS, MB |",
        "|---|---|---|---|---|",
        f"| sample JPEG (224 x 224) | {result['jpeg here p50 ms']:.1f} | {result['jpeg sandbox p50 ms']:.1f} | "
        f"{result['cold child s']:.1f} | {result['child RSS MB']:.0f} |",
        f"| MR DICOM (512 x 512, 16-bit) | {result['dicom here p50 ms']:.1f} | {result['dicom sandbox p50 ms']:.1f} | | |",
    ]


if __name__ == "__main__":
    print("\n".join(markdown(measure())))
