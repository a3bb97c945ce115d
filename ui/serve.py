"""Start the app: `python -m ui.serve [streamlit options]` runs `streamlit run Home.py` with the server options the
settings decide, so that what the uploaders state is what the server holds files to."""

import os
import sys

from settings import ROOT, Settings, get_settings


def server_options(settings: Settings) -> list[str]:
    """Streamlit's options taken from the settings."""
    # One limit for the whole server: the largest file any page takes (a scan on Diagnose, a zip on Batch). Each
    # uploader states, and holds files to, its own.
    return ["--server.maxUploadSize", str(max(settings.max_upload_mb, settings.max_zip_mb))]


def main(argv: list[str]) -> None:
    os.chdir(ROOT)
    command = [sys.executable, "-m", "streamlit", "run", "Home.py", *server_options(get_settings()), *argv]
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main(sys.argv[1:])
