"""Atomic writes: a stage either leaves complete outputs or the previous ones.

Every writer goes to a temporary name in the same folder and is renamed into
place, so a crash (or a killed `dvc repro`) never leaves a half-written file.
A whole output folder is built under a temporary sibling and swapped in at the
end by `atomic_dir`.

Folder outputs carry a marker file (`.clinfuse-output.json`, naming the kind of
output) written LAST into the temporary folder, so a marked temporary folder is
known to be complete. `atomic_dir` only ever replaces an empty folder or one
that carries the marker of the same kind: pointing `--out` at a raw export or a
home folder is refused, never deleted. The swap is two renames (old aside, new
in); a process killed between them leaves a state that `recover_dir` (run at the
start of every `atomic_dir` and by readers) completes: the marked new folder is
moved in, or else the old one is moved back; temporary folders of dead
processes are removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

MARKER = ".clinfuse-output.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _free_mb(folder: Path) -> str:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        stat = os.statvfs(folder)
        return f"{stat.f_bavail * stat.f_frsize / 2**20:,.1f} MB free"
    except OSError:
        return "free space unknown"


@contextlib.contextmanager
def disk_errors(folder: Path) -> Iterator[None]:
    """Turn a full disk or an unwritable folder into a one-line InputError naming the folder."""
    try:
        yield
    except OSError as exc:
        # numpy's tofile reports a short write without an errno ("N requested and M written").
        short_write = exc.errno is None and "requested and" in str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) or short_write:
            raise InputError(f"{folder}: no space left on the device ({_free_mb(folder)}); "
                             "nothing already written was replaced") from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise InputError(f"{folder}: cannot write here ({exc.strerror})") from None
        raise


def check_writable(folder: str | os.PathLike) -> None:
    """Raise InputError unless a file can be created in `folder` (or its nearest existing ancestor).

    Probes by creating and removing a file: permission bits alone say nothing for root or
    read-only mounts.
    """
    folder = Path(folder)
    probe_in = folder
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    with disk_errors(folder):
        fd, name = tempfile.mkstemp(prefix=".clinfuse-write-probe.", dir=probe_in)
        os.close(fd)
        os.unlink(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success."""
    path = Path(path)
    with disk_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask
    try:
        with disk_errors(path.parent):
            yield tmp_path
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (this process included), whoever owns it."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner_pid(name: str) -> int | None:
    """PID embedded in `.<name>.<pid>.<random>.tmp` / `.<name>.old-<pid>`, if any."""
    try:
        if name.endswith(".tmp"):
            return int(name[:-4].rsplit(".", 2)[-2])
        if ".old-" in name:
            return int(name.rsplit(".old-", 1)[1])
    except (ValueError, IndexError):
        return None
    return None


def output_kind(path: str | os.PathLike) -> str | None:
    """The kind recorded in a folder's clinfuse marker, or None when it has none."""
    marker = Path(path) / MARKER
    try:
        return str(json.loads(marker.read_text()).get("kind"))
    except (OSError, ValueError, AttributeError):
        return None


def check_replaceable(path: str | os.PathLike, kind: str) -> None:
    """Raise InputError unless `path` is absent, an empty folder, or a clinfuse `kind` output."""
    path = Path(path)
    check_writable(path.parent)
    if not path.exists():
        return
    if not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder; refusing to replace it with a {kind} folder")
    found = output_kind(path)
    if found == kind:
        return
    if found is None and not any(path.iterdir()):
        return
    what = f"a clinfuse {found} folder" if found else "not a folder clinfuse wrote (no marker)"
    raise InputError(f"{path}: {what}; refusing to replace it with a {kind} folder "
                     f"(choose a new or empty output folder, or remove it yourself)")


def recover_dir(path: str | os.PathLike) -> None:
    """Finish or undo a swap interrupted by a kill, and remove dead processes' temporary folders."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return
    prefix = f".{path.name}."
    leftovers = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    dead = [p for p in leftovers if (pid := _owner_pid(p.name)) is not None and not pid_alive(pid)]
    if not path.exists():
        complete = sorted((p for p in dead if p.name.endswith(".tmp") and output_kind(p)),
                          key=lambda p: p.stat().st_mtime)
        old = sorted((p for p in dead if ".old-" in p.name), key=lambda p: p.stat().st_mtime)
        if complete:
            os.replace(complete[-1], path)
        elif old:
            os.replace(old[-1], path)
    for p in dead:
        if p.exists():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, kind: str) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces `path` whole.

    Args:
        path: the output folder.
        kind: what the folder holds ("cohort", "evaluations", "synthetic-export", ...);
            recorded in its marker. An existing `path` is replaced only when it is
            empty or carries the marker of the same kind (else InputError, before any work).
    On failure the temporary folder is removed and `path` is left untouched.
    """
    path = Path(path)
    with disk_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        recover_dir(path)
    check_replaceable(path, kind)
    with disk_errors(path.parent):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        with disk_errors(path.parent):
            yield tmp
            # Written last: a temporary folder with a marker is complete (see recover_dir).
            (tmp / MARKER).write_text(json.dumps({"kind": kind, "written_by": "clinfuse"}) + "\n")
        check_replaceable(path, kind)  # it may have appeared while we worked
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: str | Path) -> Any:
    """The JSON document in `path` (a file the project wrote)."""
    return json.loads(Path(path).read_text())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a `.npy` array atomically (readable with `np.load(mmap_mode='r')`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def write_parquet(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame to Parquet atomically (no index column)."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
