"""Tests of spine_monai.bundle.config_audit: code in a bundle's configs that leaves the allow-list is listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from spine_monai.bundle import config_audit
from spine_monai.bundle.config_audit import Finding, audit_bundle_configs, audit_config

REPO = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs").is_dir())
_FAKE_MONAI = {
    "LoadImaged": ["monai.transforms.io.dictionary"],
    "SaveImaged": ["monai.transforms.io.dictionary"],
    "Compose": ["monai.transforms.compose"],
    "PersistentDataset": ["monai.data.dataset"],
    "NibabelReader": ["monai.data.image_reader"],
    "optional_import": ["monai.utils.module"],
    "ConfigParser": ["monai.bundle.config_parser"],
    "ConfigWorkflow": ["monai.bundle.workflows"],
}


@pytest.fixture
def fake_locator(monkeypatch):
    """A stand-in for monai's ComponentLocator (the real one imports all of monai, seconds)."""
    monkeypatch.setattr(config_audit, "monai_component_modules", lambda name: _FAKE_MONAI.get(name, []))


def _load(path: Path) -> object:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def _configs(bundle: Path) -> dict[str, object]:
    files = sorted(p for p in (bundle / "configs").rglob("*") if p.suffix.lower() in (".json", ".yaml", ".yml"))
    return {str(p.relative_to(bundle)): _load(p) for p in files}


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_repository_bundles_pass_with_no_finding(bundle):
    # The real ComponentLocator: bare names such as LoadImaged must resolve among monai's components.
    configs = _configs(bundle)
    assert len(configs) >= 5
    assert [str(f) for f in audit_bundle_configs(configs)] == []
    for name, content in configs.items():  # also each file on its own (an overlay may be used with another base)
        assert [str(f) for f in audit_config(content, name)] == []


