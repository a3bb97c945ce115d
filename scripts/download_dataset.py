"""Fetch the public Brain Tumor MRI Dataset from Kaggle (needs internet and ~/.kaggle/kaggle.json).

python -m scripts.download_dataset [--dest data/full]     unpacks Training/ and Testing/ under --dest
"""

import argparse
import base64
import json
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

DATASET = "masoudnickparvar/brain-tumor-mri-dataset"
URL = f"https://www.kaggle.com/api/v1/datasets/download/{DATASET}"
CREDENTIALS = Path.home() / ".kaggle" / "kaggle.json"


def read_credentials(path: Path = CREDENTIALS) -> tuple[str, str]:
    if not path.is_file():
        raise SystemExit(
            f"No Kaggle API token at {path}. Create one on kaggle.com (Account → API → Create New Token) and "
            "save it there, or download the dataset by hand and point training at its Training/ folder."
        )
    data = json.loads(path.read_text())
    return data["username"], data["key"]


def extract(archive: Path, dest: Path) -> list[Path]:
    """Unpack the archive's class folders under dest, refusing entries that would land outside it."""
    dest = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            target = (dest / name).resolve()
            if not target.is_relative_to(dest):
                raise SystemExit(f"refusing archive entry {name!r}: it points outside {dest}")
        zf.extractall(dest)
    return sorted(p for p in dest.iterdir() if p.is_dir())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dest", default="data/full", help="where Training/ and Testing/ are unpacked")
    p.add_argument("--archive", help="use an already downloaded archive instead of fetching it")
    args = p.parse_args(argv)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    if args.archive:
        archive = Path(args.archive)
    else:
        user, key = read_credentials()
        token = base64.b64encode(f"{user}:{key}".encode()).decode()
        request = urllib.request.Request(URL, headers={"Authorization": f"Basic {token}"})
        archive = Path(tempfile.mkdtemp()) / "brain-tumor-mri-dataset.zip"
        print(f"downloading {DATASET} …", file=sys.stderr)
        with urllib.request.urlopen(request, timeout=60) as response, archive.open("wb") as fh:
            shutil.copyfileobj(response, fh)
    folders = extract(archive, dest)
    print("unpacked: " + ", ".join(str(f) for f in folders))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
