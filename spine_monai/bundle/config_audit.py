"""Static audit of MONAI bundle configs: list every ``_target_`` and ``$`` expression that leaves an allow-list.

Not tied to a paper: MONAI bundle configs are code. ``monai.bundle`` imports and calls every ``_target_`` (a bare
name is looked up among MONAI's own components by ``monai.bundle.ComponentLocator``, anything else goes to
``pydoc.locate``, which also finds builtins such as ``eval``) and runs every ``"$..."`` string with Python's
``eval`` (``"$import x"`` with ``import``). Nothing here runs or imports a config's code: the configs are walked as
data and each expression is parsed with :mod:`ast` after ``@id`` references are replaced the way
``monai.bundle.ReferenceResolver`` does. Used by :mod:`spine_monai.bundle.zipcheck` before a zip is extracted.

What is allowed (decisions, each conservative; everything else is a :class:`Finding`):

- modules (:data:`ALLOWED_ROOTS`): ``monai``, ``torch``, ``ignite``, ``numpy`` (alias ``np``), ``spine_monai``.
  Any attribute chain under them is allowed except private or dunder components (``_x``, ``__class__``), the names
  of :data:`DENIED_ATTRS` (other modules re-exported as attributes such as ``torch.os``, and escape hatches such as
  ``optional_import``, ``locate``, ``instantiate``, ``run_cmd``, ``ConfigParser``, ``torch.hub``,
  ``cpp_extension``), the prefixes of :data:`DENIED_PREFIXES` (``monai.bundle``, ``monai.apps.auto3dseg``...) and
  of :data:`SPINE_MONAI_DENIED` (the project's commands, which run other bundles or install zips). A bare package
  (``torch``, ``spine_monai.bundle``) used as a value is refused too, since its attributes could then be reached
  through a local name without being seen.
- ``os`` and ``glob``: the repository's configs do ``$import os`` and ``$import glob``, so both may be imported,
  but only the read-only helpers of :data:`LIMITED_LEAVES` may be used (``os.path.join``/``exists``/
  ``basename``/``dirname``..., ``os.environ[...]`` and ``os.environ.get``, ``glob.glob``); ``os.system``,
  ``os.remove``, ``os.popen``, the module ``os`` itself as a value and every other attribute are findings.
- builtins (:data:`ALLOWED_BUILTINS`): the ones the repository's configs use (``max``, ``min``, ``isinstance``)
  plus side-effect free ones (``len``, ``range``, ``int``, ``float``, ``list``...). ``eval``, ``exec``, ``open``,
  ``compile``, ``getattr``, ``__import__``... are findings. ``setattr`` only in the exact pattern of the repository,
  ``$setattr(torch.backends.cudnn, 'benchmark', True)`` (a ``torch.backends`` module, a constant flag name of
  :data:`SETATTR_FLAGS`, a constant bool). ``lambda`` and comprehensions may use the names they bind.
- ``@id`` references become opaque placeholders (a resolved object); a reference to an item that is itself an
  import (``"x": "$import os"``) stands for that module, so ``$@x.system(...)`` is checked as ``os.system``; a
  reference to a container holding an import is a finding. Relative references (``@##id``) are resolved; in a
  bundle that also uses ``%`` macros (which may move a string elsewhere) they are findings.
- ``_target_``, ``reader`` and ``writer`` of a component (the latter two are also located by MONAI's
  ``LoadImage``/``SaveImage`` when strings): a dotted path checked as above, or a bare name that MONAI's
  ``ComponentLocator`` resolves to a MONAI component, or a ``$`` expression that is a plain dotted name, or a
  reference/macro that leads to one of those.
- pickles: a ``load`` call (``torch.load`` or anything not under ``numpy``, except ``torch.jit.load``) must pass
  ``weights_only=True``; ``weights_only`` other than ``True``, ``allow_pickle`` other than ``False`` and any
  ``pickle_module`` are findings, in expressions and in component arguments alike.
- also findings: an unparsable expression, an assignment expression (``:=``), a relative or ``*`` import, a string
  constant holding a dunder name (``"{0.__class__}".format``), ``%`` macros that load another file (not audited),
  a ``_target_`` that is not a string.

This is a static allow-list, not a sandbox: it is tuned to refuse anything unusual and accept the repository's
configs (which pass with no finding). Use ``--trust`` only for a bundle whose configs you have read.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALLOWED_BUILTINS",
    "ALLOWED_ROOTS",
    "DENIED_ATTRS",
    "DENIED_PREFIXES",
    "LIMITED_LEAVES",
    "SETATTR_FLAGS",
    "SPINE_MONAI_DENIED",
    "Finding",
    "audit_bundle_configs",
    "audit_config",
    "monai_component_modules",
    "path_problem",
]

ALLOWED_ROOTS = frozenset({"monai", "torch", "ignite", "numpy", "spine_monai"})
_DEFAULT_GLOBALS = {"monai": "monai", "torch": "torch", "np": "numpy", "numpy": "numpy"}  # monai.bundle's defaults
SPINE_MONAI_DENIED = (
    "spine_monai.cli",
    "spine_monai.__main__",
    "spine_monai.demo",
    "spine_monai.segment",
    "spine_monai.evaluation",
    "spine_monai.bundle.runner",
    "spine_monai.bundle.package",
    "spine_monai.bundle.zipcheck",
    "spine_monai.bundle.config_audit",
)
_PACKAGES_AS_VALUES = frozenset({"spine_monai.bundle", "monai.apps"})  # hold denied modules: no module values
_OS_PATH_HELPERS = (
    "join", "exists", "isfile", "isdir", "basename", "dirname", "splitext", "split", "abspath", "normpath",
    "realpath", "relpath", "expanduser", "sep",
)  # fmt: skip
LIMITED_LEAVES = frozenset(
    {f"os.path.{f}" for f in _OS_PATH_HELPERS}
    | {"os.environ", "os.environ.get", "os.sep", "os.pathsep", "os.getcwd", "glob.glob", "glob.iglob", "glob.escape"}
)
_LIMITED_IMPORTS = frozenset({"os", "os.path", "glob"})
DENIED_ATTRS = frozenset(
    {
        # modules reachable as attributes of allowed ones (torch.os, numpy.sys, ...)
        "os", "sys", "subprocess", "shutil", "pickle", "cPickle", "dill", "marshal", "shelve", "importlib",
        "builtins", "ctypes", "ctypeslib", "pty", "socket", "runpy", "code", "codeop", "pydoc", "inspect", "gc",
        "types", "distutils", "f2py",
        # process and code execution
        "system", "popen", "Popen", "spawnl", "spawnv", "spawnve", "execl", "execv", "execve", "execvp", "fork",
        "run_cmd", "check_output", "check_call",
        # MONAI / torch escape hatches: import or locate anything, run other configs, load native or hub code
        "optional_import", "instantiate", "locate", "import_module", "load_submodules", "load_library",
        "load_inline", "cpp_extension", "hub", "fx", "add_safe_globals", "safe_globals", "algo_from_pickle",
        "ConfigParser", "ConfigComponent", "ConfigExpression", "ConfigItem", "ConfigWorkflow", "ReferenceResolver",
        "auto3dseg", "nnunet",
    }
)  # fmt: skip
DENIED_PREFIXES = ("monai.bundle", "monai.apps.auto3dseg", "monai.apps.nnunet", "monai.auto3dseg", "torch.package")
ALLOWED_BUILTINS = frozenset(
    {
        "abs", "all", "any", "bool", "dict", "enumerate", "filter", "float", "int", "isinstance", "len", "list",
        "map", "max", "min", "range", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "zip",
    }
)  # fmt: skip
SETATTR_FLAGS = frozenset({"benchmark", "deterministic", "enabled", "allow_tf32"})
_DANGEROUS_BUILTINS = frozenset(
    {"eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "vars", "globals", "locals", "__import__",
     "breakpoint", "input", "type", "object", "dir", "help", "memoryview"}
)  # fmt: skip
_TARGET_KEYS = ("_target_", "reader", "writer")
_REF_RE = re.compile(r"@\w*(?:::\w*)*")  # ReferenceResolver.id_matcher, on the "#" -> "::" normalised string
_RELATIVE_RE = re.compile(r"(?:@|%)(?:::)+")  # ConfigParser.relative_id_prefix
_MACRO_FILE_RE = re.compile(r"\.(json|yaml|yml)(?=(?:::.*)|$)", re.IGNORECASE)  # ConfigParser.split_path_id
_DUNDER_RE = re.compile(r"__\w+__")
_MAX_NODES = 200_000  # YAML aliases can make a small file a huge tree; real configs have a few thousand
_TEXT_LIMIT = 100


@dataclass(frozen=True)
class Finding:
    """One config entry that leaves the allow-list.

    Args:
        source: the config file (member name).
        id: the config id path, ``#``-separated (``network_def#_target_``, ``initialize#0``).
        reason: why it is refused.
        text: the offending text (shortened by ``str()``).
    """

    source: str
    id: str
    reason: str
    text: str

    def __str__(self) -> str:
        return f"{self.source}: {self.id or '<root>'}: {self.reason}: {_short(self.text)}"


def _short(text: str, limit: int = _TEXT_LIMIT) -> str:
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def audit_config(content: Any, source: str) -> list[Finding]:
    """Audit one parsed config (see the module docstring for the rules).

    Args:
        content: the parsed JSON or YAML content.
        source: the file name, used in the findings.

    Returns:
        The findings, in config order (empty when everything is on the allow-list).
    """
    return audit_bundle_configs({source: content})


def audit_bundle_configs(configs: Mapping[str, Any]) -> list[Finding]:
    """Audit all configs of a bundle together (they may be merged, and one may import what another uses).

    Args:
        configs: member or file name -> parsed JSON or YAML content.

    Returns:
        The findings, file by file in config order (empty when everything is on the allow-list).
    """
    nodes: list[tuple[str, str, Any]] = []
    for source, content in configs.items():
        nodes.extend(_flatten(content, str(source)))
        if len(nodes) > _MAX_NODES:
            return [Finding(str(source), "", f"more than {_MAX_NODES} config nodes (YAML aliases?)", "")]
    return _Auditor(nodes).run()


def _norm_key(key: Any) -> str:
    return str(key).replace("::", "#")


def _flatten(content: Any, source: str) -> list[tuple[str, str, Any]]:
    """Every node of ``content`` as ``(source, id, value)`` in config order, without recursion."""
    out: list[tuple[str, str, Any]] = []
    stack: list[tuple[str, Any]] = [("", content)]
    while stack:
        node_id, value = stack.pop()
        out.append((source, node_id, value))
        if len(out) > _MAX_NODES:
            break
        if isinstance(value, Mapping):
            children = [(_norm_key(k), v) for k, v in value.items()]
        elif isinstance(value, list):
            children = [(str(i), v) for i, v in enumerate(value)]
        else:
            continue
        stack.extend((f"{node_id}#{k}" if node_id else k, v) for k, v in reversed(children))
    return out


def _is_import(text: str) -> ast.Module | None:
    """The parsed module when ``text`` (after ``$``) is an import statement as MONAI detects it, else ``None``."""
    if "import" not in text:
        return None
    try:
        tree = ast.parse(text, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return tree if tree.body and isinstance(tree.body[0], (ast.Import, ast.ImportFrom)) else None


def _imported_paths(tree: ast.Module) -> list[tuple[str, str]]:
    """``(bound name, dotted module path)`` for each name of the import statements of ``tree``."""
    out = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                out.append((a.asname or a.name, a.name))
                if a.asname is None and "." in a.name:
                    out.append((a.name.split(".")[0], a.name.split(".")[0]))
        elif isinstance(stmt, ast.ImportFrom) and stmt.module:
            out.extend((a.asname or a.name, f"{stmt.module}.{a.name}") for a in stmt.names)
    return out


def path_problem(path: str, subscripted: bool = False, as_import: bool = False) -> str | None:
    """Why the dotted path ``path`` leaves the allow-list, or ``None`` when it is allowed.

    Args:
        path: a resolved dotted path, such as ``torch.nn.Conv3d`` or ``os.path.join``.
        subscripted: the path is subscripted (``os.environ[...]``).
        as_import: the path is imported (``import os``): a bare module is fine there.

    Returns:
        The reason, or ``None``.
    """
    parts = path.split(".")
    if not all(p.isidentifier() for p in parts):
        return "not a dotted Python name"
    if any(p.startswith("_") for p in parts):
        return "private or dunder attribute"
    denied = next((p for p in parts[1:] if p in DENIED_ATTRS), None)
    if denied or parts[0] in DENIED_ATTRS - {"os"}:
        return f"{denied or parts[0]!r} is on the deny-list"
    root = parts[0]
    if root in ("os", "glob"):
        ok = path in _LIMITED_IMPORTS if as_import else path in LIMITED_LEAVES
        if path == "os.environ" and not (subscripted or as_import):
            ok = False
        return None if ok else "only os.path helpers, os.environ[...], os.environ.get and glob.glob are allowed"
    if root not in ALLOWED_ROOTS:
        return f"module {root!r} is not on the allow-list"
    if (len(parts) == 1 or path in _PACKAGES_AS_VALUES) and not as_import:
        return "a bare package used as a value"
    denied = next((p for p in (*DENIED_PREFIXES, *SPINE_MONAI_DENIED) if path == p or path.startswith(p + ".")), None)
    return f"{denied} is on the deny-list" if denied else None


@functools.lru_cache(maxsize=1)
def _locator() -> Any:
    from monai.bundle import ComponentLocator  # imports monai and all its submodules, as monai.bundle does

    return ComponentLocator()


def monai_component_modules(name: str) -> list[str]:
    """The MONAI modules where ``monai.bundle.ComponentLocator`` finds the bare component ``name`` (empty if none)."""
    mods = _locator().get_component_module_name(name)
    if mods is None:
        return []
    return [mods] if isinstance(mods, str) else list(mods)


class _Auditor:
    """Holds the bundle-wide tables (imports, aliases, ids) and produces the findings."""

    def __init__(self, nodes: list[tuple[str, str, Any]]) -> None:
        self.nodes = nodes
        self.findings: list[Finding] = []
        self.values: dict[str, list[Any]] = {}
        self.import_ids: dict[str, str] = {}  # id of an import item -> the module path it evaluates to
        self.aliases: dict[str, set[str]] = {}
        self.has_macros = False
        for _, node_id, value in nodes:
            self.values.setdefault(node_id, []).append(value)
            if not isinstance(value, str):
                continue
            self.has_macros |= value.startswith("%")
            tree = _is_import(value[1:]) if value.startswith("$") else None
            if tree is None:
                continue
            bound = _imported_paths(tree)
            for name, path in bound:
                self.aliases.setdefault(name, set()).add(path)
            if bound:
                self.import_ids[node_id] = bound[0][1]
        self.import_ancestors = {i.rsplit("#", k)[0] for i in self.import_ids for k in range(1, i.count("#") + 1)}
        self.import_ancestors.add("")

    def add(self, source: str, node_id: str, reason: str, text: str) -> None:
        last = self.findings[-1] if self.findings else None
        if last is not None and (last.source, last.id, last.text) == (source, node_id, text):
            self.findings[-1] = Finding(source, node_id, f"{last.reason}; {reason}", text)  # one finding per entry
        else:
            self.findings.append(Finding(source, node_id, reason, text))

    def run(self) -> list[Finding]:
        for source, node_id, value in self.nodes:
            if isinstance(value, Mapping):
                self._component(source, node_id, value)
            elif isinstance(value, str):
                if value.startswith("$"):
                    self._expression(source, node_id, value)
                elif value.startswith("@"):
                    self._plain_ref(source, node_id, value)
                elif value.startswith("%") and _MACRO_FILE_RE.search(value.replace("#", "::")):
                    self.add(source, node_id, "macro loads another file (not audited)", value)
        return self.findings

    # references -------------------------------------------------------------------------------------------------

    def _resolve_relative(self, node_id: str, value: str) -> tuple[str, str | None]:
        """``value`` normalised (``#`` -> ``::``) with relative ids made absolute, and a reason when that fails."""
        value = value.replace("#", "::")
        current = node_id.split("#") if node_id else []
        for prefix in sorted(set(_RELATIVE_RE.findall(value)), key=len, reverse=True):
            if self.has_macros:
                return value, "relative reference in a bundle that uses % macros"
            length = prefix[1:].count("::")
            if length > len(current):
                return value, "relative reference out of range"
            new = "" if length == len(current) else "::".join(current[:-length]) + "::"
            value = value.replace(prefix, prefix[0] + new)
        return value, None

    def _ref_kind(self, ref: str) -> tuple[str, str]:
        """Classify ``@ref`` (``#``-separated) as ``"import"`` (with its module path), ``"container"`` or ``"object"``.

        A container is an item holding an import (or the root); an object is anything else.
        """
        if ref in self.import_ids:
            return "import", self.import_ids[ref]
        if ref in self.import_ancestors or any(ref.startswith(i + "#") for i in self.import_ids):
            return "container", ""
        return "object", ""

    def _plain_ref(self, source: str, node_id: str, value: str) -> None:
        resolved, reason = self._resolve_relative(node_id, value)
        if reason is None and not _REF_RE.fullmatch(resolved):
            return  # a plain string that merely starts with "@": MONAI leaves it alone
        if reason is None and self._ref_kind(resolved[1:].replace("::", "#"))[0] != "object":
            reason = "reference to an item holding an imported module"
        if reason:
            self.add(source, node_id, reason, value)

    # expressions ------------------------------------------------------------------------------------------------

    def _prepare(self, node_id: str, value: str) -> tuple[str, set[str], str | None]:
        """The expression (after ``$``) with references replaced, the placeholder names, and a reason if refused."""
        resolved, reason = self._resolve_relative(node_id, value)
        placeholders: set[str] = set()
        bad: list[str] = []

        def sub(m: re.Match[str]) -> str:
            kind, path = self._ref_kind(m.group(0)[1:].replace("::", "#"))
            if kind == "import":
                return path
            if kind == "container":
                bad.append(m.group(0))
            name = f"_ref_{len(placeholders)}"
            placeholders.add(name)
            return name

        text = _REF_RE.sub(sub, resolved[1:])
        if bad and reason is None:
            reason = f"reference {bad[0].replace('::', '#')} reaches an imported module"
        return text, placeholders, reason

    def _expression(self, source: str, node_id: str, value: str) -> None:
        text, placeholders, reason = self._prepare(node_id, value)
        if reason:
            self.add(source, node_id, reason, value)
            return
        tree: ast.AST | None = _is_import(text)
        if tree is not None:
            for problem in _import_problems(tree):
                self.add(source, node_id, problem, value)
            return
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            self.add(source, node_id, f"not a valid Python expression ({type(e).__name__})", value)
            return
        try:
            problems = _ExprChecker(self.aliases, placeholders).check(tree)
        except RecursionError:
            problems = ["expression nested too deeply"]
        for problem in dict.fromkeys(problems):
            self.add(source, node_id, problem, value)

    # components -------------------------------------------------------------------------------------------------

    def _component(self, source: str, node_id: str, comp: Mapping[str, Any]) -> None:
        if "_target_" not in comp:
            return
        for key in _TARGET_KEYS:
            if key not in comp:
                continue
            key_id = f"{node_id}#{key}" if node_id else key
            values = comp[key] if key != "_target_" and isinstance(comp[key], list) else [comp[key]]
            for value in values:
                if not isinstance(value, str):
                    if key == "_target_":
                        self.add(source, key_id, "_target_ is not a string", str(value))
                    continue  # a reader or writer given as a component or object
                reason = self._target_problem(value, key_id, hops=0)
                if reason:
                    self.add(source, key_id, reason, value)
        target = comp["_target_"] if isinstance(comp["_target_"], str) else ""
        is_load = target.rsplit(".", 1)[-1] == "load" and not target.startswith(("numpy.", "torch.jit."))
        reason = _load_args_problem(is_load, comp)
        if reason:
            self.add(source, node_id, reason, str(dict(comp)))

    def _target_problem(self, value: str, node_id: str, hops: int) -> str | None:
        """Why the ``_target_`` (``reader``, ``writer``) string ``value`` is refused, or ``None``."""
        if value.startswith("$"):
            text, _, reason = self._prepare(node_id, value)
            if reason:
                return reason
            try:
                body = ast.parse(text.strip(), mode="eval").body
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                return "not a valid Python expression"
            return None if _dotted(body) else "a target expression must be a plain dotted name"
        if value.startswith(("@", "%")):
            resolved, reason = self._resolve_relative(node_id, value)
            ref = resolved[1:].replace("::", "#")
            if reason or hops > 8 or ref not in self.values:
                return reason or "target reference that cannot be followed"
            for target in self.values[ref]:
                if isinstance(target, str) and (reason := self._target_problem(target, ref, hops + 1)):
                    return f"reference to {ref!r}: {reason}"
                if not isinstance(target, (str, Mapping)):
                    return f"reference to {ref!r}: not a component or a name"
            return None
        if "." not in value:
            if not value.isidentifier() or value.startswith("_"):
                return "not a Python name"
            try:
                mods = monai_component_modules(value)
            except Exception as e:  # noqa: BLE001 - monai not importable: cannot tell what the name means
                return f"bare name cannot be resolved ({type(e).__name__})"
            if not mods:
                return "bare name is not a MONAI component (MONAI would locate it as a Python path)"
            return next((r for r in (path_problem(f"{m}.{value}") for m in mods) if r), None)
        return path_problem(value)


def _dotted(node: ast.AST) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _import_problems(tree: ast.Module) -> list[str]:
    problems = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Import):
            paths = [a.name for a in stmt.names]
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level or not stmt.module or any(a.name == "*" for a in stmt.names):
                problems.append("relative or '*' import")
                continue
            paths = [f"{stmt.module}.{a.name}" for a in stmt.names]
        else:
            problems.append("a statement other than an import")
            continue
        problems.extend(f"import of {p}: {r}" for p in paths if (r := path_problem(p, as_import=True)))
    return problems


