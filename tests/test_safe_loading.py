"""Weights are read only through safetensors or `torch.load(weights_only=True)` (issue #16, item 5): a model
directory from someone else cannot run code on the reader's machine. Checked on the source itself."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "transformer"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def test_every_torch_load_passes_weights_only_true_and_nothing_unpickles():
    torch_loads, unsafe = 0, []
    for path in sorted(PACKAGE.rglob("*.py")):
        for call in _calls(ast.parse(path.read_text(encoding="utf-8"))):
            name, where = _name(call.func), f"{path.relative_to(PACKAGE.parent)}:{call.lineno}"
            keywords = {k.arg: k.value for k in call.keywords}
            if name == "torch.load":
                torch_loads += 1
                flag = keywords.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    unsafe.append(f"{where} torch.load without weights_only=True")
            elif name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"):
                unsafe.append(f"{where} {name}")
            elif name in ("np.load", "numpy.load") and not (
                    isinstance(keywords.get("allow_pickle"), ast.Constant) and keywords["allow_pickle"].value is False):
                unsafe.append(f"{where} {name} without allow_pickle=False")
    assert torch_loads >= 2  # train_state.pt and pytorch_model.bin are read, so the check sees real calls
    assert unsafe == []
