"""Command-line interface: ``python -m spine_monai <command> ...`` (built with ``fire``).

Each command imports its implementation lazily, so ``--help`` and unrelated commands stay fast and a missing
optional dependency only affects the command that needs it. ``fire`` parses the values (``--features [8,16]`` is a
list); the help is written here from the implementation's signature and the ``Args:`` section of its docstring,
because ``fire``'s own help neither lists the options of a command that takes ``**overrides`` nor works before the
positional arguments are given.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import logging
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import import_module
from pathlib import Path
from typing import Any

__all__ = ["SpineMonaiCLI", "main", "command_help", "commands_help"]

PROG = "python -m spine_monai"


@dataclass(frozen=True)
class _Command:
    """Where a command's implementation lives (``"module:function"``) and how CLI names map onto its parameters."""

    target: str
    required: tuple[str, ...] = ()  # CLI names of the arguments that must be given (positional unless one letter)
    aliases: Mapping[str, str] = field(default_factory=dict)  # CLI name -> parameter of the target


_COMMANDS: dict[str, _Command] = {
    "phantoms": _Command("spine_monai.data.phantoms:make_phantom_dataset"),
    "datalist": _Command("spine_monai.data.folder:folder_datalist", ("dataset_dir",)),
    "demo": _Command("spine_monai.demo:run_demo"),
    "crossval": _Command("spine_monai.evaluation.crossval:crossval", ("bundle", "dataset_dir")),
    "compare": _Command("spine_monai.evaluation.compare:compare", ("bundle", "dataset_dir")),
    "bench": _Command("spine_monai.evaluation.bench:bench"),
    "package": _Command("spine_monai.bundle.package:package_bundle", ("bundle",)),
    "install_bundle": _Command("spine_monai.bundle.zipcheck:install_bundle", ("zip_path", "bundle_dir")),
    "segment": _Command("spine_monai.segment:segment", ("bundle", "i", "o"), {"i": "input_path", "o": "output_path"}),
    "export": _Command("spine_monai.export:export_cli", ("bundle",)),
    "score": _Command("spine_monai.evaluation.score:score", ("pred", "label")),
}


def _target(name: str) -> Callable[..., Any]:
    module_name, func_name = _COMMANDS[name].target.rsplit(":", 1)
    return getattr(import_module(module_name), func_name)


def _usage_of(name: str, arg: str) -> str:
    return f"-{arg} {_COMMANDS[name].aliases.get(arg, arg).upper()}" if len(arg) == 1 else arg.upper()


def _run(name: str, /, *args: Any, **kwargs: Any) -> Any:
    """Call command ``name``'s implementation; missing arguments and options it does not take are refused (as
    ``ValueError`` naming them as typed)."""
    spec = _COMMANDS[name]
    missing = [_usage_of(name, a) for a in spec.required if kwargs.get(a) is None]
    if missing:
        raise ValueError(f"{_cli_name(name)} needs {' and '.join(missing)}; see {PROG} {_cli_name(name)} --help.")
    func = _target(name)
    kwargs = {spec.aliases.get(k, k): v for k, v in kwargs.items()}
    params = inspect.signature(func).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(k for k in kwargs if k not in params)
        if unknown:
            flags = ", ".join(f"--{k}" for k in unknown)
            raise ValueError(f"{_cli_name(name)} does not take {flags}; see {PROG} {_cli_name(name)} --help.")
    return func(*args, **kwargs)


def _cli_name(name: str) -> str:
    return name.replace("_", "-")


