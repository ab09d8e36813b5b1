"""Image files -> uint8 tensors [N, C, H, W]: image folders and Places365.

`decode_all` decodes a short list in memory. `decode_to_folder` decodes a long one (Places365's
1.8M images) into raw files on disk, in fixed-size chunks, on all cores, resumably, and shared
by any number of processes (on one node or many) that need the same cache at once:

    <folder>/layout.json          the splits, their image counts, the image size, the chunk size
    <folder>/<split>.u8           raw uint8 [N, 3, H, W] records, preallocated (sparse) to full
                                  size; chunk k holds images [k*chunk, (k+1)*chunk) at its offset
    <folder>/<split>-000042.done  chunk 42 is written and fsynced (JSON: images, colour, time)
    <folder>/<split>-000042.lease chunk 42 is being decoded (ticketx.leases: heartbeat, takeover)
    <folder>/complete.json        every chunk is done (created once, exclusively); readers trust
                                  the .u8 files only when it exists

A process walks the chunks in order, skips those with a .done file, claims the next free one
with its lease, checks .done again (a peer may have finished it meanwhile), decodes it into its
place in the .u8 file, fsyncs, creates .done and drops the lease. When no chunk is free it waits
for its peers, taking over a lease whose heartbeat stopped. A pre-empted job therefore loses at
most the chunk it was decoding; a chunk decoded twice (after a takeover of a stalled, not dead,
peer) is written twice with the same bytes, which is harmless.

Chunks are written in place rather than to files of their own that are then concatenated: the
assembled file would need a full copy (354 GB at 256 px) and twice the disk space meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ticketx import store
from ticketx.data.pixels import resize
from ticketx.errors import TicketxError, UsageError
from ticketx.leases import Leases, dead_process
from ticketx.threads import cpu_threads

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


def decode_rgb(path: Path, size: tuple[int, int]) -> tuple[torch.Tensor, bool]:
    """One image file as uint8 [3, *size] (gray replicated, other sizes resized) and whether it has colour."""
    img = decode_image(path, size)
    if tuple(img.shape[1:]) != tuple(size):
        img = resize(img.unsqueeze(0), size)[0]
    color = img.shape[0] == 3
    return (img if color else img.expand(3, -1, -1)), color


def _decode_or_explain(path: Path, size: tuple[int, int] | None) -> torch.Tensor:
    try:
        return decode_image(path, size)
    except TicketxError:
        raise
    except Exception as err:  # PIL raises OSError, ValueError, DecompressionBombError, ...
        raise TicketxError(f"cannot decode image {path}: {error_reason(err)}", "delete or replace the file") from err


def decode_all(paths: Sequence[Path], size: tuple[int, int] | None, rgb: bool = False) -> torch.Tensor:
    """Decode image files into one uint8 [N, C, H, W] tensor, in threads (PIL releases the GIL).

    `size` None = the first image's size; images of another size are resized to it. C is 1 when
    every image is grayscale (and `rgb` is False), else 3 with gray images replicated.
    """
    n = len(paths)
    if n == 0:
        h, w = size or (1, 1)
        return torch.empty((0, 1 if not rgb else 3, h, w), dtype=torch.uint8)
    first = None
    if size is None:
        first = _decode_or_explain(paths[0], None)
        size = (int(first.shape[1]), int(first.shape[2]))
    out = torch.empty((n, 3, *size), dtype=torch.uint8)
    color = torch.zeros(n, dtype=torch.bool)
    if first is not None:  # decoded once, not twice
        out[0].copy_(first)  # a gray [1, H, W] image broadcasts to all three channels
        color[0] = first.shape[0] == 3

    def work(block: range) -> None:
        for i in block:
            img, color[i] = _rgb_or_explain(paths[i], size)
            out[i].copy_(img)

    start = 0 if first is None else 1
    blocks = [range(a, min(a + 64, n)) for a in range(start, n, 64)]
    workers = min(8, os.cpu_count() or 1)
    if workers > 1 and len(blocks) > 1:
        pool = ThreadPoolExecutor(workers)
        try:
            list(pool.map(work, blocks))  # list(): re-raises the first worker error
        finally:  # a Ctrl-C must not wait for every remaining block to be decoded
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        for block in blocks:
            work(block)
    if not rgb and not bool(color.any()):
        return out[:, :1].contiguous()
    return out


def _rgb_or_explain(path: Path, size: tuple[int, int]) -> tuple[torch.Tensor, bool]:
    try:
        return decode_rgb(path, size)
    except TicketxError:
        raise
    except Exception as err:  # PIL raises OSError, ValueError, DecompressionBombError, ...
        raise TicketxError(f"cannot decode image {path}: {error_reason(err)}", "delete or replace the file") from err


# ---------------------------------------------------------------------------------------------
# Chunked, resumable, shared decoding into files on disk

# Images per chunk: what a pre-empted process loses at most, and the unit two processes split.
# A multiple of 4096, so every chunk starts on a page boundary whatever the image size: writers
# on different NFS clients never share a page. 8192 images = 96 MiB at 64 px, 1.5 GiB at 256 px.
CHUNK_IMAGES = 8192
# A lease not refreshed for this long is a dead peer's (the heartbeat is a thread, so slow
# decoding never delays it); long enough for a busy NFS server to serve a utime.
LEASE_TIMEOUT = 300.0  # seconds
# Images a pool task decodes: small enough that the last tasks of a chunk leave few cores idle.
_BLOCK_IMAGES = 32
# Below this many images to decode, threads in this process: starting a process pool (each worker
# imports torch, ~1-2 s) costs more than it saves.
_POOL_MIN_IMAGES = 2000


def decode_workers() -> int:
    """Processes to decode with: $TICKETX_DECODE_WORKERS, else $TICKETX_THREADS, else every core this process may use."""
    for var in ("TICKETX_DECODE_WORKERS", "TICKETX_THREADS"):
        env = os.environ.get(var, "").strip()
        if env:
            if not env.isdigit() or int(env) < 1:
                raise UsageError(f"{var} must be a positive integer, got {env!r}")
            return int(env)
    try:
        return len(os.sched_getaffinity(0))  # a Slurm allocation, taskset, cgroups cpusets
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _decode_block(paths: Sequence[str], size: tuple[int, int], dest: str, first: int) -> tuple[list[bool], tuple[str, str | None] | None]:
    """Decode `paths` into records first, first+1, ... of the raw file `dest` (a pool task).

    Returns the colour flags, and (message, hint) of the first failure: a pool sends back plain
    values, since a TicketxError would lose its hint on the way.
    """
    record = 3 * size[0] * size[1]
    colors = []
    fd = os.open(dest, os.O_WRONLY)
    try:
        for j, path in enumerate(paths):
            try:
                img, color = _rgb_or_explain(Path(path), size)
            except TicketxError as err:
                return colors, (str(err), err.hint)
            view = memoryview(img.contiguous().numpy()).cast("B")
            offset = (first + j) * record
            while view:  # pwrite may write less than asked
                done = os.pwrite(fd, view, offset)
                view, offset = view[done:], offset + done
            colors.append(color)
    finally:
        os.close(fd)
    return colors, None


def _pool_init() -> None:
    torch.set_num_threads(1)  # one core per worker process: resizes must not oversubscribe


class _Progress:
    """'what: 12/220 chunks (98,304/1,803,460 images), 1,850 images/s, 15 min left' on stderr.

    On a terminal one line rewritten in place; elsewhere (Slurm logs, pipes) one line per
    `every` chunks, about 20 lines in all, and the last one.
    """

    def __init__(self, what: str, chunks: int, images: int, write: Callable[[str], None] | None) -> None:
        self.what, self.chunks, self.images = what, chunks, images
        self.tty = write is None and sys.stderr.isatty()
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.every = max(1, math.ceil(chunks / 20))
        self.t0 = time.perf_counter()
        self.mine = 0  # images this process decoded

    def update(self, chunks_done: int, images_done: int, decoded: int) -> None:
        self.mine += decoded
        if not (self.tty or chunks_done % self.every == 0 or chunks_done == self.chunks):
            return
        dt = max(1e-9, time.perf_counter() - self.t0)
        rate = self.mine / dt
        line = f"{self.what}: {chunks_done}/{self.chunks} chunks ({images_done:,}/{self.images:,} images), {rate:,.0f} images/s here"
        if rate > 0 and images_done < self.images:
            left = (self.images - images_done) / rate
            line += f", ~{left / 60:.0f} min left at this pace" if left >= 120 else f", ~{left:.0f} s left at this pace"
        if self.tty:
            print("\r" + line + "\x1b[K", end="" if chunks_done < self.chunks else "\n", file=sys.stderr, flush=True)
        else:
            self.write(line)


def decode_to_folder(
    splits: dict[str, Sequence[Path]],
    size: tuple[int, int],
    folder: Path,
    *,
    what: str = "decoding",
    chunk_images: int | None = None,
    workers: int | None = None,
    lease_timeout: float = LEASE_TIMEOUT,
    poll: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, torch.Tensor], bool]:
    """Decode each split's images to RGB `size` into `folder` (layout above); memory-map the result.

    Resumes a decode another process started or was killed in, and works beside any number of
    processes doing the same. Returns {split: uint8 [N, 3, *size] memory-mapped} and whether any
    image has colour. Bytes are those of `decode_all(paths, size, rgb=True)`. `chunk_images`
    None = CHUNK_IMAGES; a folder keeps the chunk size it was started with.
    """
    folder = Path(folder)
    counts = {name: len(paths) for name, paths in splits.items()}
    layout = _layout(folder, counts, size, CHUNK_IMAGES if chunk_images is None else chunk_images)
    if not (folder / "complete.json").is_file():
        record = 3 * size[0] * size[1]
        # One torch thread: the parallelism is across images; an OpenMP team per 200 KB permute or
        # resize costs more than it saves (65 vs 290 images/s at 256 px on one core, measured).
        with cpu_threads(1):
            _decode_chunks(splits, size, folder, int(layout["chunk_images"]), record, what, workers, lease_timeout, poll, progress)
    mapped = map_folder(folder, counts, size)
    if mapped is None:
        raise TicketxError(f"decoded cache {folder} is incomplete or damaged", f"delete {folder} and rerun")
    return mapped


def map_folder(folder: Path, counts: dict[str, int], size: tuple[int, int]) -> tuple[dict[str, torch.Tensor], bool] | None:
    """The memory-mapped splits of a complete `decode_to_folder` folder and its colour flag; None if incomplete."""
    if not (folder / "complete.json").is_file():
        return None
    try:
        info = json.loads((folder / "complete.json").read_text())
        record = 3 * size[0] * size[1]
        out = {}
        for name, n in counts.items():
            if n == 0:
                out[name] = torch.empty((0, 3, *size), dtype=torch.uint8)
                continue
            path = folder / f"{name}.u8"
            if path.stat().st_size != n * record:
                return None
            # mmap: 1.8M images at 64 px are 22 GB; pages are read when a batch needs them.
            out[name] = torch.from_file(str(path), shared=False, size=n * record, dtype=torch.uint8).view(n, 3, *size)
    except (OSError, ValueError, RuntimeError, AttributeError):
        return None
    return out, bool(info.get("color", True))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TicketxError(f"cannot read {path}: {err}", f"delete {path.parent} and rerun") from err
    return data if isinstance(data, dict) else {}


def _layout(folder: Path, counts: dict[str, int], size: tuple[int, int], chunk_images: int) -> dict[str, Any]:
    """The folder's layout.json, created by the first process; a later one adopts its chunk size."""
    if chunk_images < 1:
        raise UsageError(f"chunk size must be a positive number of images, got {chunk_images}")
    want = {"splits": counts, "size": list(size), "chunk_images": chunk_images, "format": "uint8 [N, 3, H, W] raw"}
    path = folder / "layout.json"
    store.create_exclusive(path, (json.dumps(want) + "\n").encode())
    have = _read_json(path)
    if have.get("splits") != counts or have.get("size") != list(size) or not isinstance(have.get("chunk_images"), int):
        raise TicketxError(
            f"decoded cache {folder} holds other images ({have.get('splits')} at {have.get('size')}, "
            f"expected {counts} at {list(size)})",
            f"delete {folder} and rerun",
        )
    return have