def _load_args_problem(is_load: bool, kwargs: Mapping[str, Any]) -> str | None:
    """Why the keyword arguments of a ``load`` call (or of a component) may unpickle code, or ``None``."""
    if "pickle_module" in kwargs:
        return "pickle_module argument (arbitrary unpickler)"
    if "weights_only" in kwargs and kwargs["weights_only"] is not True:
        return "weights_only is not True (unpickling runs code)"
    if "allow_pickle" in kwargs and kwargs["allow_pickle"] is not False:
        return "allow_pickle is not False (unpickling runs code)"
    if is_load and kwargs.get("weights_only") is not True:
        return "load without weights_only=True (unpickling runs code)"
    return None


def _attr_chain(node: ast.AST) -> tuple[ast.AST, list[str]]:
    """``a.b.c`` -> (the node of ``a``, ``["b", "c"]``)."""
    attrs: list[str] = []
    while isinstance(node, ast.Attribute):
        attrs.insert(0, node.attr)
        node = node.value
    return node, attrs


class _ExprChecker(ast.NodeVisitor):
    """Collect the reasons why one parsed ``$`` expression leaves the allow-list."""

    def __init__(self, aliases: Mapping[str, Iterable[str]], placeholders: set[str]) -> None:
        self.aliases = aliases
        self.placeholders = placeholders
        self.problems: list[str] = []
        self.bound: set[str] = set()
        self.parents: dict[ast.AST, ast.AST] = {}
        self.approved: set[ast.AST] = set()

    def check(self, tree: ast.AST) -> list[str]:
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            if isinstance(node, ast.Lambda):
                a = node.args
                self.bound.update(x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x)
            elif isinstance(node, ast.comprehension):
                self.bound.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        self.visit(tree)
        return self.problems

    def _modules(self, name: str) -> set[str]:
        mods = set(self.aliases.get(name, ()))
        if name in _DEFAULT_GLOBALS:
            mods.add(_DEFAULT_GLOBALS[name])
        elif name in ALLOWED_ROOTS or name in ("os", "glob"):
            mods.add(name)  # a NameError at run time unless imported, harmless either way
        return mods

    def _chain(self, name: str, attrs: list[str], node: ast.AST) -> None:
        parent = self.parents.get(node)
        subscripted = isinstance(parent, ast.Subscript) and parent.value is node
        mods = self._modules(name)
        local = name in self.bound or name in self.placeholders
        if name.startswith("_") and name not in self.placeholders:
            self.problems.append(f"dunder or private name {name!r}")
            return
        if not mods or local:  # attributes of a run-time object: only the names themselves can be checked
            self._attrs(attrs)
        for mod in sorted(mods):
            resolved = ".".join([mod, *attrs])
            reason = path_problem(resolved, subscripted=subscripted)
            if reason:
                label = resolved if mod == name else f"{'.'.join([name, *attrs])} (= {resolved})"
                self.problems.append(f"{label}: {reason}")
        if mods or local or name in ALLOWED_BUILTINS or node in self.approved:
            return
        if name in _DANGEROUS_BUILTINS:
            self.problems.append(f"builtin {name!r} can run or reach arbitrary code")
        else:
            self.problems.append(f"name {name!r} is not an allowed module or builtin")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        root, attrs = _attr_chain(node)
        if isinstance(root, ast.Name):
            self._chain(root.id, attrs, node)
            return
        self._attrs(attrs)
        self.visit(root)

    def _attrs(self, attrs: list[str]) -> None:
        for attr in attrs:
            if attr.startswith("_"):
                self.problems.append(f"private or dunder attribute {attr!r}")
            elif attr in DENIED_ATTRS:
                self.problems.append(f"attribute {attr!r} is on the deny-list")

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._chain(node.id, [], node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id == "setattr" and self._setattr_ok(node):
            self.approved.add(node.func)
        kwargs: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                kwargs["**"] = None
            else:
                kwargs[kw.arg] = kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
        reason = _load_args_problem(self._is_pickle_load(node.func), kwargs)
        if reason:
            self.problems.append(reason)
        self.generic_visit(node)

    def _is_pickle_load(self, func: ast.AST) -> bool:
        if not (isinstance(func, ast.Attribute) and func.attr == "load"):
            return False
        root, parts = _attr_chain(func)
        if isinstance(root, ast.Name):
            paths = {".".join([m, *parts]) for m in self._modules(root.id)}
            if paths and all(p.startswith("numpy.") or p == "torch.jit.load" for p in paths):
                return False
        return True

    def _setattr_ok(self, node: ast.Call) -> bool:
        """The repository's pattern: ``setattr(torch.backends.<x>, '<flag>', True|False)``."""
        if node.keywords or len(node.args) != 3 or "setattr" in self.aliases or "setattr" in self.bound:
            return False
        target, flag, value = node.args
        parts: list[str] = []
        while isinstance(target, ast.Attribute):
            parts.insert(0, target.attr)
            target = target.value
        if not isinstance(target, ast.Name) or target.id in self.bound:
            return False
        mods = self._modules(target.id)
        return (
            bool(mods)
            and all(".".join([m, *parts]).startswith("torch.backends.") for m in mods)
            and isinstance(flag, ast.Constant)
            and flag.value in SETATTR_FLAGS
            and isinstance(value, ast.Constant)
            and isinstance(value.value, bool)
        )

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.problems.append("assignment expression (:=)")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and _DUNDER_RE.search(node.value):
            self.problems.append("string constant naming a dunder attribute")
