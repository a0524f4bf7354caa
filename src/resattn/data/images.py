"""Reading image files, with their size checked from the header before any pixel is decoded.

:func:`read_image` is the one place resattn turns an image file into pixels. It reads
the file once, reads the image's width and height from its header (PNG, JPEG, BMP, GIF,
WebP, TIFF, PNM/PAM/PFM, Sun raster, Radiance HDR: parsed here, neither OpenCV nor Pillow
is asked), refuses an image of more than
:data:`MAX_IMAGE_PIXELS` pixels, and only then lets OpenCV decode the same bytes. So a
"decompression bomb", a small file whose header claims, say, 30000 x 30000 pixels, is
refused in microseconds without allocating the 2.7 GB its pixels would take.

This module does not import MXNet.
"""
import io
import os
import stat
import struct

import numpy as np

__all__ = ["MAX_IMAGE_PIXELS", "read_image"]

#: The largest image, in pixels (width x height), that :func:`read_image` (and so the
#: ``imagefolder:`` and ``rec:`` datasets) decodes: Pillow's ``Image.MAX_IMAGE_PIXELS``,
#: about 9459 x 9459, 256 MiB at 3 bytes a pixel. The ``max_pixels`` argument of
#: :func:`read_image` overrides it, else the environment variable
#: ``RESATTN_MAX_IMAGE_PIXELS`` where set; assigning
#: ``resattn.data.images.MAX_IMAGE_PIXELS`` changes it for this process.
MAX_IMAGE_PIXELS = 89_478_485

_ENV = "RESATTN_MAX_IMAGE_PIXELS"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"  # the IEND chunk's type and (constant) CRC
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers, with the size
_TEXT_HEADER = 1 << 16  # bytes searched for the size line of a text header (PNM, HDR)


class _Unusable(Exception):
    """Why a file is not a usable image: ``reason`` groups files in a listing's warning."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + (" (%s)" % detail if detail else ""))
        self.reason, self.detail = reason, detail


class _TooLarge(_Unusable):
    def __init__(self, width, height, limit):
        super().__init__("larger than %d pixels (set %s to allow more)" % (limit, _ENV),
                         "%dx%d" % (width, height))
        self.width, self.height, self.limit = width, height, limit


class _Undecodable(_Unusable):
    """The header passed its checks; the decoder still failed."""


class _FileError(ValueError):
    """:func:`read_image`'s ValueError for a file that cannot be opened or read."""


# --------------------------------------------------------------------------- the limit


def _pixel_limit(max_pixels=None):
    """``max_pixels`` if given, else ``$RESATTN_MAX_IMAGE_PIXELS`` if set, else the constant."""
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) \
                or max_pixels < 1:
            raise ValueError("max_pixels must be a positive integer (a number of pixels) or "
                             "None, got %r" % (max_pixels,))
        return int(max_pixels)
    text = os.environ.get(_ENV, "").strip()
    if not text:
        return int(MAX_IMAGE_PIXELS)
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError("%s must be a positive integer (a number of pixels), got %r"
                         % (_ENV, text))
    return limit


def _check_pixels(width, height, limit):
    if width < 1 or height < 1:
        raise _Unusable("damaged", "header says %dx%d pixels" % (width, height))
    if width * height > limit:
        raise _TooLarge(width, height, limit)
    return width, height


# --------------------------------------------------------------------------- headers


def _contains(f, start, size, needle):
    """Whether bytes ``start:size`` of ``f`` contain ``needle``, read in 1 MiB chunks."""
    f.seek(start)
    carry = b""
    while f.tell() < size:
        chunk = carry + f.read(1 << 20)
        if needle in chunk:
            return True
        if len(chunk) == len(carry):
            return False
        carry = chunk[-len(needle) + 1:]
    return False


def _at(f, pos, n, what):
    """``n`` bytes of ``f`` at ``pos``; truncated if fewer are there."""
    f.seek(pos)
    data = f.read(n)
    if len(data) < n:
        raise _Unusable("truncated", what)
    return data


def _png(f, size, head, limit):
    if len(head) < 24:
        raise _Unusable("truncated", "%d bytes" % size)
    if head[12:16] != b"IHDR":
        raise _Unusable("damaged", "no IHDR chunk first")
    dims = _check_pixels(*struct.unpack(">II", head[16:24]), limit)
    f.seek(max(size - 12, 0))
    if f.read(12)[4:] != _PNG_IEND and not _contains(f, 8, size, _PNG_IEND):
        raise _Unusable("truncated", "no IEND chunk")
    return dims


