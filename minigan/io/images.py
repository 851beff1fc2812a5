"""Image grids and PNG: an 8-bit grayscale/RGB encoder (atomic writes) and a strict decoder, NumPy and zlib only."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from .atomic import _atomic_write

__all__ = ["image_grid", "write_png", "read_png"]


# --------------------------------------------------------------------------
# image grids
# --------------------------------------------------------------------------


def _to_uint8(x) -> np.ndarray:
    """Map floats in [0, 1] to uint8: NaN -> 0, clip, scale, round half-even."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def image_grid(images, rows: int, cols: int, shape=(28, 28), pad: int = 2, pad_value: float = 0.0) -> np.ndarray:
    """Tile images into one grayscale uint8 picture.

    Parameters
    ----------
    images : array_like
        ``(rows*cols, H*W)`` flat images (reshaped with *shape*) or
        ``(rows*cols, H, W)`` images or ``(rows*cols, H, W, 3)`` RGB images
        (*shape* is then ignored).  Values are
        intensities in [0, 1]; they are clipped, NaN becomes 0, and the result
        is rounded to the nearest of 256 levels.
    rows, cols : int
        Grid size.  Image ``i`` goes to row ``i // cols``, column ``i % cols``.
    shape : tuple of int, optional
        ``(H, W)`` of one image for flat input.  Default ``(28, 28)``.
    pad : int, optional
        Pixels of padding around and between images.  Default 2.
    pad_value : float, optional
        Intensity in [0, 1] of the padding.  Default 0 (black).

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(pad + rows*(H+pad), pad + cols*(W+pad))`` (and ``3`` for RGB);
        image ``(r, c)`` has its top-left pixel at
        ``(pad + r*(H+pad), pad + c*(W+pad))``.

    Raises
    ------
    ValueError
        If the grid size, padding or image shapes are inconsistent.
    """
    for name, v in (("rows", rows), ("cols", cols)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"image_grid: {name} must be a positive integer, got {v!r}")
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"image_grid: pad must be a non-negative integer, got {pad!r}")
    images = np.asarray(images)
    if images.dtype.kind not in "biuf":
        raise ValueError(f"image_grid: images must be numeric, got dtype {images.dtype}")
    n = rows * cols
    if images.ndim == 2:
        try:
            h, w = (int(s) for s in shape)
        except (TypeError, ValueError):
            raise ValueError(f"image_grid: shape must be (H, W), got {shape!r}") from None
        if h < 1 or w < 1:
            raise ValueError(f"image_grid: shape must be positive, got {shape!r}")
        if images.shape[1] != h * w:
            raise ValueError(
                f"image_grid: images have {images.shape[1]} pixels each but shape {tuple(shape)} needs {h * w}"
            )
        images = images.reshape(images.shape[0], h, w)
    elif images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3):
        h, w = images.shape[1:3]
        if h < 1 or w < 1:
            raise ValueError(f"image_grid: images must be non-empty, got shape {images.shape}")
    else:
        raise ValueError(f"image_grid: images must be (N, H*W), (N, H, W) or (N, H, W, 3), got shape {images.shape}")
    if images.shape[0] != n:
        raise ValueError(f"image_grid: {rows}x{cols} grid needs {n} images, got {images.shape[0]}")

    pixels = _to_uint8(images)
    colour = images.shape[3:]  # () or (3,)
    grid = np.full((pad + rows * (h + pad), pad + cols * (w + pad)) + colour, _to_uint8(pad_value), dtype=np.uint8)
    # Write all tiles at once through a strided view of the grid: view[r, c]
    # is the tile slot of image r*cols + c.
    body = grid[pad:, pad:].reshape((rows, h + pad, cols, w + pad) + colour)
    body[:, :h, :, :w] = pixels.reshape((rows, cols, h, w) + colour).swapaxes(1, 2)
    return grid


