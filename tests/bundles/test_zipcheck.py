"""Tests of spine_monai.bundle.zipcheck: malicious zips are refused before anything is written, good ones install."""

from __future__ import annotations

import inspect
import json
import logging
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from spine_monai.bundle import zipcheck
from spine_monai.bundle.zipcheck import BundleZipError, install_bundle, validate_bundle_zip

NAME = "toy_spine_mri_segmentation"
META = {
    "name": "Toy spine MRI segmentation",
    "version": "0.1.0",
    "changelog": {"0.1.0": "first version"},
    "network_data_format": {"inputs": {"image": {"type": "image"}}, "outputs": {"pred": {"type": "image"}}},
}
MODEL = bytes(range(256)) * 16  # 4096 bytes


def _good_members() -> dict[str, bytes]:
    return {
        f"{NAME}/configs/metadata.json": json.dumps(META).encode(),
        # a dotted target: a bare one would make the audit import all of monai (slow) to look it up
        f"{NAME}/configs/inference.json": b'{"network_def": {"_target_": "monai.networks.nets.BasicUNet"}}',
        f"{NAME}/models/model.pt": MODEL,
        f"{NAME}/docs/README.md": b"# toy\n",
    }


def _write(path: Path, members: dict[str, bytes] | list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in items:
            zf.writestr(name, data)
    return path


def _zip(tmp_path: Path, extra: list[tuple[str | zipfile.ZipInfo, bytes]] = (), drop: str | None = None) -> Path:
    members = [(k, v) for k, v in _good_members().items() if k != drop] + list(extra)
    return _write(tmp_path / f"{NAME}_v0.1.0.zip", members)


def _special(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix
    info.external_attr = mode << 16
    return info


def _meta(tmp_path: Path, meta: object) -> Path:
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return _zip(tmp_path, [(f"{NAME}/configs/metadata.json", raw)], drop=f"{NAME}/configs/metadata.json")


def _without(key: str) -> dict:
    return {k: v for k, v in META.items() if k != key}


EVIL_CONFIG = {
    "imports": ["$import os"],
    "boom": {"_target_": "os.system", "command": "touch pwned"},
    "run": ["$__import__('subprocess').call(['touch', 'pwned'])"],
}


def _config(tmp_path: Path, raw: bytes, member: str = "configs/inference.json") -> Path:
    path = f"{NAME}/{member}"
    return _zip(tmp_path, [(path, raw)], drop=path)


def _claim(path: Path, entries: int) -> Path:
    """Make the end-of-central-directory record claim ``entries`` members (the directory itself is unchanged)."""
    raw = bytearray(path.read_bytes())
    end = raw.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", raw, end + 8, entries, entries)
    path.write_bytes(bytes(raw))
    return path


def _zeros(tmp_path: Path, n: int) -> Path:
    """``n`` members of exactly 1 MiB of zeros: each below the per-member ratio check, together a bomb."""
    return _zip(tmp_path, [(f"{NAME}/data/z{i}.bin", bytes(1024**2)) for i in range(n)])


# Each case: (builder of the bad zip, keyword limits, expected message fragment).
BAD: dict[str, tuple[Callable[[Path], Path], dict, str]] = {
    "absolute": (lambda t: _zip(t, [("/etc/evil", b"x")]), {}, "absolute path"),
    "drive_letter": (lambda t: _zip(t, [("C:/evil", b"x")]), {}, "absolute path"),
    "backslash": (lambda t: _zip(t, [(f"{NAME}\\..\\evil", b"x")]), {}, "backslash"),
    "dotdot": (lambda t: _zip(t, [("../evil", b"x")]), {}, "'..'"),
    "nested_dotdot": (lambda t: _zip(t, [(f"{NAME}/../../evil", b"x")]), {}, "'..'"),
    "symlink": (lambda t: _zip(t, [(_special(f"{NAME}/link", stat.S_IFLNK | 0o777), b"/etc/passwd")]), {}, "symbolic"),
    "fifo": (lambda t: _zip(t, [(_special(f"{NAME}/fifo", stat.S_IFIFO | 0o644), b"")]), {}, "not a regular"),
    "outside_folder": (lambda t: _zip(t, [("README.md", b"x")]), {}, "outside the single top-level folder"),
    "two_top_folders": (lambda t: _zip(t, [("other/x.txt", b"x")]), {}, "more than one top-level folder"),
    "too_many": (lambda t: _zip(t), {"max_members": 3}, "max_members"),
    "member_too_big": (lambda t: _zip(t), {"max_member_bytes": 1000}, "max_member_bytes"),
    "total_too_big": (lambda t: _zip(t), {"max_total_bytes": 4200}, "max_total_bytes"),
    "ratio": (lambda t: _zip(t, [(f"{NAME}/models/zeros.bin", bytes(2 * 1024**2))]), {}, "compression ratio"),
    "duplicate_exact": (lambda t: _zip(t, [(f"{NAME}/docs/README.md", b"y")]), {}, "duplicate"),
    "duplicate_case": (lambda t: _zip(t, [(f"{NAME}/docs/readme.md", b"y")]), {}, "duplicate"),
    "file_and_folder": (lambda t: _zip(t, [(f"{NAME}/docs/README.md/x", b"y")]), {}, "both as a file and"),
    "missing_metadata": (lambda t: _zip(t, drop=f"{NAME}/configs/metadata.json"), {}, "missing"),
    "malformed_json": (lambda t: _meta(t, b'{"version": "0.1.0",'), {}, "not valid UTF-8 JSON"),
    "json_not_object": (lambda t: _meta(t, ["0.1.0"]), {}, "instead of an object"),
    "no_version": (lambda t: _meta(t, _without("version")), {}, "'version'"),
    "changelog_lacks_version": (lambda t: _meta(t, {**META, "changelog": {"0.0.1": "x"}}), {}, "'changelog'"),
    "no_network_data_format": (lambda t: _meta(t, _without("network_data_format")), {}, "network_data_format"),
    "not_a_zip": (lambda t: _not_a_zip(t), {}, "not a valid zip"),
    "truncated": (lambda t: _truncate(_zip(t)), {}, "not a valid zip"),
    "file_name_mismatch": (lambda t: _zip(t).rename(t / f"{NAME}_v0.2.0.zip"), {}, "file name says"),
    "overlapping_entries": (lambda t: _overlap(_zip(t)), {}, "overlaps"),
    "end_record_lies_low": (lambda t: _claim(_zip(t), 1), {}, "end record claims 1 members, the central directory"),
    "end_record_lies_past_limit": (lambda t: _claim(_zip(t), 1), {"max_members": 3}, "4 members > --max_members 3"),
    "total_ratio": (lambda t: _zeros(t, 10), {}, r"expands \d+:1 in total"),
    "long_component": (lambda t: _zip(t, [(f"{NAME}/docs/{'a' * 256}.md", b"x")]), {}, "component of 259 bytes > 255"),
    "long_name": (lambda t: _zip(t, [(f"{NAME}/" + "/".join(["d" * 200] * 21), b"x")]), {}, r"name of \d+ bytes > 40"),
    "config_target_os_system": (lambda t: _config(t, json.dumps(EVIL_CONFIG).encode()), {}, "pass --trust"),
    "config_yaml": (lambda t: _config(t, b"x: $__import__('os')\n", "configs/extra.yaml"), {}, "extra.yaml: x: "),
    "config_not_json": (lambda t: _config(t, b'{"a": '), {}, "inference.json'.*not valid UTF-8 JSON"),
    "config_duplicate_key": (lambda t: _config(t, b'{"a": 1, "a": "$os.system(1)"}'), {}, "duplicate key 'a'"),
}


def _not_a_zip(folder: Path) -> Path:
    path = folder / f"{NAME}_v0.1.0.zip"
    path.write_bytes(b"not a zip " * 100)
    return path


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _central_entry(raw: bytes, name: str) -> int:
    """Offset of the central-directory header of member ``name``."""
    pos = raw.find(b"PK\x01\x02")
    while pos != -1:
        n = struct.unpack_from("<H", raw, pos + 28)[0]
        if raw[pos + 46 : pos + 46 + n] == name.encode():
            return pos
        pos = raw.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(name)


def _overlap(path: Path) -> Path:
    """Point the README's central entry at model.pt's local header: two entries share one data block."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        model_offset = zf.getinfo(f"{NAME}/models/model.pt").header_offset
    struct.pack_into("<I", raw, _central_entry(bytes(raw), f"{NAME}/docs/README.md") + 42, model_offset)
    path.write_bytes(bytes(raw))
    return path


def _lie(path: Path, member: str, declared: int, crc: int | None = None) -> Path:
    """Patch the declared uncompressed size (central and local header) and optionally the CRC of ``member``."""
    raw = bytearray(path.read_bytes())
    cen = _central_entry(bytes(raw), member)
    local = struct.unpack_from("<I", raw, cen + 42)[0]
    struct.pack_into("<I", raw, cen + 24, declared)
    struct.pack_into("<I", raw, local + 22, declared)
    if crc is not None:
        struct.pack_into("<I", raw, cen + 16, crc)
        struct.pack_into("<I", raw, local + 14, crc)
    path.write_bytes(bytes(raw))
    return path


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")
@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("bundle_dir_exists", [True, False])
def test_bad_zip_refused_and_nothing_written(tmp_path, case, bundle_dir_exists):
    build, limits, match = BAD[case]
    src = tmp_path / "src"
    src.mkdir()
    zip_path = Path(build(src))
    bundle_dir = tmp_path / "bundles"
    if bundle_dir_exists:
        bundle_dir.mkdir()
    with pytest.raises(ValueError, match=match) as err:
        install_bundle(str(zip_path), str(bundle_dir), **limits)
    assert isinstance(err.value, BundleZipError) and zip_path.name in str(err.value)
    lines = str(err.value).splitlines()
    assert len(lines) == (2 if case == "config_target_os_system" else 1)  # one line, or one per audit finding
    assert bundle_dir.exists() == bundle_dir_exists and _tree(bundle_dir) == []
    with pytest.raises(ValueError, match=match):
        validate_bundle_zip(zip_path, **limits)


@pytest.mark.parametrize(
    "case, member",
    [("absolute", "/etc/evil"), ("nested_dotdot", f"{NAME}/../../evil"), ("symlink", f"{NAME}/link")],
)
def test_error_names_offending_member(tmp_path, case, member):
    zip_path = BAD[case][0](tmp_path)
    with pytest.raises(ValueError) as err:
        validate_bundle_zip(zip_path)
    assert repr(member) in str(err.value)


def test_good_zip_installs_and_files_match(tmp_path, caplog):
    zip_path = _zip(tmp_path, [(f"{NAME}/models/", b"")])  # an explicit folder entry is fine
    name, infos = validate_bundle_zip(zip_path)
    assert name == NAME and len(infos) == 5
    bundle_dir = tmp_path / "new" / "bundles"  # created on demand
    with caplog.at_level(logging.WARNING, logger="spine_monai.bundle.zipcheck"):
        out = install_bundle(zip_path, bundle_dir)
    assert "execute Python" in caplog.text
    assert out == str(bundle_dir / NAME)
    for member, data in _good_members().items():
        assert (bundle_dir / member).read_bytes() == data
    assert os.listdir(bundle_dir) == [NAME]  # no temporary folder left behind
    files = [p for p in Path(out).rglob("*") if p.is_file()]
    assert len(files) == 4 and not any(p.is_symlink() for p in Path(out).rglob("*"))


def test_existing_target_refused_then_overwritten(tmp_path):
    zip_path = _zip(tmp_path)
    bundle_dir = tmp_path / "bundles"
    (bundle_dir / NAME).mkdir(parents=True)
    (bundle_dir / NAME / "old.txt").write_text("keep me")
    with pytest.raises(ValueError, match="already exists"):
        install_bundle(zip_path, bundle_dir)
    assert _tree(bundle_dir) == [NAME, f"{NAME}/old.txt"]  # untouched
    install_bundle(zip_path, bundle_dir, overwrite=True)
    assert not (bundle_dir / NAME / "old.txt").exists()
    assert (bundle_dir / NAME / "models" / "model.pt").read_bytes() == MODEL
    assert os.listdir(bundle_dir) == [NAME]


def test_failed_overwrite_keeps_previous_install(tmp_path):
    bundle_dir = tmp_path / "bundles"
    (bundle_dir / NAME).mkdir(parents=True)
    (bundle_dir / NAME / "old.txt").write_text("keep me")
    lying = _lie(_zip(tmp_path), f"{NAME}/models/model.pt", 100)
    with pytest.raises(ValueError, match="corrupt data"):
        install_bundle(lying, bundle_dir, overwrite=True)
    assert _tree(bundle_dir) == [NAME, f"{NAME}/old.txt"]


def test_declared_size_lie_detected_during_extraction(tmp_path):
    # The member really inflates to 4096 bytes but declares 100: the static checks cannot see it (validate passes);
    # the stdlib stops the stream at 100 bytes and the CRC no longer matches -> refused, nothing written.
    zip_path = _lie(_zip(tmp_path), f"{NAME}/models/model.pt", 100)
    validate_bundle_zip(zip_path)
    bundle_dir = tmp_path / "new" / "bundles"
    with pytest.raises(ValueError, match=f"{NAME}/models/model.pt.*corrupt data"):
        install_bundle(zip_path, bundle_dir)
    assert not (tmp_path / "new").exists()  # folders created on the way are removed again


def test_declared_size_lie_with_matching_crc_never_writes_more_than_declared(tmp_path):
    # A forger who also fixes the CRC gets a truncated file of exactly the declared size: limits still hold.
    zip_path = _lie(_zip(tmp_path), f"{NAME}/models/model.pt", 100, crc=zlib.crc32(MODEL[:100]))
    out = Path(install_bundle(zip_path, tmp_path / "bundles"))
    assert (out / "models" / "model.pt").read_bytes() == MODEL[:100]


def test_stream_shorter_than_declared_refused(tmp_path):
    zip_path = _lie(_zip(tmp_path), f"{NAME}/models/model.pt", 8192)
    bundle_dir = tmp_path / "bundles"
    with pytest.raises(ValueError, match="4096 bytes, declared 8192|corrupt data"):
        install_bundle(zip_path, bundle_dir)
    assert not bundle_dir.exists()


@pytest.mark.parametrize("limit", ["max_members", "max_total_bytes", "max_member_bytes"])
def test_bad_limits(tmp_path, limit):
    with pytest.raises(ValueError, match=limit):
        validate_bundle_zip(_zip(tmp_path), **{limit: 0})


def test_missing_zip(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        install_bundle(tmp_path / "nope.zip", tmp_path / "bundles")
    assert not (tmp_path / "bundles").exists()


def test_audit_refusal_lists_each_finding_and_trust_installs(tmp_path, caplog):
    zip_path = _config(tmp_path, json.dumps(EVIL_CONFIG).encode())
    bundle_dir = tmp_path / "bundles"
    with pytest.raises(BundleZipError) as err:
        install_bundle(zip_path, bundle_dir)
    first, second = str(err.value).splitlines()
    assert first.startswith(f"refusing bundle zip {zip_path}: 2 config entries leave the allow-list (pass --trust")
    assert f"{NAME}/configs/inference.json: boom#_target_: " in first and first.endswith("os.system")
    assert second.startswith(f"{NAME}/configs/inference.json: run#0: ") and "__import__" in second
    assert not bundle_dir.exists() and not (tmp_path / "pwned").exists()
    with caplog.at_level(logging.WARNING, logger="spine_monai.bundle.zipcheck"):
        out = Path(install_bundle(zip_path, bundle_dir, trust=True))
    assert "2 config entries leave the allow-list" in caplog.text and "boom#_target_" in caplog.text
    assert json.loads((out / "configs" / "inference.json").read_text()) == EVIL_CONFIG
    assert validate_bundle_zip(zip_path, trust=True)[0] == NAME


def test_audit_list_is_capped(tmp_path):
    config = {f"k{i}": f"$eval('{i}')" for i in range(30)}
    with pytest.raises(BundleZipError) as err:
        validate_bundle_zip(_config(tmp_path, json.dumps(config).encode()))
    lines = str(err.value).splitlines()
    assert "30 config entries" in lines[0] and len(lines) == zipcheck.MAX_LISTED_FINDINGS + 1
    assert lines[-1] == f"... and {30 - zipcheck.MAX_LISTED_FINDINGS} more"


def test_oversized_config_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(zipcheck, "CONFIG_MAX_BYTES", 300)  # metadata.json (about 200 bytes) still fits
    zip_path = _config(tmp_path, json.dumps({"pad": "x" * 400}).encode())
    with pytest.raises(BundleZipError, match=r"inference.json'.*bytes > 300 \(too large to check\)"):
        validate_bundle_zip(zip_path)


def test_cli_refuses_without_trust_and_installs_with_it(tmp_path, capsys):
    from spine_monai.cli import main

    zip_path = _config(tmp_path, json.dumps(EVIL_CONFIG).encode())
    bundle_dir = tmp_path / "bundles"
    with pytest.raises(SystemExit) as exc:
        main(["install-bundle", str(zip_path), "--bundle_dir", str(bundle_dir)])
    assert exc.value.code == 2 and "pass --trust" in capsys.readouterr().err
    assert not bundle_dir.exists()
    main(["install-bundle", str(zip_path), "--bundle_dir", str(bundle_dir), "--trust"])
    assert (bundle_dir / NAME / "configs" / "inference.json").is_file()


@pytest.mark.parametrize("func", [install_bundle, validate_bundle_zip])
def test_default_limits_fit_a_bundle(func):
    params = inspect.signature(func).parameters
    assert params["max_total_bytes"].default <= 1024**3 and params["max_member_bytes"].default <= 1024**3
    assert params["max_total_ratio"].default <= 50 and params["trust"].default is False


def test_many_small_members_bomb_refused_by_total_ratio_only(tmp_path):
    zip_path = _zeros(tmp_path, 10)
    validate_bundle_zip(zip_path, max_total_ratio=10_000)  # each member alone passes
    with pytest.raises(BundleZipError, match="in total"):
        validate_bundle_zip(zip_path)


def test_target_path_too_long_refused_in_one_line(tmp_path):
    zip_path = _zip(tmp_path, [(f"{NAME}/docs/" + "/".join(["p" * 250] * 2) + ".md", b"x")])
    validate_bundle_zip(zip_path)  # fine as a zip: only the install location makes it too long
    bundle_dir = tmp_path.joinpath(*["d" * 250] * 14)
    with pytest.raises(BundleZipError, match="target path of .* bytes >= PATH_MAX") as err:
        install_bundle(zip_path, bundle_dir)
    assert "\n" not in str(err.value) and not (tmp_path / ("d" * 250)).exists()


def test_bundle_name_too_long_for_the_temporary_folder(tmp_path):
    name = "b" * 240
    path = _write(tmp_path / "long.zip", {f"{name}/{k.split('/', 1)[1]}": v for k, v in _good_members().items()})
    with pytest.raises(BundleZipError, match="bundle name too long") as err:
        install_bundle(path, tmp_path / "bundles")
    assert "\n" not in str(err.value) and not (tmp_path / "bundles").exists()


def test_unwritable_bundle_dir_refused_in_one_line(tmp_path, monkeypatch):
    def denied(*args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(zipcheck.tempfile, "mkdtemp", denied)  # as on a read-only folder (root ignores chmod)
    bundle_dir = tmp_path / "new" / "bundles"
    with pytest.raises(BundleZipError, match=r"cannot write to .*bundles \(PermissionError: Permission denied\)") as e:
        install_bundle(_zip(tmp_path), bundle_dir)
    assert "\n" not in str(e.value) and not (tmp_path / "new").exists()  # the folders it made are removed again


def test_bundle_dir_under_a_regular_file_refused_in_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BundleZipError, match="cannot write to") as err:
        install_bundle(_zip(tmp_path), blocker / "bundles")
    assert "\n" not in str(err.value) and blocker.read_text() == "not a folder"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_bundle_dir_refused(tmp_path):
    bundle_dir = tmp_path / "bundles"
    bundle_dir.mkdir()
    bundle_dir.chmod(0o555)
    try:
        with pytest.raises(BundleZipError, match="cannot write to"):
            install_bundle(_zip(tmp_path), bundle_dir)
    finally:
        bundle_dir.chmod(0o755)
    assert _tree(bundle_dir) == []


def test_killed_install_leftover_removed_by_next_install(tmp_path):
    bundle_dir = tmp_path / "bundles"
    bundle_dir.mkdir()
    stale = Path(tempfile.mkdtemp(prefix=f".{NAME}.", suffix=".partial", dir=bundle_dir))  # as a killed run left it
    (stale / NAME / "models").mkdir(parents=True)
    (stale / NAME / "models" / "model.pt").write_bytes(b"half")
    other = Path(tempfile.mkdtemp(prefix=".other_bundle.", suffix=".partial", dir=bundle_dir))  # another bundle's
    lookalike = bundle_dir / f".{NAME}.keep.partial"  # not a mkdtemp name
    lookalike.mkdir()
    install_bundle(_zip(tmp_path), bundle_dir)
    assert sorted(os.listdir(bundle_dir)) == sorted([NAME, other.name, lookalike.name])
