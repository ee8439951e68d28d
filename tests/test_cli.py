"""The CLI (spine_monai.cli): help for every command without its arguments, one-line errors, one log format."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest

from spine_monai import cli

COMMANDS = ["phantoms", "datalist", "demo", "crossval", "compare", "bench", "package", "install-bundle", "segment",
            "export"]


def _run(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "spine_monai", *args]
    return subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120)


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        cli.main(list(argv))
        code = 0
    except SystemExit as err:
        code = int(err.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_top_level_help_lists_every_command_with_one_line():
    for argv in (["--help"], [], ["-h"]):
        proc = _run(*argv)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        for name in COMMANDS:
            rows = [ln for ln in lines if re.match(rf"  {re.escape(name)}\s+\S", ln)]
            assert len(rows) == 1, (name, proc.stdout)
        # every command's summary fits one line; continuation lines are only wrapping, not other commands
        assert "COMMAND --help" in proc.stdout


@pytest.mark.parametrize("argv", [["segment", "--help"], ["crossval", "-h"], ["install-bundle", "--help"],
                                  ["install_bundle", "-h"], ["export", "--help"], ["help", "bench"]])
def test_command_help_needs_no_positional_arguments(argv):
    proc = _run(*argv)
    assert proc.returncode == 0, proc.stderr
    name = argv[1] if argv[0] == "help" else argv[0]
    assert proc.stdout.startswith(f"usage: python -m spine_monai {cli._cli_name(name.replace('-', '_'))}")
    assert "options:" in proc.stdout and "-h, --help" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_segment_help_shows_flags_defaults_and_meaning(capsys):
    code, out, _ = _main(capsys, "segment", "--help")
    assert code == 0
    assert "usage: python -m spine_monai segment BUNDLE -i INPUT_PATH -o OUTPUT_PATH" in out
    assert re.search(r"--device VALUE\s+.*\(default: auto\)", out)
    assert re.search(r"--overwrite\s+replace existing output files", out)
    assert "--[no]progress" in out and "--noprogress turns it off" in out
    assert "--<config id> VALUE" in out
    assert "overwrite=True" not in out


@pytest.mark.parametrize("name", [c.replace("-", "_") for c in COMMANDS])
def test_every_parameter_of_the_implementation_is_listed(capsys, name):
    sig, doc, _, note = cli._implementation(name)
    code, out, _ = _main(capsys, cli._cli_name(name), "--help")
    assert code == 0
    aliases = {v: k for k, v in cli._COMMANDS[name].aliases.items()}
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            assert "--<config id> VALUE" in out
        elif p.kind is p.VAR_POSITIONAL:
            assert f"{p.name.upper()} ..." in out
        else:
            cli_name = aliases.get(p.name, p.name)
            assert re.search(rf"(--(\[no\])?{cli_name}\b|-{cli_name}\b|\b{cli_name.upper()}\b)", out), (p.name, out)
    if not note:  # documented parameters carry their docstring text
        assert "(default:" in out


def test_help_reads_defaults_from_the_source_without_importing_torch():
    code = ("import sys; from spine_monai.cli import command_help; h = command_help('install-bundle'); "
            "print('torch' in sys.modules, 'monai' in sys.modules); print(h)")
    proc = _run(code=code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("False False")
    flat = " ".join(proc.stdout.split())
    assert re.search(r"--max_total_bytes VALUE [^\n]*?\(default: \d+\)", flat)  # an expression such as 2**30 evaluated


def test_see_func_entries_are_resolved(capsys):
    code, out, _ = _main(capsys, "datalist", "--help")
    assert code == 0
    assert re.search(r"--pattern VALUE\s+glob of the image files", out)
    assert "see find_pairs" not in out


def test_unknown_command_is_one_line_and_exit_2():
    proc = _run("frobnicate")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("error: unknown command 'frobnicate'") and "--help" in proc.stderr


def test_user_errors_are_one_line_naming_the_flag(capsys, tmp_path):
    code, _, err = _main(capsys, "datalist", str(tmp_path), "--bogus", "3")
    assert code == 2 and err.strip() == (
        "error: datalist does not take --bogus; see python -m spine_monai datalist --help.")
    code, _, err = _main(capsys, "crossval")
    assert code == 2 and "crossval needs BUNDLE and DATASET_DIR" in err
    code, _, err = _main(capsys, "segment", "bundle", "-i", "x.nii.gz")
    assert code == 2 and "segment needs -o OUTPUT_PATH" in err
    code, _, err = _main(capsys, "phantoms", "--n", "0", "--out", str(tmp_path / "p"))
    assert code == 2 and err.startswith("error: ") and err.strip().count("\n") == 0


def test_command_runs_and_prints_its_result(capsys, tmp_path):
    code, out, _ = _main(capsys, "phantoms", "--n", "2", "--folds", "2", "--shape_scale", "0.25", "--out",
                         str(tmp_path / "p"), "--noprogress")
    assert code == 0
    assert out.strip() == str(tmp_path / "p" / "datalist.json")


def test_cli_methods_and_commands_agree():
    methods = {n for n, _ in inspect.getmembers(cli.SpineMonaiCLI, inspect.isfunction) if not n.startswith("_")}
    assert methods == set(cli._COMMANDS)
    for name, spec in cli._COMMANDS.items():
        params = inspect.signature(getattr(cli.SpineMonaiCLI, name)).parameters
        assert set(spec.required) <= set(params), name


def test_one_log_format_and_each_warning_once():
    code = r"""
