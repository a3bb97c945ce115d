"""The DICOM listener: a C-STORE SCP (pynetdicom) that scanners and the PACS send MR series to.

    python -m worker.dicom_listener      (`make dicom-listener`; `make run` starts it beside the worker)

It answers C-ECHO, accepts MR Image Storage and Enhanced MR Image Storage in the transfer syntaxes the decode
path reads and refuses every other SOP class at association, so a CT series is never stored. With
DICOM_ALLOWED_AETS set, an association from any other calling AE title is rejected. Refusals are logged and
audited. Each instance is checked and staged by services/dicom_intake.py; a series that received nothing for
DICOM_SERIES_IDLE_S goes to the prediction queue as one job.
"""

import logging
import signal
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from domain import AuditAction
from services.auth import audit
from services.dicom_instances import ACCEPTED_SOP_CLASSES, TRANSFER_SYNTAXES, InstanceRefused
from services.dicom_intake import receive
from settings import Settings, get_settings
from worker.submit import queue_complete_series

log = logging.getLogger("brainmri.dicom_listener")

# C-STORE statuses (DICOM PS3.4 B.2.3): out of resources, the data set does not match the SOP class, cannot
# understand, and the processing failure pynetdicom reports for a handler that raised.
OUT_OF_RESOURCES = 0xA700
NOT_MATCHING = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
MAX_PDU = 64 * 1024
TIMEOUT_S = 30
MAX_ASSOCIATIONS = 10


@dataclass
class _Tally:
    """What one association stored and refused, audited when it ends."""

    stored: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    pending_bytes: int = 0  # received since the last instance was handled


class Listener:
    """The SCP and the pass that queues complete series; `start` returns once it listens, `stop` ends both."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._tallies: dict[int, _Tally] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self._idle_thread: threading.Thread | None = None

    def application_entity(self) -> AE:
        ae = AE(ae_title=self.settings.dicom_ae_title)
        ae.maximum_pdu_size = MAX_PDU
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
        ae.maximum_associations = MAX_ASSOCIATIONS
        if self.settings.dicom_allowed_aets:
            ae.require_calling_aet = list(self.settings.dicom_allowed_aets)
        ae.add_supported_context(Verification)
        for sop_class in ACCEPTED_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        return ae

    def start(self) -> None:
        host, port = self.settings.dicom_bind_address, self.settings.dicom_port
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_DATA_RECV, self._on_data),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
        ]
        self._server = self.application_entity().start_server((host, port), block=False, evt_handlers=handlers)
        self._idle_thread = threading.Thread(target=self._queue_idle, name="dicom-idle-series", daemon=True)
        self._idle_thread.start()
        log.info(
            "listening on %s:%s as %s (calling AE titles: %s)",
            host,
            port,
            self.settings.dicom_ae_title,
            ", ".join(self.settings.dicom_allowed_aets) or "any",
        )

    def request_stop(self) -> None:
        """Ask `wait` to return (safe in a signal handler)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._idle_thread is not None:
            self._idle_thread.join(timeout=10)

    def wait(self) -> None:
        self._stop.wait()

    def _queue_idle(self) -> None:
        # A quarter of the idle time between passes: a series is queued at most that late.
        every = max(0.2, min(2.0, self.settings.dicom_series_idle_s / 4))
        while not self._stop.wait(every):
            try:
                if queued := queue_complete_series():
                    log.info("series complete, queued for prediction: %s", queued)
            except Exception:
                log.exception("could not queue the complete series; trying again")

    def _tally(self, event: evt.Event) -> _Tally:
        with self._lock:
            return self._tallies.setdefault(id(event.assoc), _Tally())

    def _on_data(self, event: evt.Event) -> None:
        # pynetdicom gathers a whole instance in memory before the C-STORE handler sees it: an association that
        # sends more than an instance may hold is aborted on the way, before it can fill the memory.
        tally = self._tally(event)
        tally.pending_bytes += len(event.data)
        limit = self.settings.max_upload_mb * 2**20 + MAX_PDU
        if tally.pending_bytes > limit:
            why = f"it sent more than {self.settings.max_upload_mb} MB for one instance (MAX_UPLOAD_MB): aborted"
            tally.refused[why] += 1
            tally.pending_bytes = 0
            log.warning("association from %s: %s", event.assoc.requestor.ae_title, why)
            event.assoc.abort()

    def _on_store(self, event: evt.Event) -> int | tuple[int, str]:
        calling = event.assoc.requestor.ae_title
        tally = self._tally(event)
        tally.pending_bytes = 0
        try:
            got = receive(event.encoded_dataset(), source="dimse", sender=calling, settings=self.settings)
        except InstanceRefused as exc:
            tally.refused[str(exc)] += 1
            log.warning("refused an instance from %s: %s", calling, exc)
            return OUT_OF_RESOURCES if exc.out_of_resources else NOT_MATCHING
        except Exception:
            # Whatever went wrong with this instance, the listener goes on serving the next.
            log.exception("an instance from %s could not be stored", calling)
            tally.refused["it could not be stored (see the listener's log)"] += 1
            return PROCESSING_FAILURE
        tally.stored += 1
        log.debug("stored an instance of series %s from %s (%d new slice(s))", got.series_uid, calling, got.new_slices)
        return 0x0000

    def _on_rejected(self, event: evt.Event) -> None:
        calling, address = event.assoc.requestor.ae_title, event.assoc.requestor.address
        why = f"association from AE {calling!r} at {address} rejected: calling AE title not in DICOM_ALLOWED_AETS"
        log.warning(why)
        self._audit(why)

    def _on_established(self, event: evt.Event) -> None:
        assoc = event.assoc
        storage = [c for c in assoc.accepted_contexts if c.abstract_syntax in ACCEPTED_SOP_CLASSES]
        refused = sorted({UID(c.abstract_syntax).name for c in assoc.rejected_contexts})
        if refused and not storage:
            shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
            why = (
                f"association from AE {assoc.requestor.ae_title!r} at {assoc.requestor.address}: no proposed SOP "
                f"class is accepted ({shown}); only MR Image Storage and Enhanced MR Image Storage are"
            )
            log.warning(why)
            self._audit(why)

    def _on_end(self, event: evt.Event) -> None:
        with self._lock:
            tally = self._tallies.pop(id(event.assoc), None)
        if tally is None or not tally.refused:
            return
        reasons = "; ".join(f"{n} x {why}" for why, n in tally.refused.most_common(3))
        self._audit(
            f"from AE {event.assoc.requestor.ae_title!r}: {sum(tally.refused.values())} instance(s) refused "
            f"({reasons}), {tally.stored} stored"
        )

    def _audit(self, detail: str) -> None:
        try:
            audit(None, AuditAction.DICOM_REFUSED, target="DICOM listener", detail=detail[:2000])
        except Exception:
            log.exception("could not audit: %s", detail)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pynetdicom logs every PDU at INFO; its warnings are what an operator needs.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    listener = Listener()
    listener.start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: listener.request_stop())
    listener.wait()
    listener.stop()
    log.info("stopped")


if __name__ == "__main__":
    main()
