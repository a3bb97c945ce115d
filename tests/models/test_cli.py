"""`python -m models`: one command line, a subcommand per tool, and a sentence instead of a traceback."""

import subprocess
import sys
from pathlib import Path

from models.cli import main
from settings import ROOT, SAMPLE_DIR


def test_the_command_lists_its_subcommands_when_given_none() -> None:
    out = subprocess.run([sys.executable, "-m", "models"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    for command in ("train", "export", "evaluate", "calibrate", "distill", "health", "ood", "pair-report"):
        assert command in out.stderr


def test_a_file_that_is_no_model_is_refused_in_a_sentence(tmp_path: Path, capsys) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    assert main(["evaluate", "--model", str(notes), "--data", str(SAMPLE_DIR), "--threads", "1"]) == 2
    assert capsys.readouterr().err == f"error: {notes}: not a model file (expected .pth or .keras)\n"


def test_train_without_its_folder_says_what_it_needs(capsys) -> None:
    try:
        main(["train", "--framework", "torch"])
    except SystemExit as stop:
        assert str(stop) == "--framework and --data are needed"
    else:
        raise AssertionError("train ran without a folder")