def _jpeg(f, size, head, limit):
    pos, dims = 2, None
    while True:
        f.seek(pos)
        mark = f.read(4)
        if len(mark) < 2:
            raise _Unusable("truncated", "no scan")
        if mark[0] != 0xFF:
            raise _Unusable("damaged", "no marker at byte %d" % pos)
        kind = mark[1]
        if kind == 0xFF:  # fill byte
            pos += 1
            continue
        if kind in (0x01, 0xD8) or 0xD0 <= kind <= 0xD7:  # markers without a segment
            pos += 2
            continue
        if kind == 0xD9:
            raise _Unusable("damaged", "end of image before its scan")
        if len(mark) < 4:
            raise _Unusable("truncated", "no scan")
        length = struct.unpack(">H", mark[2:4])[0]
        if length < 2:
            raise _Unusable("damaged", "segment of length %d at byte %d" % (length, pos))
        if kind in _JPEG_SOF:
            frame = f.read(5)
            if len(frame) < 5:
                raise _Unusable("truncated", "frame header")
            height, width = struct.unpack(">HH", frame[1:5])
            dims = _check_pixels(width, height, limit)
        elif kind == 0xDA:  # start of scan: the size must be known, the end marker follow
            if dims is None:
                raise _Unusable("damaged", "scan before the frame header")
            scan = pos + 2 + length
            f.seek(max(size - 2, 0))
            if f.read(2) != b"\xff\xd9" and not _contains(f, scan, size, b"\xff\xd9"):
                raise _Unusable("truncated", "no end-of-image marker")
            return dims
        pos += 2 + length


def _bmp(f, size, head, limit):
    if len(head) < 26:
        raise _Unusable("truncated", "%d bytes" % size)
    dib = struct.unpack("<I", head[14:18])[0]
    if dib == 12:  # BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", head[18:22])
    elif dib >= 16:
        width, height = struct.unpack("<ii", head[18:26])
        height = abs(height)  # negative: rows stored top-down
    else:
        raise _Unusable("damaged", "DIB header of %d bytes" % dib)
    return _check_pixels(width, height, limit)


