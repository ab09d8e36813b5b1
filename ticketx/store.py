"""Files on disk: atomic writes, safe loads, fingerprints of configurations.

Every file ticketx writes goes to a temporary name in the same folder, is fsynced, and is then
renamed over its final name (os.replace is atomic on POSIX), so a crash never leaves a
half-written file under a final name and never destroys the previous good copy.

Under DDP (ticketx.distributed) only rank 0 writes and deletes results: the other ranks compute
the same content and skip `write_*`, `save_torch` and the removals (a no-op in one process).
Data caches (`atomic_path` directly) are written by whichever rank needs them.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ticketx import interrupt
from ticketx.errors import TicketxError, UsageError


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _os_error(path: Path, err: OSError) -> TicketxError:
    if err.errno == errno.ENOSPC:
        return TicketxError(f"cannot write {path}: no space left on device", "free some space and rerun; finished files are intact")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return TicketxError(f"cannot write {path}: permission denied", "choose a writable folder with --out")
    return TicketxError(f"cannot write {path}: {err.strerror or err}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise _os_error(path, err) from err
    tmp_path = Path(tmp)
    try:
        # mkstemp makes 0600 files: give the final file the usual mode (0666 minus umask) so
        # tickets on a shared cluster folder are as readable as any other file there.
        os.chmod(tmp_path, 0o666 & ~_umask())
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # A stop request whose KeyboardInterrupt was swallowed (in a __del__, a GC callback)
        # stops here, before the file is committed, rather than after the whole run.
        interrupt.check()
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        raise _os_error(path, err) from err
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def create_exclusive(path: str | os.PathLike, data: bytes) -> bool:
    """Create `path` holding `data` only if it does not exist yet; True if this call created it.

    Atomic on local file systems and on NFS: the content goes to a temporary file first and is
    then hard-linked to `path` (link(2) fails if `path` exists), the recipe open(2) gives for
    NFS, where O_EXCL was not atomic before NFSv3. Readers never see a half-written file. A lost
    NFS reply can make a link that succeeded report an error: the link count decides. File
    systems without hard links fall back to O_CREAT | O_EXCL.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _os_error(path, err) from err
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as err:
            if os.stat(tmp).st_nlink == 2:  # NFS: the link was made, its reply lost
                pass
            elif err.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                try:
                    excl = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
                except FileExistsError:
                    return False
                with os.fdopen(excl, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            else:
                raise _os_error(path, err) from err
        _fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def writes() -> bool:
    """Whether this process writes results: always, except on DDP ranks other than 0."""
    from ticketx import distributed

    return distributed.is_main()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    if not writes():
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """torch.save through an atomic temporary file."""
    if not writes():
        return
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # Through a Python file object, a full disk surfaces as OSError(ENOSPC) (a clear
        # error below); torch.save(obj, filename) would raise an opaque RuntimeError.
        torch.save(obj, fh)


def _check_crc(path: Path, what: str) -> None:
    """Verify the CRC-32 of every member of a torch zip file: torch.load does not, so flipped
    bits in a tensor would otherwise load silently as different weights (~1 GB/s)."""
    try:
        if not zipfile.is_zipfile(path):
            return  # legacy or foreign formats: torch.load decides
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as err:
        raise TicketxError(f"cannot read {what} {path}: truncated, corrupted or not a ticketx file ({type(err).__name__})") from err
    if bad is not None:
        raise TicketxError(f"cannot read {what} {path}: corrupted (checksum mismatch in {bad})")


def load_torch(path: str | os.PathLike, what: str = "file", mmap: bool = False) -> Any:
    """torch.load with weights_only=True: never executes code from the file.

    Every failure (missing, truncated, corrupted, foreign, or a pickle that asks for code)
    becomes one TicketxError naming the file.
    """
    path = Path(path)
    if not path.exists():  # a path the user typed wrong: bad input (exit 2)
        raise UsageError(f"{what} not found: {path}")
    if path.is_dir():
        raise UsageError(f"{what} {path} is a folder, not a file")
    _check_crc(path, what)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": not the user's business
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        text = str(err)
        wanted = re.search(r"GLOBAL ([\w.]+)|global: GLOBAL ([\w.]+)|Unsupported global: ([\w.]+)", text)
        if wanted is None:  # an opcode the tensor unpickler does not know: not a tensor file
            raise TicketxError(f"cannot read {what} {path}: truncated, corrupted or not a ticketx file (not a tensor file)") from err
        name = next(g for g in wanted.groups() if g)
        raise TicketxError(
            f"refusing to load {path}: it asks to import {name}, which a ticketx file never does",
            "ticketx opens files with torch.load(weights_only=True): code in a file is never run",
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError, AttributeError, TypeError) as err:
        raise TicketxError(f"cannot read {what} {path}: truncated, corrupted or not a ticketx file ({type(err).__name__})") from err


def plain(obj: Any) -> Any:
    """obj as plain JSON types (dict, list, str, int, float, bool, None): always weights_only-loadable."""
    return json.loads(json.dumps(obj, default=str))


def fingerprint(obj: Any, n: int = 12) -> str:
    """Stable short hash of a JSON-able configuration (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def check_writable(path: str | os.PathLike) -> None:
    """Fail early (before any work) when a file could not be written at `path`.

    Probes the nearest existing folder with a temporary file, creating nothing that stays.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name, e.g. {path / 'ticket.pt'}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: {folder} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ticketx-probe.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise _os_error(path, err) from err
    os.close(fd)
    Path(tmp).unlink(missing_ok=True)


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Delete temporary files left next to `path` by an atomic write that was killed (SIGKILL)."""
    if not writes():
        return
    path = Path(path)
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            tmp.unlink(missing_ok=True)


def remove_tree(path: str | os.PathLike) -> None:
    if writes():
        shutil.rmtree(path, ignore_errors=True)


def remove_file(path: str | os.PathLike) -> None:
    """Delete `path` if it exists (on DDP rank 0 only, like every write)."""
    if writes():
        Path(path).unlink(missing_ok=True)


def versions() -> dict[str, str]:
    import platform

    import ticketx

    out = {"ticketx": ticketx.__version__, "torch": str(torch.__version__), "python": platform.python_version()}
    # The installed version from package metadata: importing torchvision costs seconds.
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        out["torchvision"] = version("torchvision")
    return out


def read_json(path: str | os.PathLike, default: Callable[[], Any] | None = None) -> Any:
    path = Path(path)
    if not path.exists() and default is not None:
        return default()
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TicketxError(f"cannot read {path}: {err}") from err