def test_real_locator_bare_names():
    ok = {"a": {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader"}}
    assert audit_config(ok, "c.json") == []
    bad = {"a": {"_target_": "eval"}, "b": {"_target_": "optional_import", "module": "os"}, "c": {"_target_": "exec"}}
    assert {f.id: f.reason for f in audit_config(bad, "c.json")} == {
        "a#_target_": "bare name is not a MONAI component (MONAI would locate it as a Python path)",
        "b#_target_": "'optional_import' is on the deny-list",
        "c#_target_": "bare name is not a MONAI component (MONAI would locate it as a Python path)",
    }


# Each case: config content, the id path of the expected finding, a fragment of its reason.
BAD = {
    "target_os_system": ({"x": {"_target_": "os.system", "command": "id"}}, "x#_target_", "'system' is on the deny"),
    "target_subprocess": ({"x": {"_target_": "subprocess.run"}}, "x#_target_", "'subprocess' is on the deny"),
    "target_builtin_dotted": ({"x": {"_target_": "builtins.exec"}}, "x#_target_", "'builtins' is on the deny"),
    "target_unknown_module": ({"x": {"_target_": "requests.get"}}, "x#_target_", "'requests' is not on the allow"),
    "target_torch_os": ({"x": {"_target_": "torch.os.system"}}, "x#_target_", "'os' is on the deny-list"),
    "target_bare_eval": ({"x": {"_target_": "eval", "source": "1"}}, "x#_target_", "not a MONAI component"),
    "target_bare_denied": ({"x": {"_target_": "optional_import"}}, "x#_target_", "'optional_import' is on the deny"),
    "target_monai_parser": ({"x": {"_target_": "ConfigParser"}}, "x#_target_", "'ConfigParser' is on the deny-list"),
    "target_monai_bundle": ({"x": {"_target_": "monai.bundle.run"}}, "x#_target_", "monai.bundle is on the deny-list"),
    "target_spine_runner": ({"x": {"_target_": "spine_monai.bundle.runner.train_bundle"}}, "x#_target_", "runner"),
    "target_bare_name_module": ({"x": {"_target_": "torch", "_mode_": "callable"}}, "x#_target_", "not a MONAI"),
    "target_package": ({"x": {"_target_": "spine_monai.bundle", "_mode_": "callable"}}, "x#_target_", "bare package"),
    "target_not_string": ({"x": {"_target_": 3}}, "x#_target_", "_target_ is not a string"),
    "target_expression": ({"x": {"_target_": "$'os.' + 'system'"}}, "x#_target_", "plain dotted name"),
    "target_via_ref": ({"s": "os.system", "x": {"_target_": "@s"}}, "x#_target_", "reference to 's'"),
    "target_via_macro": ({"s": "os.system", "x": {"_target_": "%s"}}, "x#_target_", "reference to 's'"),
    "target_private": ({"x": {"_target_": "torch._C._jit_x"}}, "x#_target_", "private or dunder"),
    "reader_located": ({"x": {"_target_": "LoadImaged", "reader": "os.system"}}, "x#reader", "'system' is on the"),
    "writer_located": ({"x": {"_target_": "SaveImaged", "writer": "exec"}}, "x#writer", "not a MONAI component"),
    "dunder_import": ({"run": ["$__import__('os').system('id')"]}, "run#0", "dunder or private name '__import__'"),
    "dunder_attr": ({"x": "$(1).__class__.__bases__[0].__subclasses__()"}, "x", "private or dunder attribute"),
    "dunder_string": ({"x": "$'{0.__globals__}'.format(max)"}, "x", "string constant naming a dunder"),
    "eval": ({"x": "$eval('1+1')"}, "x", "builtin 'eval' can run"),
    "exec": ({"x": "$exec('import os')"}, "x", "builtin 'exec' can run"),
    "open": ({"x": "$open('/etc/passwd').read()"}, "x", "builtin 'open' can run"),
    "compile": ({"x": "$compile('1', 'f', 'eval')"}, "x", "builtin 'compile' can run"),
    "getattr": ({"x": "$getattr(torch, 'load')"}, "x", "builtin 'getattr' can run"),
    "setattr_other": ({"x": "$setattr(torch, 'load', None)"}, "x", "builtin 'setattr' can run"),
    "setattr_not_bool": ({"x": "$setattr(torch.backends.cudnn, 'benchmark', @v)"}, "x", "builtin 'setattr'"),
    "unknown_name": ({"x": "$requests.get('http://x')"}, "x", "name 'requests' is not an allowed module"),
    "import_os_system": ({"i": ["$import os"], "x": "$os.system('id')"}, "x", "os.system: 'system' is on the deny"),
    "os_remove": ({"i": ["$import os"], "x": "$os.remove('f')"}, "x", "os.remove: only os.path helpers"),
    "os_popen": ({"x": "$os.popen('id').read()"}, "x", "os.popen: 'popen' is on the deny-list"),
    "os_listdir": ({"x": "$os.listdir('/')"}, "x", "os.listdir: only os.path helpers"),
    "os_path_os": ({"x": "$os.path.os.system('id')"}, "x", "os.path.os.system: 'os' is on the deny-list"),
    "os_as_value": ({"x": "$[m.remove('f') for m in [os]]"}, "x", "os: only os.path helpers"),
    "os_environ_value": ({"x": "$os.environ.update(LD_PRELOAD='x')"}, "x", "os.environ.update: only"),
    "glob_os": ({"i": ["$import glob"], "x": "$glob.os.remove('f')"}, "x", "glob.os.remove"),
    "import_subprocess": ({"i": ["$import subprocess"]}, "i#0", "import of subprocess: 'subprocess' is on the deny"),
    "import_from_os": ({"i": ["$from os import system"]}, "i#0", "import of os.system: 'system' is on the deny"),
    "import_from_os_path": ({"i": ["$from os import path"], "x": "$path.os"}, "x", "path.os (= os.path.os)"),
    "import_alias_shadow": ({"i": ["$import os as torch"], "x": "$torch.remove('f')"}, "x", "(= os.remove)"),
    "import_relative": ({"i": ["$from . import x"]}, "i#0", "relative or '*' import"),
    "import_star": ({"i": ["$from torch import *"]}, "i#0", "relative or '*' import"),
    "import_pickle": ({"i": ["$import pickle"]}, "i#0", "'pickle' is on the deny-list"),
    "import_importlib": ({"i": ["$import importlib"]}, "i#0", "'importlib' is on the deny-list"),
    "monai_escape": ({"x": "$monai.utils.optional_import('os')[0]"}, "x", "'optional_import' is on the deny"),
    "monai_run_cmd": ({"x": "$monai.utils.run_cmd(['id'])"}, "x", "'run_cmd' is on the deny-list"),
    "torch_hub": ({"x": "$torch.hub.load('.', 'm', source='local')"}, "x", "'hub' is on the deny-list"),
    "torch_as_value": ({"x": "$[t.utils for t in [torch]]"}, "x", "torch: a bare package used as a value"),
    "local_denied_attr": ({"x": "$[t.cpp_extension for t in [torch.utils]]"}, "x", "'cpp_extension' is on the deny"),
    "ref_to_import": ({"m": "$import os", "x": "$@m.remove('f')"}, "x", "os.remove: only os.path helpers"),
    "ref_to_import_list": ({"i": ["$import os"], "x": "$@i[0].remove('f')"}, "x", "reference @i reaches an import"),
    "plain_ref_to_import": ({"m": "$import os", "x": {"_target_": "Compose", "t": "@m"}}, "x#t", "imported module"),
    "relative_ref_to_import": ({"m": "$import os", "a": {"x": "$@##m.remove('f')"}}, "a#x", "os.remove"),
    "torch_load_default": ({"x": "$torch.load(@path)"}, "x", "load without weights_only=True"),
    "torch_load_unsafe": ({"x": "$torch.load(@path, weights_only=False)"}, "x", "weights_only is not True"),
    "pickle_module": ({"x": "$torch.load(@p, weights_only=True, pickle_module=@m)"}, "x", "pickle_module argument"),
    "numpy_allow_pickle": ({"x": "$numpy.load(@p, allow_pickle=True)"}, "x", "allow_pickle is not False"),
    "load_component": ({"x": {"_target_": "torch.load", "f": "m.pt"}}, "x", "load without weights_only=True"),
    "dataset_unsafe": ({"x": {"_target_": "PersistentDataset", "weights_only": False}}, "x", "weights_only is not"),
    "walrus": ({"x": "$(y := 1)"}, "x", "assignment expression"),
    "unparsable": ({"x": "$import"}, "x", "not a valid Python expression"),
    "statement": ({"x": "$x = 1"}, "x", "not a valid Python expression"),
    "macro_file": ({"x": "%/tmp/evil.json#net"}, "x", "macro loads another file"),
    "lambda_escape": ({"x": "$(lambda f: f.__globals__)(max)"}, "x", "private or dunder attribute '__globals__'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_entry_is_a_finding(case, fake_locator):
    content, node_id, reason = BAD[case]
    findings = audit_config(content, "configs/evil.json")
    assert [f.id for f in findings] == [node_id], [str(f) for f in findings]
    assert reason in findings[0].reason and findings[0].source == "configs/evil.json"


GOOD = [
    "$import glob",
    "$import torch.distributed as dist",
    "$dist.get_rank() == 0",
    "$glob.glob(@dataset_dir + '/*.nii.gz')",
    "$os.path.join(@bundle_root, 'models', os.path.basename(@x))",
    "$torch.device('cuda:' + os.environ['LOCAL_RANK'] if torch.cuda.is_available() else 'cpu')",
    "$os.environ.get('RANK', '0')",
    "$setattr(torch.backends.cudnn, 'benchmark', True)",
    "$torch.load(@p, map_location='cpu', weights_only=True)",
    "$numpy.load(@p)",
    "$np.uint8",
    "$lambda x: [xx['image'].meta for xx in x]",
    "$max(1, min(@val_interval, @train#trainer#max_epochs))",
    "$@train#handlers if dist.get_rank() == 0 else [h for h in @train#handlers if isinstance(h, monai.handlers.X)]",
    "$@network_def.to(@device)",
    "$spine_monai.data.datalist.load_datalist(@datalist, fold=@fold, split='train')",
    "$monai.handlers.from_engine(['pred', 'label'])",
    "$ignite.engine.Events.EPOCH_COMPLETED",
    "$@bundle_root + '/models/model.pt'",
    "@network_def",
    "%train#postprocessing",
    "plain string with @ and $ inside",
]


@pytest.mark.parametrize("expr", GOOD)
def test_allowed_entry_passes(expr, fake_locator):
    config = {"imports": ["$import os", "$import glob", "$import torch.distributed as dist"], "x": expr}
    assert [str(f) for f in audit_config(config, "c.json")] == []


@pytest.mark.parametrize(
    "component",
    [
        {"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 3},
        {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader"},
        {"_target_": "LoadImaged", "keys": "image", "reader": ["NibabelReader"]},
        {"_target_": "SaveImaged", "writer": "spine_monai.transforms.io.AtomicNibabelWriter"},
        {"_target_": "$monai.networks.nets.BasicUNet"},
        {"_target_": "torch.jit.load", "f": "m.ts"},
        {"_target_": "torch.load", "f": "m.pt", "weights_only": True},
        {"_target_": "@cls"},
    ],
)
def test_allowed_component_passes(component, fake_locator):
    assert audit_config({"cls": "monai.networks.nets.UNet", "x": component}, "c.json") == []


def test_findings_across_files_and_aliases(fake_locator):
    # An alias imported in one file is known in the other (the files are merged when the bundle runs).
    configs = {"configs/a.json": {"imports": ["$import os as o"]}, "configs/b.json": {"x": "$o.system('id')"}}
    (finding,) = audit_bundle_configs(configs)
    assert (finding.source, finding.id) == ("configs/b.json", "x") and "os.system" in finding.reason


def test_finding_text_names_file_id_and_shortened_text(fake_locator):
    long_expr = "$__import__('os').system('" + "x" * 500 + "')"
    (finding,) = audit_config({"train": {"handlers": [{"_target_": "Compose", "f": long_expr}]}}, "configs/t.json")
    assert isinstance(finding, Finding) and finding.id == "train#handlers#0#f"
    text = str(finding)
    assert text.startswith("configs/t.json: train#handlers#0#f: ") and text.endswith("...")
    assert len(text) < 300 and "\n" not in text


def test_yaml_config_and_multiline_text(fake_locator):
    content = yaml.safe_load("network:\n  _target_: os.system\n  command: |\n    rm -rf /\nrun:\n  - $eval('1')\n")
    assert [f.id for f in audit_config(content, "configs/x.yaml")] == ["network#_target_", "run#0"]


def test_yaml_alias_bomb_is_bounded(monkeypatch):
    monkeypatch.setattr(config_audit, "_MAX_NODES", 5000)  # the real bound (200 000) only takes longer to reach
    doc = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    (finding,) = audit_config(yaml.safe_load(doc), "configs/bomb.yaml")
    assert "more than" in finding.reason


def test_deeply_nested_expression_is_a_finding_not_a_crash(fake_locator):
    findings = audit_config({"x": "$" + "(" * 5000 + "1" + ")" * 5000}, "c.json")
    assert len(findings) == 1 and findings[0].id == "x"


def test_relative_reference_with_macros_is_a_finding(fake_locator):
    config = {"a": {"b": "$@##c.run()", "c": 1}, "d": "%a"}
    assert [f.id for f in audit_config(config, "c.json")] == ["a#b"]


@pytest.mark.parametrize(
    "path, expected",
    [
        ("torch.nn.Conv3d", None),
        ("spine_monai.networks.nets.saunet.SAUNet", None),
        ("os.path.join", None),
        ("os.system", "'system' is on the deny-list"),
        ("os.listdir", "only os.path helpers"),
        ("os.environ", "only os.path helpers"),
        ("shutil.rmtree", "'shutil' is on the deny-list"),
        ("numpy.ctypeslib.load_library", "'ctypeslib' is on the deny-list"),
        ("monai.bundle.run", "monai.bundle is on the deny-list"),
        ("spine_monai.cli.main", "spine_monai.cli is on the deny-list"),
        ("torch..nn", "not a dotted Python name"),
    ],
)
def test_path_problem(path, expected):
    reason = config_audit.path_problem(path)
    assert reason is None if expected is None else expected in reason