def _sparse_file(path: Path, nbytes: int) -> None:
    """Create `path` at its full size (sparse: no disk blocks until written), atomically, once."""
    if not path.exists():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.ftruncate(fd, nbytes)
            os.fsync(fd)
            os.chmod(tmp, 0o666 & ~_umask())
            # Linked, not renamed, into place: of two processes creating it, the second keeps the first's.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.close(fd)
            os.unlink(tmp)
    if path.stat().st_size != nbytes:
        raise TicketxError(f"decoded cache {path} has the wrong size", f"delete {path.parent} and rerun")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _decode_chunks(
    splits: dict[str, Sequence[Path]],
    size: tuple[int, int],
    folder: Path,
    chunk_images: int,
    record: int,
    what: str,
    workers: int | None,
    lease_timeout: float,
    poll: float | None,
    progress: Callable[[str], None] | None,
) -> None:
    chunks = [(name, k) for name, paths in splits.items() for k in range(math.ceil(len(paths) / chunk_images))]

    def span(chunk: tuple[str, int]) -> tuple[int, int]:
        name, k = chunk
        return k * chunk_images, min((k + 1) * chunk_images, len(splits[name]))

    def stem(chunk: tuple[str, int]) -> Path:
        return folder / f"{chunk[0]}-{chunk[1]:06d}"

    def done(chunk: tuple[str, int]) -> bool:
        return stem(chunk).with_suffix(".done").is_file()

    for name, paths in splits.items():
        _sparse_file(folder / f"{name}.u8", len(paths) * record)
    todo = [c for c in chunks if not done(c)]
    need = sum(span(c)[1] - span(c)[0] for c in todo) * record
    free = shutil.disk_usage(folder).free
    if need > free:
        raise TicketxError(
            f"{what}: the decoded images need {need / 2**30:.1f} GiB more in {folder}, {free / 2**30:.1f} GiB is free",
            "free some space, or choose a smaller --image-size or another --data-dir",
        )
    workers = workers or decode_workers()
    report = _Progress(what, len(chunks), sum(len(p) for p in splits.values()), progress)
    poll = poll if poll is not None else max(0.05, min(5.0, lease_timeout / 20))
    # Started before the lease heartbeat thread: the worker processes fork from a process with one thread.
    pool = _make_pool(workers, sum(span(c)[1] - span(c)[0] for c in todo)) if workers > 1 and todo else None
    try:
        with Leases(folder, lease_timeout, at_once=(dead_process,), log=report.write) as leases:
            while not (folder / "complete.json").is_file():
                todo = [c for c in chunks if not done(c)]
                if not todo:
                    break
                worked = False
                for chunk in todo:
                    lease = stem(chunk).name
                    if done(chunk) or not leases.acquire(lease):
                        continue
                    try:
                        if done(chunk):  # finished by a peer between our look and our claim
                            continue
                        a, b = span(chunk)
                        color = _decode_chunk(list(splits[chunk[0]][a:b]), size, folder / f"{chunk[0]}.u8", a, pool)
                        info = {"images": b - a, "color": color, "host": leases.owner["host"], "pid": os.getpid(), "time": time.time()}
                        store.create_exclusive(stem(chunk).with_suffix(".done"), (json.dumps(info) + "\n").encode())
                    finally:
                        leases.release(lease)
                    worked = True
                    finished = [c for c in chunks if done(c)]
                    report.update(len(finished), sum(span(c)[1] - span(c)[0] for c in finished), b - a)
                if not worked:
                    time.sleep(poll)  # every free chunk is leased by a live peer: wait for it or its death
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if not (folder / "complete.json").is_file():
        # Whoever sees the last chunk done first writes it; the .done files stay (a few bytes each),
        # so a peer that looks at them after this moment still sees every chunk done.
        colors = [bool(_read_json(stem(c).with_suffix(".done")).get("color", True)) for c in chunks]
        store.create_exclusive(folder / "complete.json", (json.dumps({"color": any(colors)}) + "\n").encode())
    for chunk in chunks:  # a lease a killed process left on a chunk it had finished
        stem(chunk).with_suffix(".lease").unlink(missing_ok=True)


