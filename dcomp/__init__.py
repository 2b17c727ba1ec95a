"""dcomp: a command-line image codec built on deep learning, with its own .dcz format."""
from dcomp.api import compress, decompress, info
from dcomp.errors import DcompError

__all__ = ["compress", "decompress", "info", "DcompError"]
__version__ = "0.1.0"
