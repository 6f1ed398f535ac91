"""The kvcache package's numba cache, dropped when any of its sources changes."""

from __future__ import annotations

import hashlib
from pathlib import Path


def drop_stale_numba_cache(package: Path) -> bool:
    """Delete the package's numba cache if any of its sources changed; True if it did.

    numba keys a cached function on its own file only, and the policy wrappers inline the drivers
    of this file (and RWA inlines WA's hooks): after an edit here they would load stale machine code.
    A read-only install (where nothing is edited) is left alone.
    """
    digest = source_digest(package)
    cache = package / "__pycache__"
    stamp = cache / "numba-sources.sha1"
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass
    try:
        cache.mkdir(exist_ok=True)
        for f in [*cache.glob("*.nbi"), *cache.glob("*.nbc")]:
            f.unlink(missing_ok=True)
        stamp.write_text(digest)
    except OSError:
        return False
    return True


def source_digest(package: Path) -> str:
    """Hash of the package's sources: generated kernels carry it in their names (see ``_codegen``)."""
    return hashlib.sha1(b"".join(p.read_bytes() for p in sorted(package.glob("*.py")))).hexdigest()
