"""dcomp: a command-line image codec built on deep learning, with its own .dcz format."""
import os

# The codecs run many small matrix products; OpenBLAS threads spinning against another busy
# process cost 10x more than they gain (measured), so one thread unless the user says otherwise.
# Must precede the first numpy import to take effect.
if "OPENBLAS_NUM_THREADS" not in os.environ:
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ["DCOMP_BLAS_DEFAULTED"] = "1"  # ours, not the user's: dcomp.blas may change it

from dcomp.api import compress, decompress, info  # noqa: E402
from dcomp.errors import DcompError  # noqa: E402

__all__ = ["compress", "decompress", "info", "DcompError"]
__version__ = "0.1.0"