import logging, sys, warnings
from spine_monai.log import setup_logging
setup_logging()
# what monai.apps.utils.get_logger does: own stdout handler, no propagation
lib = logging.getLogger("monai.bundle.fake")
lib.propagate = False
lib.addHandler(logging.StreamHandler(sys.stdout))
lib.warning("library warning")
lib.warning("library warning")
logging.getLogger("spine_monai.x").info("own message")
for case in range(3):
    with warnings.catch_warnings():  # resets the warnings registry, as per-case code often does
        warnings.simplefilter("ignore", DeprecationWarning)
    warnings.warn("deprecated thing", FutureWarning)
"""
    proc = _run(code=code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # log lines go to stderr only
    lines = proc.stderr.strip().splitlines()
    fmt = re.compile(r"^\d\d:\d\d:\d\d (INFO|WARNING) [\w.]+: .+")
    assert all(fmt.match(ln) for ln in lines), lines
    assert sum("library warning" in ln for ln in lines) == 1
    assert sum("FutureWarning: deprecated thing" in ln for ln in lines) == 1
    assert any(ln.endswith("INFO spine_monai.x: own message") for ln in lines)


def test_setup_logging_adopts_loggers_created_before_it():
    code = r"""
import logging, sys
early = logging.getLogger("monai.early")
early.propagate = False
early.addHandler(logging.StreamHandler(sys.stdout))
keep = logging.getLogger("monai.file")
keep.propagate = False
keep.addHandler(logging.FileHandler("/dev/null"))
from spine_monai.log import setup_logging
setup_logging(); setup_logging()  # idempotent: one root handler
early.info("early message")
print(len(logging.getLogger().handlers), keep.propagate, len(keep.handlers))
"""
    proc = _run(code=code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1 False 1"
    assert proc.stderr.count("early message") == 1 and " INFO monai.early: early message" in proc.stderr


def test_an_option_called_name_reaches_the_command(monkeypatch):
    """``bench --name X``: an option named like ``_run``'s own first parameter must not collide with it."""
    seen = {}
    monkeypatch.setattr(cli, "_target", lambda name: (lambda *a, **k: seen.update(args=a, kwargs=k)))
    cli._run("bench", "b1", name="stem", out="o")
    assert seen == {"args": ("b1",), "kwargs": {"name": "stem", "out": "o"}}
