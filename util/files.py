"""Writing files so that a crash never leaves half of one, computed caches, quiet downloads, and
content keys of data sets. Every file of a run folder and every cache is written through here.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch


def replace_atomically(path, write) -> None:
    """Call write(binary file) on a temporary file in the same folder, flush it to disk, then
    rename it over `path`: a crash at any moment leaves either the old file or the new one, never
    half of one (nor a temporary file, unless the process is killed). Errors (OSError, or what
    `write` raises) propagate. Every file of a run folder and every cache is written this way."""
    import tempfile

    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)  # reading the umask means setting it: put it back at once
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it private; a result file gets the usual mode
        os.replace(tmp, path)
    finally:
        if tmp is not None and Path(tmp).exists():
            Path(tmp).unlink()



def save_cache(obj, path) -> bool:
    """torch.save a computed table atomically; False (and nothing left behind) when the cache
    cannot be written (a read-only home): it is computed again next time."""
    try:
        replace_atomically(path, lambda f: torch.save(obj, f))
        return True
    except (OSError, RuntimeError):
        return False



def load_cache(path, check):
    """A cached table, or None when it is missing, unreadable (a 0-byte file a kill left, another
    kind of file, ...) or fails `check(obj) -> bool` (wrong shapes, NaN, ...): then it is
    computed again and rewritten."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        return obj if check(obj) else None
    except Exception:  # EOFError, UnpicklingError, RuntimeError, a check that trips: all mean "recompute"
        return None



def cache_dir() -> Path:
    """Where computed tables (the ab gamut, colour-bin counts per data set) are kept."""
    return Path(os.environ.get("COLORIZATION_CACHE", Path.home() / ".cache" / "colorization"))



def fetch_quietly(url: str, path, hash_prefix: str | None = None, timeout: float = 20.0) -> str | None:
    """Download `url` to `path` with nothing printed (torch writes a temporary file, checks the
    hash prefix, then moves it in place: a failure leaves nothing). None when it worked, else why
    not, in one line, for a message that says what to do (pretrained weights: LPIPS, FID)."""
    import socket

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=hash_prefix, progress=False)
        return None
    except Exception as e:  # URLError, HTTPError, a hash mismatch, a read-only cache, ...
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        socket.setdefaulttimeout(previous)



def data_key(root, paths, *settings) -> str:
    """A name for a data set as read with `settings`: its folder, and each file's path, size and
    modification time. Statistics cached under it are recomputed when any file changes."""

    h = hashlib.sha1(json.dumps([str(Path(root).resolve()), [str(s) for s in settings]]).encode())
    for rel in sorted(paths):
        try:
            st = (Path(root) / rel).stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{rel}\0missing\n".encode())
    return h.hexdigest()[:20]



def fingerprints(root, rel_paths) -> list[str]:
    """A short content hash of each file (blake2b of its bytes, 16 hex digits; "" for one that
    cannot be read): the same picture under another folder or name has the same one."""
    out = []
    for rel in rel_paths:
        try:
            out.append(hashlib.blake2b((Path(root) / rel).read_bytes(), digest_size=8).hexdigest())
        except OSError:
            out.append("")
    return out


class WriteError(Exception):
    """A file of a run folder (a checkpoint, the split, metrics, ...) that could not be written."""



def write_atomic(path, write, what: str = "file", errors=(OSError,)) -> None:
    """replace_atomically (a temporary file, flushed, renamed over `path`), with a
    failure among `errors` (disk full, permissions, ...) as a WriteError naming the file."""
    try:
        replace_atomically(path, write)
    except errors as e:
        raise WriteError(f"could not write {what} {path}: {e}; the previous one, if any, is intact") from None



def write_text_atomic(path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))



def save_atomic(obj: dict, path) -> None:
    """torch.save through write_atomic (on a really full disk torch raises a RuntimeError)."""
    write_atomic(path, lambda f: torch.save(obj, f), "checkpoint", (OSError, RuntimeError))