# --------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _paeth_predictor(a, b, c):
    """Vectorised Paeth predictor on int16 arrays (PNG spec, section 9.4)."""
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter_rows(raw: np.ndarray, bpp: int) -> np.ndarray:
    """All five PNG filters of every row: shape (5, H, rowbytes), uint8.

    Filtering uses only unfiltered bytes, so it vectorises over the image.
    """
    x = raw.astype(np.int16)
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    b = np.zeros_like(x)
    b[1:] = x[:-1]
    c = np.zeros_like(x)
    c[1:, bpp:] = x[:-1, :-bpp]
    out = np.stack([x, x - a, x - b, x - (a + b) // 2, x - _paeth_predictor(a, b, c)])
    return (out & 0xFF).astype(np.uint8)


def _encode_png(image: np.ndarray, filter_type=None) -> bytes:
    """Encode a validated uint8 (H, W) or (H, W, 3) image as PNG bytes.

    Parameters
    ----------
    filter_type : None, int or sequence of int
        None picks per row among None/Sub/Up by the usual minimum-sum-of-
        absolute-differences heuristic (these three also decode quickly);
        an int forces one filter (0-4) for every row; a sequence gives one
        filter per row (used by the tests to exercise the decoder).
    """
    h, w = image.shape[:2]
    channels = 1 if image.ndim == 2 else 3
    raw = np.ascontiguousarray(image).reshape(h, w * channels)
    filtered = _filter_rows(raw, channels)
    if filter_type is None:
        cost = np.abs(filtered[:3].view(np.int8).astype(np.int64)).sum(axis=2)
        choice = np.argmin(cost, axis=0)
    else:
        choice = np.broadcast_to(np.asarray(filter_type, dtype=np.int64), (h,))
        if np.any((choice < 0) | (choice > 4)):
            raise ValueError(f"PNG filter types are 0-4, got {filter_type!r}")
    rows = filtered[choice, np.arange(h)]
    scan = np.concatenate([choice.astype(np.uint8)[:, None], rows], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return b"".join(
        [
            _PNG_SIGNATURE,
            _chunk(b"IHDR", ihdr),
            _chunk(b"IDAT", zlib.compress(scan.tobytes(), 6)),
            _chunk(b"IEND", b""),
        ]
    )


def _validate_png_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"write_png: image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"write_png: image must be (H, W) or (H, W, 3), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1 or max(image.shape[:2]) > 2**31 - 1:
        raise ValueError(f"write_png: invalid image size {image.shape[:2]}")
    return image


def write_png(path, image: np.ndarray) -> None:
    """Write an 8-bit grayscale or RGB PNG, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; replaced atomically (temp file + ``os.replace``), so a
        reader never sees a half-written image.
    image : numpy.ndarray
        ``uint8`` array, ``(H, W)`` grayscale (``(H, W, 1)`` accepted) or
        ``(H, W, 3)`` RGB.

    Raises
    ------
    ValueError
        If *image* has the wrong dtype or shape.
    OSError
        If the file cannot be written (the old file, if any, is untouched).
    """
    data = _encode_png(_validate_png_image(image))
    _atomic_write(os.fspath(path), lambda f: f.write(data), prefix=".png-")


def _unfilter(data: bytes, h: int, rowbytes: int, bpp: int, path) -> np.ndarray:
    """Undo PNG filtering; returns (h, rowbytes) uint8."""
    scan = np.frombuffer(data, dtype=np.uint8).reshape(h, rowbytes + 1)
    ftypes = scan[:, 0]
    if np.any(ftypes > 4):
        bad = int(np.flatnonzero(ftypes > 4)[0])
        raise ValueError(f"read_png: {path}: invalid filter type {ftypes[bad]} on row {bad}")
    out = np.empty((h, rowbytes), dtype=np.uint8)
    prev = np.zeros(rowbytes, dtype=np.uint8)
    for y in range(h):
        line = scan[y, 1:]
        ft = ftypes[y]
        if ft == 0:
            cur = line
        elif ft == 1:
            # Sub: running sum per channel, mod 256 (uint8 cumsum wraps).
            padded = np.zeros(-(-rowbytes // bpp) * bpp, dtype=np.uint8)
            padded[:rowbytes] = line
            cur = np.cumsum(padded.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)[:rowbytes]
        elif ft == 2:
            cur = line + prev  # uint8 arithmetic wraps mod 256
        else:
            # Average and Paeth depend on the reconstructed left neighbour,
            # so they are sequential; plain Python ints are fastest here.
            src, up = line.tolist(), prev.tolist()
            res = [0] * rowbytes
            if ft == 3:
                for i in range(rowbytes):
                    left = res[i - bpp] if i >= bpp else 0
                    res[i] = (src[i] + ((left + up[i]) >> 1)) & 0xFF
            else:
                for i in range(rowbytes):
                    if i >= bpp:
                        a, c = res[i - bpp], up[i - bpp]
                    else:
                        a = c = 0
                    b = up[i]
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                    res[i] = (src[i] + pred) & 0xFF
            cur = np.array(res, dtype=np.uint8)
        out[y] = cur
        prev = out[y]
    return out


_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (8-bit, no palette)


def read_png(path) -> np.ndarray:
    """Decode an 8-bit, non-interlaced grayscale or RGB PNG, with or without an alpha channel.

    Parameters
    ----------
    path : str or os.PathLike
        PNG file.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array: ``(H, W)`` for grayscale, ``(H, W, 2)`` for grayscale + alpha, ``(H, W, 3)`` for
        RGB and ``(H, W, 4)`` for RGBA (what matplotlib writes, e.g. a run's ``losses.png``).

    Raises
    ------
    ValueError
        On a bad signature, bad chunk CRC, truncated data, invalid or
        unsupported IHDR (bit depth other than 8, palette colour type,
        interlacing), unknown critical chunks or malformed image data.
    OSError
        If the file cannot be read.

    Notes
    -----
    All five filter types are supported.  Ancillary chunks are skipped.  The
    expected decompressed size is checked against deflate's maximum ratio
    before inflating, so a tiny file cannot claim a gigantic image.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        blob = f.read()

    def bad(problem):
        return ValueError(f"read_png: {path}: {problem}")

    if blob[:8] != _PNG_SIGNATURE:
        raise bad("not a PNG file (bad signature)")
    pos = 8
    ihdr = None
    idat = []
    seen_iend = False
    last_tag = None
    while pos < len(blob):
        if pos + 12 > len(blob):
            raise bad("truncated chunk header")
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        tag = blob[pos + 4 : pos + 8]
        if length > 2**31 - 1 or pos + 12 + length > len(blob):
            raise bad(f"truncated or oversized chunk {tag!r}")
        if not all(65 <= ch <= 90 or 97 <= ch <= 122 for ch in tag):
            raise bad(f"invalid chunk type {tag!r}")
        data = blob[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", blob[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(tag + data) != crc:
            raise bad(f"CRC mismatch in chunk {tag.decode('ascii')}")
        pos += 12 + length
        if ihdr is None and tag != b"IHDR":
            raise bad("first chunk is not IHDR")
        if tag == b"IHDR":
            if ihdr is not None:
                raise bad("duplicate IHDR")
            if length != 13:
                raise bad("IHDR has wrong length")
            ihdr = struct.unpack(">IIBBBBB", data)
        elif tag == b"IDAT":
            if idat and last_tag != b"IDAT":
                raise bad("IDAT chunks are not consecutive")
            idat.append(data)
        elif tag == b"IEND":
            seen_iend = True
            break  # anything after IEND is ignored, as decoders customarily do
        elif not (tag[0] & 0x20) and tag != b"PLTE":
            # Upper-case first letter = critical chunk we do not understand.
            raise bad(f"unsupported critical chunk {tag.decode('ascii')}")
        last_tag = tag
    if ihdr is None:
        raise bad("missing IHDR")
    if not seen_iend:
        raise bad("missing IEND (file truncated?)")
    if not idat:
        raise bad("no image data (IDAT)")

    w, h, depth, ctype, comp, filt, interlace = ihdr
    if not (1 <= w <= 2**31 - 1 and 1 <= h <= 2**31 - 1):
        raise bad(f"invalid size {w}x{h}")
    if depth != 8:
        raise bad(f"unsupported bit depth {depth} (only 8 is supported)")
    channels = _PNG_CHANNELS.get(ctype)
    if channels is None:
        raise bad(f"unsupported colour type {ctype} (only grayscale 0, RGB 2, grayscale+alpha 4 and RGBA 6)")
    if comp != 0 or filt != 0:
        raise bad("invalid compression or filter method")
    if interlace != 0:
        raise bad("interlaced PNGs are not supported")
    rowbytes = w * channels
    expected = h * (rowbytes + 1)
    compressed = b"".join(idat)
    # Deflate cannot expand by more than ~1032:1; a claimed size beyond that
    # is corrupt, and rejecting it early avoids huge allocations.
    if expected > 1100 * len(compressed) + 1024:
        raise bad(f"image data too short for {w}x{h} pixels")
    try:
        d = zlib.decompressobj()
        raw = d.decompress(compressed, expected)
        if d.unconsumed_tail or (d.eof and d.unused_data.strip(b"\0")):
            raise bad("more image data than the header declares")
        if not d.eof:
            raw += d.flush()
            if not d.eof:
                raise bad("image data stream is truncated")
    except zlib.error as exc:
        raise bad(f"corrupt image data ({exc})") from exc
    if len(raw) != expected:
        raise bad(f"image data has {len(raw)} bytes, expected {expected}")
    pixels = _unfilter(raw, h, rowbytes, channels, path)
    return pixels.reshape(h, w) if channels == 1 else pixels.reshape(h, w, channels)