def _gif(f, size, head, limit):
    """The logical screen and every frame must be within the limit."""
    if len(head) < 13:
        raise _Unusable("truncated", "%d bytes" % size)
    dims = _check_pixels(*struct.unpack("<HH", head[6:10]), limit)
    flags = head[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while True:
        kind = _at(f, pos, 1, "no trailer")[0]
        if kind == 0x3B:  # trailer
            return dims
        if kind == 0x21:  # extension: a label, then sub-blocks
            pos += 2
        elif kind == 0x2C:  # image descriptor
            desc = _at(f, pos + 1, 9, "image descriptor")
            _check_pixels(*struct.unpack("<HH", desc[4:8]), limit)
            pos += 10 + (3 << ((desc[8] & 7) + 1) if desc[8] & 0x80 else 0) + 1  # + LZW size
        else:
            raise _Unusable("damaged", "block 0x%02x at byte %d" % (kind, pos))
        while True:  # sub-blocks up to the empty one
            n = _at(f, pos, 1, "sub-block")[0]
            pos += 1 + n
            if n == 0:
                break


def _webp(f, size, head, limit):
    if len(head) < 30:
        raise _Unusable("truncated", "%d bytes" % size)
    chunk = head[12:16]
    if chunk == b"VP8 ":  # lossy: a key frame's start code, then 14-bit sizes
        if head[23:26] != b"\x9d\x01\x2a":
            raise _Unusable("damaged", "no VP8 start code")
        width, height = (v & 0x3FFF for v in struct.unpack("<HH", head[26:30]))
    elif chunk == b"VP8L":  # lossless: a signature byte, then 14-bit sizes minus one
        if head[20] != 0x2F:
            raise _Unusable("damaged", "no VP8L signature")
        bits = struct.unpack("<I", head[21:25])[0]
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8X":  # extended: the canvas, 24-bit sizes minus one
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
    else:
        raise _Unusable("damaged", "WebP chunk %r first" % chunk.decode("latin-1"))
    return _check_pixels(width, height, limit)


def _tiff(f, size, head, limit):
    """The first image (the one decoders read) of a TIFF or BigTIFF."""
    if len(head) < 8:
        raise _Unusable("truncated", "%d bytes" % size)
    order = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(order + "H", head[2:4])[0] == 43
    if big:
        offset = struct.unpack(order + "Q", _at(f, 8, 8, "header"))[0]
        count = struct.unpack(order + "Q", _at(f, offset, 8, "first directory"))[0]
        entry, start = 20, offset + 8
    else:
        offset = struct.unpack(order + "I", head[4:8])[0]
        count = struct.unpack(order + "H", _at(f, offset, 2, "first directory"))[0]
        entry, start = 12, offset + 2
    table = _at(f, start, entry * count, "first directory")
    value_type = {3: "H", 4: "I", 16: "Q"}
    dims = {}
    for k in range(count):
        e = table[k * entry:(k + 1) * entry]
        tag, kind = struct.unpack(order + "HH", e[:4])
        if tag in (256, 257) and kind in value_type:
            value = e[12 if big else 8:]
            dims[tag] = struct.unpack(order + value_type[kind],
                                      value[:struct.calcsize(value_type[kind])])[0]
    if 256 not in dims or 257 not in dims:
        raise _Unusable("damaged", "no image width and length in the first directory")
    return _check_pixels(dims[256], dims[257], limit)


def _text_header(f, size):
    f.seek(0)
    return f.read(min(size, _TEXT_HEADER))


def _pnm(f, size, head, limit):
    """PBM, PGM, PPM (P1-P6) and PFM (PF, Pf): magic, width, height; PAM (P7): keywords."""
    text = _text_header(f, size)
    if head[:2] == b"P7":
        dims = {}
        for line in text.split(b"\n")[1:]:
            words = line.split()
            if words[:1] == [b"ENDHDR"]:
                break
            if len(words) == 2 and words[0] in (b"WIDTH", b"HEIGHT") and words[1].isdigit():
                dims[words[0]] = int(words[1])
        if len(dims) < 2:
            raise _Unusable("damaged", "no WIDTH and HEIGHT in the PAM header")
        return _check_pixels(dims[b"WIDTH"], dims[b"HEIGHT"], limit)
    tokens = []
    for line in text[2:].split(b"\n"):
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 2:
            break
    if len(tokens) < 2 or not (tokens[0].isdigit() and tokens[1].isdigit()):
        raise _Unusable("damaged", "no width and height in the header")
    return _check_pixels(int(tokens[0]), int(tokens[1]), limit)


def _sun(f, size, head, limit):
    if len(head) < 12:
        raise _Unusable("truncated", "%d bytes" % size)
    return _check_pixels(*struct.unpack(">II", head[4:12]), limit)


def _hdr(f, size, head, limit):
    """Radiance RGBE: header lines, an empty line, then e.g. ``-Y 480 +X 640``."""
    lines = _text_header(f, size).split(b"\n")
    for k, line in enumerate(lines[:-1]):
        if not line.strip():
            words = lines[k + 1].split()
            if len(words) == 4 and words[1].isdigit() and words[3].isdigit():
                sides = {words[0][-1:]: int(words[1]), words[2][-1:]: int(words[3])}
                if set(sides) == {b"X", b"Y"}:
                    return _check_pixels(sides[b"X"], sides[b"Y"], limit)
            break
    raise _Unusable("damaged", "no resolution line in the Radiance header")


#: (name, test of the first 32 bytes, parser) in the order formats are tried.
_FORMATS = (
    ("png", lambda h: h.startswith(_PNG_SIGNATURE), _png),
    ("jpeg", lambda h: h.startswith(b"\xff\xd8"), _jpeg),
    ("bmp", lambda h: h.startswith(b"BM"), _bmp),
    ("gif", lambda h: h[:6] in (b"GIF87a", b"GIF89a"), _gif),
    ("webp", lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP", _webp),
    ("tiff", lambda h: h[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"), _tiff),
    ("pnm", lambda h: h[:1] == b"P" and h[1:2] in b"1234567fF" and h[1:2] != b""
     and h[2:3].isspace(), _pnm),
    ("sun", lambda h: h.startswith(b"\x59\xa6\x6a\x95"), _sun),
    ("hdr", lambda h: h.startswith((b"#?RADIANCE", b"#?RGBE")), _hdr),
)
_NAMES = "PNG, JPEG, BMP, GIF, WebP, TIFF, PNM, Sun raster or Radiance HDR"


def _probe(f, size, limit, formats=None):
    """``(format, width, height)`` of the image in binary file ``f`` of ``size`` bytes.

    Reads its header (and, for PNG and JPEG, its end: the file must be whole). Raises
    :class:`_Unusable` for an empty, truncated or damaged file, one of more than ``limit``
    pixels, or one in no format whose size can be read; ``formats`` (names of
    :data:`_FORMATS`) restricts the formats accepted.
    """
    f.seek(0)
    head = f.read(32)
    if not head:
        raise _Unusable("empty")
    for name, test, parse in _FORMATS:
        if (formats is None or name in formats) and test(head):
            try:
                return (name,) + tuple(parse(f, size, head, limit))
            except (struct.error, IndexError, OverflowError):  # a field cut short or absurd
                raise _Unusable("damaged", "%s header" % name.upper()) from None
    raise _Unusable("not %s inside" % (_NAMES if formats is None else
                                       " or ".join(n.upper() for n in formats)))


# --------------------------------------------------------------------------- decoding


def _decode(buf, limit):
    """The (H, W, 3) uint8 RGB image encoded in ``buf``, its size checked first."""
    _probe(io.BytesIO(buf), len(buf), limit)
    import cv2
    try:
        # IMREAD_COLOR: grey becomes 3 channels, alpha is dropped, 16 bits become 8 (the
        # high byte), EXIF orientation is applied; OpenCV's channel order is BGR.
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise _Undecodable("cannot be decoded", lines[-1] if lines else "cv2.error") from None
    if img is None:
        raise _Undecodable("cannot be decoded", "OpenCV could not decode it")
    return np.ascontiguousarray(img[:, :, ::-1])


def _message(what, bad):
    """The one-line error for the image ``what`` (its name, quoted) and its flaw ``bad``."""
    if isinstance(bad, _TooLarge):
        return ("%s is not a usable image: its header declares %dx%d = %d pixels, more than "
                "the limit of %d; it was not decoded (pass max_pixels= to read_image or set "
                "%s to allow more)" % (what, bad.width, bad.height, bad.width * bad.height,
                                       bad.limit, _ENV))
    if isinstance(bad, _Undecodable):
        return "%s cannot be decoded (%s); remove or replace it" % (what, bad.detail)
    return "%s is not a usable image: %s; remove or replace it" % (what, bad)


def read_image(path, max_pixels=None):
    """The image in file ``path`` as an RGB ``uint8`` array of shape (H, W, 3).

    The file is read once; its header's width and height are checked before OpenCV
    decodes the same bytes, so an image of more than the limit is never decoded (a
    65-byte PNG that claims 30000 x 30000 pixels is refused at once, not given 2.7 GB).
    Grey images are repeated into 3 channels, alpha is dropped, 16-bit images keep
    their high byte and JPEG EXIF orientation is applied (OpenCV's ``IMREAD_COLOR``).

    Parameters
    ----------
    path : str or os.PathLike
        A PNG, JPEG, BMP, WebP, TIFF, PNM/PAM/PFM, Sun raster or Radiance HDR file
        (GIF headers are checked too, but OpenCV builds without GIF do not decode them).
        Other formats are refused: their size cannot be checked before decoding (and
        OpenCV's JPEG 2000 decoder crashes on some truncated files).
    max_pixels : int, optional
        The most pixels (width x height) accepted. Default: ``$RESATTN_MAX_IMAGE_PIXELS``
        if set, else :data:`MAX_IMAGE_PIXELS` (89,478,485, as Pillow's).

    Returns
    -------
    numpy.ndarray
        ``uint8``, shape (H, W, 3), C-contiguous, channels in RGB order.

    Raises
    ------
    ValueError
        One line naming the file: it is missing, not a regular file or unreadable;
        empty; truncated (a PNG without its IEND chunk, a JPEG without its end-of-image
        marker); not an image in a format whose size can be read (a text file named
        ``.png``); damaged in its header; larger than the limit (the message gives the
        declared size and how to allow more); or it does not decode.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError("path must be a str or os.PathLike, got %s" % type(path).__name__)
    limit = _pixel_limit(max_pixels)
    name = os.fspath(path)
    try:
        # O_NONBLOCK: a FIFO named like an image must not block the open; it is refused
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise _FileError("cannot read image %r (%s)" % (name, err.strerror or
                                                         type(err).__name__)) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise _FileError("cannot read image %r (%s)" % (name, kind))
    with open(fd, "rb") as f:
        try:
            buf = f.read()
        except OSError as err:
            raise _FileError("cannot read image %r (%s)" % (name, err.strerror or
                                                             type(err).__name__)) from None
    try:
        return _decode(buf, limit)
    except _Unusable as bad:
        raise ValueError(_message(repr(name), bad)) from None
