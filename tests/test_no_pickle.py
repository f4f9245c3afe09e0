"""Guard: no pickle on any read path (the package code never unpickles user-supplied bytes)."""
import re

from conftest import ROOT

FORBIDDEN = [
    (re.compile(r"\bimport pickle\b|\bpickle\.loads?\("), "pickle"),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
    (re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)"), "torch.load without weights_only=True"),
]


def test_no_pickle_in_package_code():
    offenders = []
    for folder in ("bitstream", "codec", "models"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for pattern, what in FORBIDDEN:
                if pattern.search(text):
                    offenders.append(f"{path.relative_to(ROOT)}: {what}")
    assert not offenders, offenders
