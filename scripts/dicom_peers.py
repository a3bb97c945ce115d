"""Real hospital imaging parts for the tests and the benchmark: Debian's Orthanc (with its DICOMweb plugin) as the
PACS, the system's own DICOM listener as a process, and DCMTK's storescu/echoscu as an independent sender."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.harness import free_port
from settings import ROOT

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DCMTK = ("storescu", "echoscu")
DCIODVFY = "dciodvfy"


@dataclass
class Orthanc:
    """An Orthanc server of the test's own, on free ports, with a throw-away storage folder."""

    folder: Path
    aet: str = "ORTHANC"
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def destination(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def start(self) -> "Orthanc":
        for part in (ORTHANC, DICOMWEB_PLUGIN):
            if not Path(part).is_file():
                raise FileNotFoundError(f"{part} is not installed (Debian's orthanc and orthanc-dicomweb)")
        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": f"test-{self.aet}",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "SaveJobs": False,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config))
        log = (self.folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: {self.log()[-2000:]}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"Orthanc did not answer within 30 s: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def log(self) -> str:
        path = self.folder / "orthanc.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            body = response.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def instances_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance Orthanc holds of the study, with its tags (Orthanc's own REST API)."""
        found = self.post("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})
        out = []
        for study in found:
            for instance in self.get(f"/studies/{study}/instances"):
                out.append({**instance, "file": self.get(f"/instances/{instance['ID']}/file")})
        return out

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


@dataclass
class ListenerProcess:
    """`python -m worker.dicom_listener` running in a process of its own."""

    process: subprocess.Popen[bytes]
    port: int
    aet: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_listener(
    folder: Path, env: dict[str, str] | None = None, *, aet: str = "BRAINMRI", echo_as: str = "ECHOSCU"
) -> ListenerProcess:
    port = free_port()
    log_path = folder / f"listener-{port}.log"
    environment = {**os.environ, **(env or {}), "DICOM_PORT": str(port), "DICOM_AE_TITLE": aet}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.dicom_listener"],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    listener = ListenerProcess(process, port, aet, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not listener.alive():
            raise RuntimeError(f"the listener exited with {process.returncode}:\n{listener.log()}")
        if echo(port, aet, calling=echo_as).returncode == 0:
            return listener
        time.sleep(0.2)
    listener.stop()
    raise RuntimeError(f"the listener did not answer C-ECHO within 60 s:\n{listener.log()}")


def echo(port: int, called: str, *, calling: str = "ECHOSCU") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["echoscu", "-aet", calling, "-aec", called, "-to", "5", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def storescu(
    port: int,
    called: str,
    files: Sequence[Path],
    *,
    calling: str = "STORESCU",
    required_only: bool = False,
    options: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """DCMTK's storescu sending `files` in one association, going on after a refused one (-nh) and saying what
    each got (-v); `required_only` (-R) proposes only the SOP classes of the files, as a modality sending one
    series does; `options` e.g. ["-xr"] to propose RLE."""
    chosen = ["-nh", "-v", *(["-R"] if required_only else []), *options]
    return subprocess.run(
        ["storescu", *chosen, "-aet", calling, "-aec", called, "-to", "30", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines dicom3tools' dciodvfy reports as errors for a DICOM file (warnings are not errors)."""
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