def _make_pool(workers: int, images: int) -> Executor:
    if images < _POOL_MIN_IMAGES:
        return ThreadPoolExecutor(workers)
    import multiprocessing

    # fork where there is one (as torch's DataLoader), with one torch thread per worker: forkserver
    # and spawn re-import the caller's __main__, which reruns a script that has no main guard.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pool_init)
    pool.submit(int).result()  # with fork, every worker starts now, while this process has one thread
    return pool


def _decode_chunk(paths: list[Path], size: tuple[int, int], dest: Path, first: int, pool: Executor | None) -> bool:
    """Decode one chunk into its records of `dest` and fsync them; whether any image has colour."""
    blocks = [(list(map(str, paths[a : a + _BLOCK_IMAGES])), first + a) for a in range(0, len(paths), _BLOCK_IMAGES)]
    if pool is None:
        results = [_decode_block(p, size, str(dest), i) for p, i in blocks]
    else:
        results = list(pool.map(_decode_block, *zip(*[(p, size, str(dest), i) for p, i in blocks])))
    color = False
    for colors, error in results:
        if error is not None:
            raise TicketxError(error[0], error[1])
        color = color or any(colors)
    fd = os.open(dest, os.O_RDONLY)
    try:
        getattr(os, "fdatasync", os.fsync)(fd)  # the records reach the disk before the .done file exists
    finally:
        os.close(fd)
    return color
