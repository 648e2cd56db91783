"""Reading files from the local disk for ingest: regular files only, every read bounded.

Policy (README "命令行 / 安全"): ingest never follows a symbolic link — neither one named on the
command line nor one found in a folder, wherever it points — because a link inside a shared folder
(`a.txt -> /etc/passwd`, `env.txt -> /proc/self/environ`) would otherwise copy a file the user never
meant to publish into the knowledge base. Only regular files are read: FIFOs (which block a reader
forever), character/block devices (`/dev/zero` never ends) and the kernel's virtual files under
/proc and /sys (which `stat` reports as empty regular files) are refused with a Chinese reason.

The checks happen on the opened file descriptor (O_NOFOLLOW | O_NONBLOCK, then fstat), so a file
swapped for a link or a FIFO between listing and opening is refused too, and the read itself stops
at the size limit + 1 byte whatever `stat` said.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Iterable

from services import errors
from services.config import max_file_bytes
from services.documents.doctypes import check_size

_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
_VIRTUAL_ROOTS = ("/proc", "/sys")
SYMLINK_REASON = "这是一个符号链接（快捷方式），为安全起见不会跟随读取其指向的文件；如需索引，请直接指定目标文件。"


def _kind_zh(mode: int) -> str | None:
    """What a non-regular file is, in Chinese (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "符号链接"
    if stat.S_ISFIFO(mode):
        return "命名管道（FIFO）"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "设备文件"
    if stat.S_ISSOCK(mode):
        return "套接字"
    if stat.S_ISDIR(mode):
        return "文件夹"
    return "特殊文件"


def _virtual_devices() -> set[int]:
    found = set()
    for root in _VIRTUAL_ROOTS:
        try:
            found.add(os.stat(root).st_dev)
        except OSError:
            pass
    return found


def not_regular_reason(mode: int, dev: int | None = None) -> str | None:
    """The Chinese reason a file with `mode` (from lstat/fstat) on device `dev` is not read, or None."""
    if stat.S_ISLNK(mode):
        return SYMLINK_REASON
    kind = _kind_zh(mode)
    if kind == "文件夹":
        return "这是一个文件夹，不是文件。"
    if kind:
        return f"这不是普通文件（{kind}），不会读取。"
    if dev is not None and dev in _virtual_devices():
        return "这是系统的虚拟文件（/proc、/sys 下的内核信息），不是文档，不会读取。"
    return None


def read_regular_file(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file, at most `limit` (default: the upload size limit).

    Raises a DocumentError with a Chinese reason for a symbolic link, a FIFO, a device, a /proc or
    /sys file, a file over the limit (by `stat` before reading, and by the bytes actually read,
    which stop at limit + 1), and FileUnreadable for any other OSError."""
    limit = max_file_bytes() if limit is None else limit
    path = Path(path)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP and path.is_symlink():  # O_NOFOLLOW refused a link
            raise errors.NotARegularFile(SYMLINK_REASON) from exc
        raise errors.FileUnreadable.from_os_error(exc) from exc
    try:
        info = os.fstat(fd)
        reason = not_regular_reason(info.st_mode, info.st_dev)
        if reason:
            raise errors.NotARegularFile(reason)
        check_size(info.st_size)
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1024 * 1024, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # the file grew, or stat lied: never more than limit + 1 bytes in memory
            check_size(total)
        return b"".join(chunks)
    except OSError as exc:
        raise errors.FileUnreadable.from_os_error(exc) from exc
    finally:
        os.close(fd)


def list_files(paths: Iterable[str | Path], extensions: Iterable[str]) -> list[tuple[Path, str | None]]:
    """(path, reason not to read it or None) for files and folders (folders recursively, only
    `extensions`, sorted).

    A path named directly is returned as is (read_regular_file refuses it if it is a link or a special
    file, so the user hears why). Inside folders, symbolic links are neither followed nor descended
    into; links and special files with a supported extension, and links to folders, come with their
    reason; files of other types are left out silently, as before."""
    extensions = {e.lower() for e in extensions}
    out: list[tuple[Path, str | None]] = []
    for p in map(Path, paths):
        try:
            is_dir = stat.S_ISDIR(p.lstat().st_mode)
        except OSError:
            is_dir = False  # reported as unreadable when read
        if not is_dir:
            out.append((p, None))
            continue
        found: list[tuple[Path, str | None]] = []
        for folder, dirs, names in os.walk(p, followlinks=False):
            for name in dirs:  # os.walk lists a link to a folder among dirs but does not walk it
                if (Path(folder) / name).is_symlink():
                    found.append((Path(folder) / name, SYMLINK_REASON))
            for name in names:
                full = Path(folder) / name
                if full.suffix.lower() in extensions:
                    try:
                        found.append((full, not_regular_reason(full.lstat().st_mode)))
                    except OSError:
                        found.append((full, None))
        out.extend(sorted(found, key=lambda x: str(x[0])))
    return out
