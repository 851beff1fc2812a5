"""The HTTP(S) source: the four IDX ``.gz`` files from a list of mirrors, each MD5-verified.

Holds the mirror list (the ``mirrors`` argument, else ``MINIGAN_MNIST_MIRROR`` /
``MINIGAN_FASHION_MNIST_MIRROR``, else the defaults), the size-capped GET, and the download of the four files,
which tries each mirror in turn and skips one that could not be reached for the remaining files.
"""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .base import (DEFAULT_MAX_IDX_BYTES, DEFAULT_MIRRORS, IDX_FILES, MAX_DOWNLOAD_BYTES, MIRROR_ENV, DataError,
                   Dataset, _md5)
from .idx import _read_idx_fileobj
from .idx_dir import _idx_arrays_to_dataset, _idx_bytes


def _mirror_list(name: str, mirrors: Sequence[str] | None) -> list[str]:
    if mirrors is None:
        env = os.environ.get(MIRROR_ENV[name], "").strip()
        mirrors = [m.strip() for m in env.split(",") if m.strip()] if env else DEFAULT_MIRRORS[name]
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def _http_get(url: str, timeout: float) -> bytes:
    if not url.lower().startswith(("http://", "https://")):
        raise DataError(f"{url}: only http(s) mirrors are supported")
    req = urllib.request.Request(url, headers={"User-Agent": "minigan"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > MAX_DOWNLOAD_BYTES:
            raise DataError(f"{url}: {length} bytes, larger than any dataset file")
        data = resp.read(MAX_DOWNLOAD_BYTES + 1)
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise DataError(f"{url}: larger than any dataset file")
    return data


def _download_idx(name: str, mirrors: list[str], checksums: Mapping[str, str],
                  timeout: float, log: Callable) -> Dataset:
    arrays, where = {}, {}
    dead: dict[str, str] = {}  # mirrors that failed at the connection level
    used = set()
    for base in IDX_FILES:
        fname = f"{base}.gz"
        errors = []
        for mirror in mirrors:
            url = mirror + fname
            if mirror in dead:
                continue
            try:
                blob = _http_get(url, timeout)
            except urllib.error.HTTPError as e:
                errors.append(f"{url}: HTTP {e.code}")
                continue
            except (urllib.error.URLError, OSError) as e:
                # Unreachable host: skip this mirror for the remaining files
                # so that an offline machine fails after one timeout per mirror.
                reason = getattr(e, "reason", e)
                dead[mirror] = f"{mirror}: unreachable ({reason})"
                errors.append(dead[mirror])
                continue
            except DataError as e:
                errors.append(str(e))
                continue
            got = _md5(blob)
            expected = checksums.get(fname)
            if got != expected:
                errors.append(f"{url}: md5 mismatch: got {got}, expected {expected}")
                continue
            try:
                arr = _read_idx_fileobj(io.BytesIO(blob), len(blob), url, DEFAULT_MAX_IDX_BYTES)
            except DataError as e:
                errors.append(str(e))
                continue
            content = checksums.get(base)
            if content is not None and _md5(_idx_bytes(arr, Path(url))) != content:
                errors.append(f"{url}: decompressed content md5 mismatch (expected {content})")
                continue
            arrays[base], where[base] = arr, url
            used.add(mirror)
            log(f"minigan.data: downloaded {url} ({len(blob)} bytes, md5 ok)")
            break
        else:
            raise DataError(f"could not download {fname}: " + "; ".join(errors or ["no mirrors"]))
    source = f"download from {', '.join(sorted(used))} (md5 verified)"
    return _idx_arrays_to_dataset(name, arrays, where, source)
