"""Files that survive a crash: atomic writes, and the hashes of the binary files a run writes.

`atomic_path` writes through a temporary file beside the target: the data is flushed to disk (fsync), renamed
over the target, and the rename itself is made durable (fsync of the directory). A reader never sees half a
file, and a crash at any point leaves either the old file or the new one.

With `record=True` the file's SHA-256 also goes into `manifest.json` in the same directory, and `verify` checks
it when the file is read: a weights file or train_state.pt that was torn, truncated or changed after it was
written is named, together with the last checkpoint that still matches. The new hash is recorded as pending
before the rename and committed after it, so a crash between the two leaves a manifest that accepts whichever
file is on disk. A directory without a manifest (older runs, other tools) still loads, with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
_warned_unverified: set[Path] = set()


class CorruptFileError(ValueError):
    """A file does not match the hash its manifest recorded when it was written."""


# ----------------------------------------------------------------------------------------- writing


def _new_file_mode() -> int:
    """The mode `open(path, "w")` gives a new file: 0o666 less the umask (mkstemp's own 0o600 is not that)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_directory(directory: Path) -> None:
    """Make the renames and unlinks in `directory` durable (POSIX; elsewhere a no-op)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, record: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed.

    The file keeps the mode of the one it replaces (a new one gets the umask's usual mode). With `record`,
    its SHA-256 goes into the directory's manifest (see the module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else _new_file_mode())
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        digest = sha256_of(tmp) if record else None
        if digest:  # accepted from now on, beside the hash of the file it replaces
            _update_manifest(path.parent, path.name, pending=digest)
        os.replace(tmp, path)
        fsync_directory(path.parent)
        if digest:
            _update_manifest(path.parent, path.name, committed=digest, pending=None)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (temporary file in the same directory, then a rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def remove_file(path: str | os.PathLike) -> None:
    """Delete `path` (if there) and its manifest entry."""
    path = Path(path)
    path.unlink(missing_ok=True)
    if _read_manifest(path.parent) is not None:
        _update_manifest(path.parent, path.name, committed=None, pending=None)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writes killed before their rename left in `directory`; return them."""
    stale = [p for p in Path(directory).glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d temporary file(s) of interrupted writes in %s", len(stale), directory)
    return stale


# ---------------------------------------------------------------------------------------- manifest


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(directory: Path) -> dict | None:
    path = directory / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{path} is not valid JSON ({error}); delete it to load this directory's files "
                               "unverified") from None
    return {"files": dict(manifest.get("files", {})), "pending": dict(manifest.get("pending", {}))}


_KEEP = object()


def _update_manifest(directory: Path, name: str, *, committed=_KEEP, pending=_KEEP) -> None:
    """Set the committed and the pending hash of `name` (None removes it; by default each is kept)."""
    manifest = _read_manifest(directory) or {"files": {}, "pending": {}}
    for key, digest in (("files", committed), ("pending", pending)):
        if digest is None:
            manifest[key].pop(name, None)
        elif digest is not _KEEP:
            manifest[key][name] = digest
    text = json.dumps({"algorithm": "sha256", **manifest}, indent=1, sort_keys=True) + "\n"
    atomic_write_text(directory / MANIFEST_FILE, text)


def verify(path: str | os.PathLike) -> None:
    """Check `path` against its directory's manifest; raise CorruptFileError naming it and the last good
    checkpoint when it does not match. Files of a directory without a manifest are loaded with a warning."""
    path = Path(path)
    manifest = _read_manifest(path.parent)
    if manifest is None or not ({path.name} & (manifest["files"].keys() | manifest["pending"].keys())):
        where = path.parent if manifest is None else path
        if where not in _warned_unverified:
            _warned_unverified.add(where)
            logger.warning("%s has no %s entry (written before manifests, or by another tool); loading it "
                           "unverified", where, MANIFEST_FILE)
        return
    accepted = {manifest["files"].get(path.name), manifest["pending"].get(path.name)} - {None}
    if sha256_of(path) not in accepted:
        raise CorruptFileError(
            f"{path} does not match the SHA-256 recorded in {path.parent / MANIFEST_FILE} when it was written "
            f"(the file is corrupt, truncated or was changed since); {_last_good_hint(path)}"
        )


def _step_number(path: Path) -> int:
    found = re.search(r"(\d+)", path.stem)
    return int(found.group(1)) if found else -1


def _last_good_hint(bad: Path) -> str:
    """Where the newest weights that still match their manifest are, as the end of an error message."""
    root = bad.parent.parent if bad.parent.name in ("checkpoints", "snapshots") else bad.parent
    candidates = sorted((root / "checkpoints").glob("step-*.safetensors"), key=_step_number, reverse=True)
    for candidate in [*candidates, root / "model.safetensors"]:
        if candidate.resolve() == bad.resolve() or not candidate.is_file():
            continue
        manifest = _read_manifest(candidate.parent)
        if manifest and sha256_of(candidate) == manifest["files"].get(candidate.name):
            if bad.suffix != ".safetensors":  # train_state.pt: the optimizer state is gone, the weights are not
                return (f"the last good checkpoint is {candidate} (weights only: resuming needs the lost optimizer "
                        "state, so start a new run from those weights)")
            return (f"the last good checkpoint is {candidate} (load it with --weights "
                    f"{candidate.relative_to(root)}, or copy it over {bad.name})")
    return "no other weights in this run match their manifest; train again or restore the file from a backup"
