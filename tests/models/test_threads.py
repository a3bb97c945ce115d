"""cap_threads limits both frameworks, whether they are imported before or after the call."""

import subprocess
import sys

import pytest

from settings import ROOT

# Each case runs in its own interpreter: thread pools are per process and can be set only once.
CAP_THEN_IMPORT = """
from models.inference.threads import cap_threads
cap_threads(1, 1)
import torch
print(torch.get_num_threads())
"""
IMPORT_THEN_CAP = """
import tensorflow as tf
import torch
from models.inference.threads import cap_threads
cap_threads(1, 1)
print(torch.get_num_threads(), torch.get_num_interop_threads(),
      tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
"""


def _run(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.slow
def test_framework_imported_after_the_cap_uses_one_thread():
    assert _run(CAP_THEN_IMPORT) == ["1"]


@pytest.mark.slow
def test_frameworks_imported_before_the_cap_are_capped_too():
    assert _run(IMPORT_THEN_CAP) == ["1", "1", "1", "1"]
