"""A DICOMweb server that is down or busy is told to the clinician after one more try, not after the client
library's five tries with waits doubling from 2 s."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.dicomweb import PacsUnavailable, search_studies
from tests.env import environment
from tests.users import make_actor


class Busy(BaseHTTPRequestHandler):
    requests_seen = 0

    def do_GET(self) -> None:
        type(self).requests_seen += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_busy_server_is_asked_twice_and_then_said_to_be_unavailable(db_url: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/dicom-web"
        with environment(DICOMWEB_URL=url), pytest.raises(PacsUnavailable, match="503"):
            search_studies(make_actor("clinician"), patient_id="P-1")
    finally:
        server.shutdown()
    assert Busy.requests_seen == 2
