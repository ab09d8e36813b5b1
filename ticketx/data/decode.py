"""Image files -> uint8 tensors [N, C, H, W], decoded in threads (PIL releases the GIL): image folders and Places365."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch

from ticketx.data.pixels import resize
from ticketx.errors import TicketxError

# Modes that carry one intensity per pixel; everything else is converted to RGB.
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def error_reason(err: BaseException) -> str:
    """'TypeName: first line of the message' (at most 200 characters), for one-line errors."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def decode_image(path: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """One image file -> uint8 [C, H, W]: C = 1 for grayscale files, else 3 (RGB; alpha dropped)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        if size is not None and im.format == "JPEG":
            # JPEG decodes at 1/2, 1/4, 1/8 scale straight from the DCT, several times faster for
            # big photos; draft never goes below the requested size, so the resize still antialiases.
            im.draft(im.mode, (size[1], size[0]))
        gray = im.mode in _GRAY_MODES
        arr = np.array(im.convert("L" if gray else "RGB"))
    t = torch.from_numpy(arr)
    return t.unsqueeze(0) if gray else t.permute(2, 0, 1).contiguous()


def decode_all(paths: Sequence[Path], size: tuple[int, int] | None, rgb: bool = False) -> torch.Tensor:
    """Decode image files into one uint8 [N, C, H, W] tensor, in threads (PIL releases the GIL).

    `size` None = the first image's size; images of another size are resized to it. C is 1 when
    every image is grayscale (and `rgb` is False), else 3 with gray images replicated.
    """
    n = len(paths)
    if n == 0:
        h, w = size or (1, 1)
        return torch.empty((0, 1 if not rgb else 3, h, w), dtype=torch.uint8)

    def decode(i: int) -> torch.Tensor:
        try:
            return decode_image(paths[i], size)
        except TicketxError:
            raise
        except Exception as err:  # PIL raises OSError, ValueError, DecompressionBombError, ...
            raise TicketxError(f"cannot decode image {paths[i]}: {error_reason(err)}", "delete or replace the file") from err

    first = decode(0)
    if size is None:
        size = (int(first.shape[1]), int(first.shape[2]))
    out = torch.empty((n, 3, *size), dtype=torch.uint8)
    color = torch.zeros(n, dtype=torch.bool)

    def put(i: int, img: torch.Tensor) -> None:
        if tuple(img.shape[1:]) != size:
            img = resize(img.unsqueeze(0), size)[0]
        out[i].copy_(img)  # a gray [1, H, W] image broadcasts to all three channels
        color[i] = img.shape[0] == 3

    put(0, first)

    def work(block: range) -> None:
        for i in block:
            put(i, decode(i))

    blocks = [range(a, min(a + 64, n)) for a in range(1, n, 64)]
    workers = min(8, os.cpu_count() or 1)
    if workers > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, blocks))  # list(): re-raises the first worker error
    else:
        for block in blocks:
            work(block)
    if not rgb and not bool(color.any()):
        return out[:, :1].contiguous()
    return out

