"""Thread caps for PyTorch and TensorFlow, so a few processes can share two cores without thrashing."""

import os
import sys


def cap_threads(torch_threads: int, tf_threads: int) -> None:
    """Cap both frameworks' thread pools, whether or not they have been imported yet.

    The environment variables cover a framework imported later in this process or in its children;
    a framework already imported is capped through its own API. Neither framework is imported here:
    TensorFlow alone takes seconds to import, too slow for a worker process's start-up hook.
    """
    os.environ["OMP_NUM_THREADS"] = str(torch_threads)
    os.environ["MKL_NUM_THREADS"] = str(torch_threads)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(tf_threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(tf_threads)
    if "torch" in sys.modules:
        _cap_torch(torch_threads)
    if "tensorflow" in sys.modules:
        _cap_tensorflow(tf_threads)


def _cap_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        # Only settable before the first inter-op parallel work; after that the pool is fixed.
        pass


def _cap_tensorflow(threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        # TensorFlow fixes its pools when its runtime starts; the environment variables set above
        # took effect then if they were set early enough.
        pass