class SpineMonaiCLI:
    """spine_monai commands. Run ``python -m spine_monai <command> --help`` for the options of one command."""

    def phantoms(self, **kwargs: Any) -> str:
        """Write seeded synthetic spine phantoms (MRI and CT as NIfTI, ultrasound VPI as PNG) and a k-fold datalist."""
        return _run("phantoms", **kwargs)

    def datalist(self, dataset_dir: str | None = None, **kwargs: Any) -> str:
        """Build a datalist JSON (with k folds) for a folder of ``<case>_img`` / ``<case>_label`` pairs.

        ``--include`` selects case ids by glob, e.g. ``--include "VB*"`` or ``--include "['VB2_*']"``.
        """
        return _run("datalist", dataset_dir=dataset_dir, **kwargs)

    def demo(self, **kwargs: Any) -> str:
        """The main job: phantoms -> train a bundle (SAU-Net, or --bundle) -> evaluate -> segment, overlay, metrics."""
        return _run("demo", **kwargs)

    def crossval(self, bundle: str | None = None, dataset_dir: str | None = None, **kwargs: Any) -> Any:
        """Train and evaluate one configuration of a bundle on k fixed folds."""
        return _run("crossval", bundle=bundle, dataset_dir=dataset_dir, **kwargs)

    def compare(self, bundle: str | None = None, dataset_dir: str | None = None, **kwargs: Any) -> Any:
        """Run a bundle's method, baselines and ablations on the same folds and write the paper's tables."""
        return _run("compare", bundle=bundle, dataset_dir=dataset_dir, **kwargs)

    def bench(self, *bundles: str, **kwargs: Any) -> Any:
        """Benchmark parameters, FLOPs, latency, peak memory and training step time of bundle networks."""
        return _run("bench", *bundles, **kwargs)

    def package(self, bundle: str | None = None, **kwargs: Any) -> str:
        """Check a bundle and write ``dist/<name>_v<version>.zip`` in the model-zoo layout."""
        return _run("package", bundle=bundle, **kwargs)

    def install_bundle(self, zip_path: str | None = None, bundle_dir: str | None = None, **kwargs: Any) -> str:
        """Validate an untrusted bundle zip and extract it into ``--bundle_dir``."""
        return _run("install_bundle", zip_path=zip_path, bundle_dir=bundle_dir, **kwargs)

    def segment(self, bundle: str | None = None, i: str | None = None, o: str | None = None, **kwargs: Any) -> Any:
        """Segment one scan (NIfTI, DICOM folder, .mha, .nrrd) with a bundle's trained weights."""
        return _run("segment", bundle=bundle, i=i, o=o, **kwargs)

    def score(self, pred: str | None = None, label: str | None = None, **kwargs: Any) -> Any:
        """Score a segmentation against a reference label on the same grid (Dice, Jaccard, distances)."""
        return _run("score", pred=pred, label=label, **kwargs)

    def export(self, bundle: str | None = None, **kwargs: Any) -> Any:
        """Export a bundle's trained network to TorchScript, ONNX or a ``torch.export`` program (``--format``).

        ``--network localization`` exports the attention-driven CT bundle's localisation net instead of
        ``network_def``.
        """
        return _run("export", bundle=bundle, **kwargs)


# ---------------------------------------------------------------------------------------------------------- help


def _clean(text: str, flags: frozenset[str] = frozenset()) -> str:
    """reST markup to plain text: ``x`` -> x (``--x`` when x is one of ``flags``), :func:`a.b` -> a.b, collapsed
    whitespace."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    text = re.sub(r"``([^`]+)``", lambda m: f"--{m.group(1)}" if m.group(1) in flags else m.group(1), text)
    return " ".join(text.split())


def _docstring_parts(doc: str | None, clean: bool = True) -> tuple[str, dict[str, str]]:
    """(description before the first section, {parameter: text of its ``Args:`` entry}) of a Google docstring;
    the entries as plain text (``clean``) or with their reST kept."""
    lines = inspect.cleandoc(doc or "").splitlines()
    description: list[str] = []
    args: dict[str, str] = {}
    section = None
    current: list[str] = []
    indent = None
    for line in lines:
        header = re.fullmatch(r"(Args|Arguments|Parameters|Returns|Raises|Yields|Example|Examples|Note|Notes):",
                              line.strip())
        if header and not line.startswith(" "):
            section = header.group(1)
            current = []
            continue
        if section is None:
            description.append(line)
        elif section in ("Args", "Arguments", "Parameters") and line.strip():
            this_indent = len(line) - len(line.lstrip())
            entry = re.match(r"\s*(\*{0,2}[\w, ]+?)\s*(?:\([^)]*\))?:\s*(.*)", line)
            if entry and (indent is None or this_indent <= indent):
                indent = this_indent
                current = [entry.group(2)]
                for name in entry.group(1).split(","):
                    args[name.strip().lstrip("*")] = current  # type: ignore[assignment]
            elif current is not None:
                current.append(line.strip())
    tidy = _clean if clean else (lambda t: " ".join(t.split()))
    joined = {k: tidy(" ".join(v)) for k, v in args.items()}  # type: ignore[arg-type]
    return "\n".join(description).strip(), joined


@lru_cache(maxsize=32)
def _module_functions(module_name: str) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module-level functions of a module, read from its source without importing it (``{}`` if not found)."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return {}
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return {}
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    return {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


class _Expr:
    """A default value shown as its source text (an expression that is not a constant)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


_ARITHMETIC = (ast.Expression, ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.Tuple, ast.List,
               ast.Load)


