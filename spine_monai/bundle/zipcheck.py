"""Validate an untrusted model-zoo style bundle zip before extracting it, then install it atomically.

Not tied to a paper: this implements the sharing conventions of the MONAI Model Zoo (Project-MONAI/model-zoo,
``<name>_v<version>.zip`` holding the folder ``<name>/``; ``configs/metadata.json`` with ``version``, a
``changelog`` that contains that version, and ``network_data_format``) and the rule of the project's bundle guide
(BUNDLES.md, "Sharing as a zip") that a zip from someone else is untrusted input.

Checks (all before anything is written; every refusal is a one-line ``ValueError`` naming the zip and the member,
except the config audit, which lists one line per refused config entry):
- the file opens as a zip (``zipfile.BadZipFile`` and friends become ``ValueError``), at most ``max_members``
  entries: counted from the end-of-central-directory record before the member list is parsed, then again as the
  central directory is actually read (which does not trust the record's count), and the two must agree;
- member names: no absolute path (``/x``, ``C:``, ``\\\\server``), no backslash, no ``..``/``.``/empty component,
  no control character or one of ``<>:"|?*`` (portable names only), no component over 255 bytes and no name over
  4096 bytes (and, when installing, no target path over the file system's ``PC_PATH_MAX``); all under one top-level
  folder ``<name>/`` whose name is a plain identifier, which equals the name in the zip's file name when that
  follows ``<name>_v<version>.zip`` (and ``version`` then equals the metadata's);
- member types: regular files and folders only (no symlink, device, FIFO: Unix mode in ``external_attr``; no
  Windows reparse point), no encryption, compression stored/deflate/bzip2/lzma only;
- no duplicate names (compared case-insensitively, so a case-insensitive file system cannot merge two), no file
  that is also a folder, no overlapping member data (the overlapping-entries zip bomb);
- sizes: each declared uncompressed size <= ``max_member_bytes`` (1 GiB), their sum <= ``max_total_bytes``
  (1 GiB) and the free disk space, compression ratio <= ``max_ratio`` (200) for members above 1 MiB and, for the
  whole zip once it expands past 8 MiB, <= ``max_total_ratio`` (50);
- ``configs/metadata.json`` present, UTF-8 JSON object with ``version`` (non-empty string), ``changelog`` (object
  containing ``version``) and ``network_data_format`` (object with ``inputs`` and ``outputs`` objects);
- configs are code: every ``configs/**/*.json|yaml|yml`` member (at most 16 MiB each, read through the same handle,
  duplicate JSON keys refused) is audited by :func:`spine_monai.bundle.config_audit.audit_bundle_configs`; each
  ``_target_`` or ``$`` expression that leaves its allow-list is listed and the zip refused, unless ``trust=True``
  (``--trust``), which logs the list as a warning and installs.

Installing also refuses, with one line and nothing written, an existing target (without ``overwrite``), too little
disk space, and a ``bundle_dir`` that cannot be written (probed by really creating the temporary folder, since
``os.access`` says yes to root on a read-only mount). A hidden ``bundle_dir/.<name>.XXXXXXXX.partial`` folder left
behind by a killed install of the same bundle is removed by the next install of that bundle: two installs of one
bundle into one folder at the same time are not supported (the second could remove the first one's folder).

Extraction does not trust the declared sizes: each member is streamed and the copy stops with an error as soon as it
yields more bytes than declared (or ends short). The standard library already truncates a stream at the declared
size and then fails the CRC check, and that error is turned into the same ``ValueError``. Files are written with
exclusive create (``"xb"``) into a temporary folder next to the target, which is renamed into place only after every
member was written; on any failure the temporary folder is removed, so nothing is left under ``bundle_dir``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

from spine_monai.bundle.config_audit import Finding, audit_bundle_configs

__all__ = ["SECURITY_WARNING", "BundleZipError", "install_bundle", "validate_bundle_zip"]

logger = logging.getLogger(__name__)

SECURITY_WARNING = (
    "MONAI bundle configs execute Python code (`$` expressions and `_target_` components) when they are parsed or "
    "run: only run bundles from sources you trust, and read configs/*.json before running this one."
)
METADATA = "configs/metadata.json"
METADATA_MAX_BYTES = 16 * 1024**2
CONFIG_MAX_BYTES = 16 * 1024**2
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
RATIO_MIN_BYTES = 1024**2
TOTAL_RATIO_MIN_BYTES = 8 * 1024**2
NAME_MAX = 255
PATH_MAX = 4096
MAX_LISTED_FINDINGS = 20
_CHUNK = 1024**2
_ZIP_FILE_NAME = re.compile(r"^(?P<name>.+)_v(?P<version>[0-9][0-9A-Za-z.+\-]*)\.zip$")
_BUNDLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_BAD_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*\\]')
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, OSError, ValueError, RuntimeError)
_DOS_REPARSE_POINT = 0x400
_MKDTEMP_RANDOM = 8  # length of the random part of tempfile.mkdtemp's names


class BundleZipError(ValueError):
    """A refused bundle zip; a ``ValueError`` whose message names the zip and the offending member."""


def _fail(zip_path: Path, member: str | None, why: str) -> BundleZipError:
    where = f"{zip_path}" if member is None else f"{zip_path}: member {member!r}"
    return BundleZipError(f"refusing bundle zip {where}: {why}")


def _open_zip(fh: IO[bytes], zip_path: Path, max_members: int) -> tuple[zipfile.ZipFile, int]:
    """Open ``fh`` as a zip after checking the entry count of its end record (so a huge directory is never parsed).

    Returns the zip and the entry count its end record claims (checked against the real list later).
    """
    try:
        endrec = zipfile._EndRecData(fh)  # private but stable since Python 2; reads only the end records
        if endrec is None:
            raise zipfile.BadZipFile("no end-of-central-directory record")
        claimed = endrec[zipfile._ECD_ENTRIES_TOTAL]
        if claimed > max_members:
            raise _fail(zip_path, None, f"{claimed} members > --max_members {max_members}")
        fh.seek(0)
        return zipfile.ZipFile(fh), claimed
    except BundleZipError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, OverflowError) as e:
        raise _fail(zip_path, None, f"not a valid zip file ({type(e).__name__}: {e})") from e


def _check_name(zip_path: Path, info: zipfile.ZipInfo) -> list[str]:
    """Return the path components of a safe member name, else raise."""
    name = info.filename
    for raw in {name, info.orig_filename}:
        if raw.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", raw):
            raise _fail(zip_path, raw, "absolute path")
        if "\\" in raw:
            raise _fail(zip_path, raw, "backslash in name (Windows path separator)")
        if _BAD_CHARS.search(raw):
            raise _fail(zip_path, raw, "control or non-portable character in name")
    parts = name[:-1].split("/") if info.is_dir() else name.split("/")
    if len(os.fsencode(name)) > PATH_MAX:
        raise _fail(zip_path, name[:60] + "...", f"name of {len(os.fsencode(name))} bytes > {PATH_MAX}")
    long = next((p for p in parts if len(os.fsencode(p)) > NAME_MAX), None)
    if long is not None:
        shown = name if len(name) <= 120 else name[:117] + "..."
        raise _fail(zip_path, shown, f"path component of {len(os.fsencode(long))} bytes > {NAME_MAX}")
    if ".." in parts:
        raise _fail(zip_path, name, "'..' component (path traversal)")
    if any(p in ("", ".") for p in parts):
        raise _fail(zip_path, name, "empty or '.' path component")
    return parts


def _check_type(zip_path: Path, info: zipfile.ZipInfo) -> None:
    mode = info.external_attr >> 16
    fmt = stat.S_IFMT(mode)
    expected = stat.S_IFDIR if info.is_dir() else stat.S_IFREG
    if stat.S_ISLNK(mode):
        raise _fail(zip_path, info.filename, "symbolic link")
    if fmt not in (0, expected) or info.external_attr & _DOS_REPARSE_POINT:
        raise _fail(zip_path, info.filename, f"not a regular file or folder (mode {oct(mode)})")
    if info.flag_bits & 0x1:
        raise _fail(zip_path, info.filename, "encrypted member")
    if info.compress_type not in _METHODS:
        raise _fail(zip_path, info.filename, f"unsupported compression method {info.compress_type}")
    if info.is_dir() and info.file_size:
        raise _fail(zip_path, info.filename, "folder entry with data")


def _check_members(
    zip_path: Path, infos: list[zipfile.ZipInfo], limits: dict[str, float], end: int, claimed: int
) -> str:
    """Check names, types, duplicates, overlaps and sizes; return the single top-level folder name."""
    if len(infos) > limits["max_members"]:  # as read: the end record's count may lie
        raise _fail(zip_path, None, f"{len(infos)} members > --max_members {limits['max_members']}")
    if len(infos) != claimed:
        raise _fail(zip_path, None, f"end record claims {claimed} members, the central directory holds {len(infos)}")
    tops, seen, files, dirs, total = set(), set(), set(), set(), 0
    for info in infos:
        _check_type(zip_path, info)
        parts = _check_name(zip_path, info)
        if len(parts) == 1 and not info.is_dir():
            raise _fail(zip_path, info.filename, "file outside the single top-level folder <name>/")
        tops.add(parts[0])
        if len(tops) > 1:
            raise _fail(zip_path, info.filename, f"more than one top-level folder: {sorted(tops)}")
        key = "/".join(parts).casefold()
        if key in seen:
            raise _fail(zip_path, info.filename, "duplicate name (case-insensitive)")
        seen.add(key)
        (dirs if info.is_dir() else files).add(key)
        dirs.update("/".join(parts[:i]).casefold() for i in range(1, len(parts)))
        if info.file_size > limits["max_member_bytes"]:
            raise _fail(zip_path, info.filename, f"{info.file_size} bytes > max_member_bytes")
        total += info.file_size
        if total > limits["max_total_bytes"]:
            raise _fail(zip_path, info.filename, f"total uncompressed size exceeds --max_total_bytes ({total} bytes)")
        if info.file_size > RATIO_MIN_BYTES and info.file_size > limits["max_ratio"] * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise _fail(zip_path, info.filename, f"compression ratio {ratio:.0f}:1 > {limits['max_ratio']}:1")
    packed = sum(i.compress_size for i in infos)
    if total > TOTAL_RATIO_MIN_BYTES and total > limits["max_total_ratio"] * max(packed, 1):
        ratio = total / max(packed, 1)
        raise _fail(zip_path, None, f"expands {ratio:.0f}:1 in total ({total} bytes) > {limits['max_total_ratio']}:1")
    if files & dirs:
        raise _fail(zip_path, sorted(files & dirs)[0], "name used both as a file and as a folder")
    # Member data must not overlap (30 bytes: fixed part of a local file header) nor run into the central directory.
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.header_offset + 30 + a.compress_size > b.header_offset:
            raise _fail(zip_path, b.filename, f"data overlaps member {a.filename!r} (overlapping-entries zip bomb)")
    if ordered and ordered[-1].header_offset + 30 + ordered[-1].compress_size > end:
        raise _fail(zip_path, ordered[-1].filename, "declared compressed size runs past the member data")
    if not tops:
        raise _fail(zip_path, None, "empty zip")
    name = tops.pop()
    if not _BUNDLE_NAME.match(name):
        raise _fail(zip_path, name, "top-level folder is not a plain bundle name")
    return name


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dst: IO[bytes], zip_path: Path) -> None:
    """Stream one member into ``dst``, refusing more (or fewer) bytes than declared."""
    written = 0
    try:
        with zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > info.file_size:
                    raise _fail(zip_path, info.filename, f"stream exceeds its declared size {info.file_size}")
                dst.write(chunk)
    except BundleZipError:
        raise
    except _READ_ERRORS as e:
        raise _fail(zip_path, info.filename, f"corrupt data ({type(e).__name__}: {e})") from e
    if written != info.file_size:
        raise _fail(zip_path, info.filename, f"stream has {written} bytes, declared {info.file_size}")


def _check_metadata(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], name: str, zip_path: Path) -> dict[str, Any]:
    member = f"{name}/{METADATA}"
    info = next((i for i in infos if i.filename == member and not i.is_dir()), None)
    if info is None:
        raise _fail(zip_path, member, "missing (every bundle needs configs/metadata.json)")
    meta = _read_config(zf, info, zip_path, METADATA_MAX_BYTES)
    if not isinstance(meta, dict):
        raise _fail(zip_path, member, f"JSON {type(meta).__name__} instead of an object")
    version = meta.get("version")
    if not isinstance(version, str) or not version:
        raise _fail(zip_path, member, "'version' missing or not a non-empty string")
    if not isinstance(meta.get("changelog"), dict) or version not in meta["changelog"]:
        raise _fail(zip_path, member, f"'changelog' missing or without an entry for version {version!r}")
    ndf = meta.get("network_data_format")
    if not isinstance(ndf, dict) or not all(isinstance(ndf.get(k), dict) for k in ("inputs", "outputs")):
        raise _fail(zip_path, member, "'network_data_format' missing or without 'inputs' and 'outputs' objects")
    m = _ZIP_FILE_NAME.match(zip_path.name)
    if m and (m["name"], m["version"]) != (name, version):
        raise _fail(zip_path, None, f"file name says {m['name']} v{m['version']}, content is {name} v{version}")
    return meta


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _read_config(zf: zipfile.ZipFile, info: zipfile.ZipInfo, zip_path: Path, cap: int) -> Any:
    """Read and parse one JSON or YAML member of at most ``cap`` bytes (YAML with ``yaml.safe_load``)."""
    if info.file_size > cap:
        raise _fail(zip_path, info.filename, f"{info.file_size} bytes > {cap} (too large to check)")
    buf = io.BytesIO()
    _copy_member(zf, info, buf, zip_path)
    if info.filename.lower().endswith(".json"):
        try:
            return json.loads(buf.getvalue().decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError, int digit limit, duplicate
            raise _fail(zip_path, info.filename, f"not valid UTF-8 JSON ({_first_line(e)})") from e
    try:
        import yaml
    except ImportError as e:
        raise _fail(zip_path, info.filename, "PyYAML is needed to check a YAML config") from e
    try:
        return yaml.safe_load(buf.getvalue().decode("utf-8"))
    except (ValueError, RecursionError, yaml.YAMLError) as e:
        raise _fail(zip_path, info.filename, f"not valid UTF-8 YAML ({_first_line(e)})") from e


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _audit_configs(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], name: str, zip_path: Path) -> list[Finding]:
    prefix = f"{name}/configs/"
    configs = {
        i.filename: _read_config(zf, i, zip_path, CONFIG_MAX_BYTES)
        for i in infos
        if not i.is_dir() and i.filename.startswith(prefix) and i.filename.lower().endswith(CONFIG_SUFFIXES)
    }
    return audit_bundle_configs(configs)


def _refuse_or_warn(zip_path: Path, findings: list[Finding], trust: bool) -> None:
    """Refuse a zip whose configs leave the allow-list (one line per finding), or only warn with ``trust``."""
    if not findings:
        return
    lines = [str(f) for f in findings[:MAX_LISTED_FINDINGS]]
    if len(findings) > MAX_LISTED_FINDINGS:
        lines.append(f"... and {len(findings) - MAX_LISTED_FINDINGS} more")
    head = f"{len(findings)} config entries leave the allow-list"
    if trust:
        logger.warning("installing %s despite: %s (--trust):\n%s", zip_path, head, "\n".join(lines))
        return
    raise _fail(zip_path, None, f"{head} (pass --trust to install anyway): " + "\n".join(lines))


def _limits(
    max_members: int, max_total_bytes: int, max_member_bytes: int, max_ratio: float, max_total_ratio: float
) -> dict[str, float]:
    limits = {
        "max_members": max_members,
        "max_total_bytes": max_total_bytes,
        "max_member_bytes": max_member_bytes,
        "max_ratio": max_ratio,
        "max_total_ratio": max_total_ratio,
    }
    for key, value in limits.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{key} must be a positive number, got {value!r}.")
    return limits


def _validate(
    fh: IO[bytes], zip_path: Path, limits: dict[str, float], trust: bool
) -> tuple[str, list[zipfile.ZipInfo], zipfile.ZipFile]:
    zf, claimed = _open_zip(fh, zip_path, int(limits["max_members"]))
    try:
        infos = zf.infolist()
        name = _check_members(zip_path, infos, limits, zf.start_dir, claimed)
        _check_metadata(zf, infos, name, zip_path)
        _refuse_or_warn(zip_path, _audit_configs(zf, infos, name, zip_path), trust)
    except BaseException:
        zf.close()
        raise
    return name, infos, zf


def validate_bundle_zip(
    zip_path: str | os.PathLike,
    max_members: int = 2000,
    max_total_bytes: int = 1024**3,
    max_member_bytes: int = 1024**3,
    max_ratio: float = 200.0,
    max_total_ratio: float = 50.0,
    trust: bool = False,
) -> tuple[str, list[zipfile.ZipInfo]]:
    """Check an untrusted bundle zip without writing anything (see the module docstring for the checks).

    Args:
        zip_path: the zip file.
        max_members: most entries allowed (files and folders), as the central directory is read.
        max_total_bytes: most uncompressed bytes in total (declared sizes).
        max_member_bytes: most uncompressed bytes of one member (declared size).
        max_ratio: highest uncompressed / compressed ratio for members larger than 1 MiB.
        max_total_ratio: highest uncompressed / compressed ratio of all members together, once they expand past
            8 MiB.
        trust: accept configs whose ``_target_`` or ``$`` entries leave the allow-list (logged as a warning).

    Returns:
        ``(name, members)``: the bundle name (its top-level folder) and the zip's members.

    Raises:
        ValueError: naming the zip and the offending member, for any failed check or a bad limit.
    """
    limits = _limits(max_members, max_total_bytes, max_member_bytes, max_ratio, max_total_ratio)
    path = Path(zip_path)
    if not path.is_file():
        raise _fail(path, None, "no such file")
    with path.open("rb") as fh:
        name, infos, zf = _validate(fh, path, limits, trust)
        zf.close()
    return name, infos


def install_bundle(
    zip_path: str | os.PathLike,
    bundle_dir: str | os.PathLike,
    max_members: int = 2000,
    max_total_bytes: int = 1024**3,
    max_member_bytes: int = 1024**3,
    overwrite: bool = False,
    max_ratio: float = 200.0,
    max_total_ratio: float = 50.0,
    trust: bool = False,
) -> str:
    """Validate ``zip_path`` and extract it to ``bundle_dir/<name>``, all or nothing.

    Validation and extraction read the same open file handle, so swapping the file in between has no effect.
    :data:`SECURITY_WARNING` is logged: the configs passed the audit (or ``trust`` was given), but running a bundle
    still executes its configs' Python.

    Args:
        zip_path: untrusted ``<name>_v<version>.zip`` holding ``<name>/``.
        bundle_dir: folder that receives ``<name>/`` (created when missing).
        max_members: see :func:`validate_bundle_zip`.
        max_total_bytes: see :func:`validate_bundle_zip`.
        max_member_bytes: see :func:`validate_bundle_zip`.
        overwrite: replace an existing ``bundle_dir/<name>`` (swapped only after the new copy is complete).
        max_ratio: see :func:`validate_bundle_zip`.
        max_total_ratio: see :func:`validate_bundle_zip`.
        trust: install even when config entries leave the allow-list (they are logged as a warning); without it
            such a zip is refused with the list.

    Returns:
        The installed bundle folder, ``bundle_dir/<name>``.

    Raises:
        ValueError: for a refused zip (see :func:`validate_bundle_zip`), a stream that lies about its size, an
            existing target without ``overwrite``, too little free disk space, a target path too long for the file
            system or a ``bundle_dir`` that cannot be written. One line (the audit: one per finding); nothing is
            left behind.
    """
    limits = _limits(max_members, max_total_bytes, max_member_bytes, max_ratio, max_total_ratio)
    path, root = Path(zip_path), Path(bundle_dir)
    if not path.is_file():
        raise _fail(path, None, "no such file")
    with path.open("rb") as fh:
        name, infos, zf = _validate(fh, path, limits, trust)
        with zf:
            target = root / name
            if os.path.lexists(target) and not overwrite:
                raise _fail(path, None, f"target {target} already exists (pass --overwrite to replace it)")
            if root.exists() and not root.is_dir():
                raise _fail(path, None, f"bundle_dir {root} is not a folder")
            existing = next(p for p in (root.absolute(), *root.absolute().parents) if p.exists())
            _check_path_lengths(path, root, existing, name, infos)
            needed = sum(i.file_size for i in infos)
            if shutil.disk_usage(existing).free < needed:
                raise _fail(path, None, f"{needed} bytes do not fit on the disk of {existing}")
            logger.warning("%s (bundle %s from %s)", SECURITY_WARNING, name, path)
            created = [p for p in (root.absolute(), *root.absolute().parents) if not p.exists()]  # deepest first
            tmp: Path | None = None
            try:
                root.mkdir(parents=True, exist_ok=True)
                _remove_stale_partials(root, name)
                tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=root))  # the write probe
                _extract_all(zf, infos, tmp, path)
                _swap_into_place(tmp / name, target, tmp)
            except OSError as e:  # read-only or full file system, permissions, a file where a folder should be
                raise _fail(path, None, f"cannot write to {root} ({type(e).__name__}: {e.strerror or e})") from e
            finally:
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)  # after success it holds only the replaced old copy
                if not os.path.lexists(target):
                    for folder in created:  # only folders this call created, and only while empty
                        with contextlib.suppress(OSError):
                            folder.rmdir()
    logger.info("installed bundle %s into %s", name, target)
    return str(target)


def _check_path_lengths(zip_path: Path, root: Path, existing: Path, name: str, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse member paths that the file system under ``root`` could not create (one line, before any write)."""
    try:
        name_max = min(NAME_MAX, os.pathconf(existing, "PC_NAME_MAX"))
        path_max = min(PATH_MAX, os.pathconf(existing, "PC_PATH_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no limit reported
        name_max, path_max = NAME_MAX, PATH_MAX
    tmp_name = f".{name}.{'x' * _MKDTEMP_RANDOM}.partial"
    if len(os.fsencode(tmp_name)) > name_max:
        raise _fail(zip_path, name, f"bundle name too long for a {name_max}-byte file name")
    for info in infos:
        if any(len(os.fsencode(p)) > name_max for p in info.filename.rstrip("/").split("/")):
            raise _fail(zip_path, info.filename, f"path component longer than {name_max} bytes")
    # the longest path written is the member inside the temporary folder (the final one is shorter)
    longest = max(infos, key=lambda i: len(os.fsencode(i.filename)))
    full = len(os.fsencode(root.absolute() / tmp_name / longest.filename.rstrip("/")))
    if full >= path_max:
        shown = longest.filename if len(longest.filename) <= 120 else longest.filename[:117] + "..."
        raise _fail(zip_path, shown, f"target path of {full} bytes >= PATH_MAX {path_max} under {root}")


def _remove_stale_partials(root: Path, name: str) -> None:
    """Remove ``root/.<name>.XXXXXXXX.partial`` folders left by a killed install of the same bundle."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.[a-z0-9_]{{{_MKDTEMP_RANDOM}}}\.partial$")
    for entry in os.scandir(root):
        if pattern.match(entry.name) and entry.is_dir(follow_symlinks=False):
            logger.info("removing %s, left behind by an interrupted install", entry.path)
            shutil.rmtree(entry.path, ignore_errors=True)


def _extract_all(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], tmp: Path, zip_path: Path) -> None:
    base = tmp.resolve()
    for info in infos:
        dest = tmp.joinpath(*info.filename.rstrip("/").split("/"))
        if not dest.resolve().is_relative_to(base):  # defence in depth; names were validated already
            raise _fail(zip_path, info.filename, "resolves outside the target folder")
        if info.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("xb") as dst:  # exclusive create: never follows or reuses an existing entry
            _copy_member(zf, info, dst, zip_path)


def _swap_into_place(new: Path, target: Path, tmp: Path) -> None:
    """Rename ``new`` to ``target``; an existing target is moved into ``tmp`` first (deleted with it)."""
    backup = tmp / ".previous"
    had_target = os.path.lexists(target)
    if had_target:
        os.rename(target, backup)  # renames a symlink itself, never what it points to
    try:
        os.rename(new, target)
    except BaseException:
        if had_target:
            os.rename(backup, target)
        raise
