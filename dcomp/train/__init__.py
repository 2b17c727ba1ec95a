"""Training commands (they import torch; the codecs' decoders do not need it)."""