def _default_value(node: ast.expr) -> Any:
    """A parameter default from its AST: a literal, an arithmetic expression of literals (evaluated), else text."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        expr = ast.Expression(node)
        if all(isinstance(n, _ARITHMETIC) for n in ast.walk(expr)):
            return eval(compile(expr, "<default>", "eval"), {"__builtins__": {}})  # noqa: S307 (literals only)
        return _Expr(ast.unparse(node))


def _ast_signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> inspect.Signature:
    a = fn.args
    P = inspect.Parameter
    params: list[inspect.Parameter] = []
    positional = [*a.posonlyargs, *a.args]
    defaults = [P.empty] * (len(positional) - len(a.defaults)) + [_default_value(d) for d in a.defaults]
    for i, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        kind = P.POSITIONAL_ONLY if i < len(a.posonlyargs) else P.POSITIONAL_OR_KEYWORD
        params.append(P(arg.arg, kind, default=default))
    if a.vararg:
        params.append(P(a.vararg.arg, P.VAR_POSITIONAL))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        params.append(P(arg.arg, P.KEYWORD_ONLY, default=P.empty if default is None else _default_value(default)))
    if a.kwarg:
        params.append(P(a.kwarg.arg, P.VAR_KEYWORD))
    return inspect.Signature(params)


def _implementation(name: str) -> tuple[inspect.Signature, str | None, str, str]:
    """(signature, docstring, module, note) of command ``name``'s implementation, read from the source (fast: no
    torch or MONAI import); imported when the source does not define it as a function; the CLI method's own when it
    cannot be imported (``note`` says why)."""
    module_name, func_name = _COMMANDS[name].target.rsplit(":", 1)
    fn = _module_functions(module_name).get(func_name)
    if fn is not None:
        return _ast_signature(fn), ast.get_docstring(fn), module_name, ""
    try:
        func = _target(name)
    except (ImportError, AttributeError) as err:
        method = getattr(SpineMonaiCLI, name)
        sig = inspect.signature(method)
        sig = sig.replace(parameters=list(sig.parameters.values())[1:])
        return sig, method.__doc__, __name__, f"(the implementation {_COMMANDS[name].target} is not available: {err})"
    return inspect.signature(func), func.__doc__, func.__module__, ""


def _resolve_see(module_name: str, name: str, text: str) -> str:
    """An entry ``see :func:`other``` replaced by ``other``'s entry for the same parameter, when it has one."""
    m = re.fullmatch(r"see :func:`~?([\w.]+)`\.?", text.strip())
    if not m:
        return text
    ref = m.group(1)
    mod, _, func = ref.rpartition(".")
    fn = _module_functions(mod or module_name).get(func)
    if fn is None:
        return text
    return _docstring_parts(ast.get_docstring(fn), clean=False)[1].get(name, text)


def _wrap(left: str, text: str, width: int, col: int = 28) -> str:
    if not text:
        return "  " + left
    body = textwrap.wrap(text, width=max(40, width - col))
    if len(left) + 2 >= col:
        lines = ["  " + left] + [" " * col + b for b in body]
    else:
        lines = ["  " + left.ljust(col - 2) + body[0]] + [" " * col + b for b in body[1:]]
    return "\n".join(lines)


def _default_text(value: Any) -> str:
    if isinstance(value, str):
        return value if value and " " not in value else repr(value)
    return repr(value).replace(" ", "")


def _width() -> int:
    return min(110, shutil.get_terminal_size((100, 20)).columns)


def commands_help() -> str:
    """``python -m spine_monai --help``: every command with one line."""
    width = _width()
    out = [f"usage: {PROG} COMMAND [ARGS] [--option VALUE ...]", "",
           "MONAI bundles for spine segmentation: train, evaluate, compare and run them.", "", "commands:"]
    for name in _COMMANDS:
        doc = _clean(inspect.getdoc(getattr(SpineMonaiCLI, name)) or "").split(". ")[0].rstrip(".")
        out.append(_wrap(_cli_name(name), doc, width, col=18))
    out += ["", f"Run '{PROG} COMMAND --help' for the options of one command (their defaults and meaning)."]
    return "\n".join(out) + "\n"


