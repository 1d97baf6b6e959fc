"""Code versions of the trainables: a digest of the source files that decide what a trainable
computes. A trained artifact reused across runs (an autoencoder found by its cache key) is
only reused when the code that would train it again is the same."""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# Everything the autoencoder's weights depend on: its loop, the model, the data path, splits
# and corruption, the shared training and checkpoint machinery, the seed streams and the
# config defaults.
AUTOENCODER_SOURCES = ("autoencoder.py", "models.py", "data.py", "splits.py", "transforms.py", "common.py",
                       "checkpoint.py", "seeds.py", "config.py")


@functools.lru_cache(maxsize=None)
def source_digest(files: tuple[str, ...]) -> str:
    """sha256 (16 hex digits) over the named files of this package, in order."""
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (_HERE / name).read_bytes())
    return digest.hexdigest()[:16]


def autoencoder_code_version() -> str:
    return source_digest(AUTOENCODER_SOURCES)