def command_help(name: str) -> str:
    """``python -m spine_monai CMD --help``: usage, description, positional arguments and every option.

    The options are the parameters of the command's implementation (``spine_monai.<module>:<function>``) with their
    defaults and the text of their ``Args:`` entries, read from its source (see :func:`_implementation`).

    Raises:
        ValueError: for an unknown command.
    """
    key = name.replace("-", "_")
    if key not in _COMMANDS:
        raise ValueError(f"unknown command {name!r}; the commands are {', '.join(map(_cli_name, _COMMANDS))}.")
    method = getattr(SpineMonaiCLI, key)
    target_sig, doc, module_name, note = _implementation(key)
    target_sig = target_sig.parameters
    width = _width()
    aliases = _COMMANDS[key].aliases
    to_cli = {v: k for k, v in aliases.items()}
    raw = _docstring_parts(doc, clean=False)[1]
    method_sig = inspect.signature(method).parameters
    flags = frozenset(to_cli.get(n, n) for n, p in target_sig.items()
                      if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n not in method_sig)
    flags |= frozenset(n for n, p in method_sig.items() if p.default is not p.empty)
    docs = {k: _clean(_resolve_see(module_name, k, v), flags) for k, v in raw.items()}

    positional: list[tuple[str, str]] = []  # (shown, doc)
    required_flags: list[tuple[str, str]] = []
    usage = [PROG, _cli_name(key)]
    shown: set[str] = set()
    for p in list(method_sig.values())[1:]:
        target_name = aliases.get(p.name, p.name)
        if p.kind is p.VAR_POSITIONAL:
            usage.append(f"[{p.name.upper()[:-1] if p.name.endswith('s') else p.name.upper()} ...]")
            positional.append((f"{p.name.upper()} ...", docs.get(target_name, "")))
            shown.add(target_name)
        elif p.name in _COMMANDS[key].required:
            if len(p.name) == 1:
                meta = target_name.upper()
                usage.append(f"-{p.name} {meta}")
                required_flags.append((f"-{p.name}, --{p.name} {meta}", "(required) " + docs.get(target_name, "")))
            else:
                usage.append(p.name.upper())
                positional.append((p.name.upper(), docs.get(target_name, "") + f" (or --{p.name} VALUE)"))
            shown.add(target_name)

    options: list[tuple[str, str]] = []
    overrides_doc = None
    for p in target_sig.values():
        if p.name in shown or p.name == "self":
            continue
        if p.kind is p.VAR_KEYWORD:
            overrides_doc = docs.get(p.name, "")
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        cli = to_cli.get(p.name, p.name)
        flag = f"-{cli}" if cli in aliases else f"--{cli}"
        text = docs.get(p.name, "")
        if p.default is p.empty:
            left, extra = f"{flag} VALUE", "(required)"
        elif isinstance(p.default, bool):
            left = f"--[no]{cli}" if p.default else flag
            extra = f"(default: --{cli}; --no{cli} turns it off)" if p.default else "(default: off)"
        elif p.default is None:
            left, extra = f"{flag} VALUE", "" if "default" in text.lower() else "(default: not set)"
        else:
            left, extra = f"{flag} VALUE", f"(default: {_default_text(p.default)})"
        options.append((left, f"{text} {extra}".strip()))
    if overrides_doc is not None:
        usage.append("[--<config id> VALUE ...]")
        options.append(("--<config id> VALUE", overrides_doc or "config overrides"))
    if options:
        usage.insert(2 + len(positional) + len(required_flags), "[options]")

    description, _ = _docstring_parts(method.__doc__)
    out = ["usage: " + " ".join(usage), ""]
    for par in description.split("\n\n"):
        if par.strip():
            out += [textwrap.fill(_clean(par), width), ""]
    out.pop()
    if note:
        out += ["", textwrap.fill(note, width)]
    if positional:
        out += ["", "positional arguments:"] + [_wrap(a, b, width) for a, b in positional]
    out += ["", "options:"] + [_wrap(a, b, width) for a, b in required_flags + options]
    out.append(_wrap("-h, --help", "show this help and exit", width))
    out += ["", "Values are read as Python literals: --features [8,16,32], --pixdim [4.0,1.5,1.5], --overwrite."]
    return "\n".join(out) + "\n"


def _wants_help(args: list[str]) -> bool:
    for a in args:
        if a == "--":
            return False
        if a in ("-h", "--help") or a.startswith("--help="):
            return True
    return False


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; errors of the user's making are printed as one line and exit with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help", "help"):
            if argv[1:2] and argv[0] == "help":
                sys.stdout.write(command_help(argv[1]))
            else:
                sys.stdout.write(commands_help())
            return
        if argv[0].replace("-", "_") not in _COMMANDS:
            raise ValueError(f"unknown command {argv[0]!r}; run '{PROG} --help' for the list of commands.")
        if _wants_help(argv[1:]):
            sys.stdout.write(command_help(argv[0]))
            return
        import fire

        from spine_monai.log import setup_logging

        setup_logging()
        argv[0] = argv[0].replace("-", "_")
        fire.Fire(SpineMonaiCLI, command=argv, name=PROG)
    except (ValueError, FileNotFoundError) as err:
        logging.getLogger(__name__).debug("command failed", exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
