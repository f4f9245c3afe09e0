"""Replay the fuzz corpus (tests/fuzz_corpus/): every input a fuzz run found a bug with must now be
decoded or refused with a typed error, promptly and within the memory bound.

The inputs are decoded exactly as ``tools/fuzz.py`` decodes them (each family the way its codec's
API / CLI does), in one reused child process under a time limit and an address-space cap, so a
regression that hangs or allocates gigabytes fails its case instead of the test run. Inputs that
still fail on this branch carry ``"xfail": true`` in ``tests/fuzz_corpus/MANIFEST.json``
(``python tools/fuzz.py --replay`` refreshes the marks); they run as non-strict xfails, so a fix
shows up as XPASS.
"""

import pytest


import fuzz  # noqa: E402

#: A refusal should take under 1 s; the test allows slack for a loaded test machine.
REFUSAL_S = 3.0
#: Past this the child is killed and the input counts as a hang.
KILL_S = 5.0
MEM_LIMIT = 512 << 20

FILES = fuzz.corpus_files()
MANIFEST = fuzz.load_manifest()


def _case(rel: str, family: str):
    entry = MANIFEST.get(rel, {})
    marks = ([pytest.mark.xfail(reason=f"still open: {entry.get('signature', '?')}", strict=False)]
             if entry.get("xfail") else [])
    return pytest.param(rel, family, marks=marks, id=rel)


@pytest.fixture(scope="module")
def worker():
    w = fuzz.Worker(fuzz.corpus_seeds(), time_limit=KILL_S, mem_limit=MEM_LIMIT, warm_limit=120.0)
    yield w
    w.close()


def test_corpus_is_consistent():
    """Every kept input is listed in the manifest (and the reverse), and each is small."""
    on_disk = {rel for rel, _ in FILES}
    assert on_disk == set(MANIFEST), "tests/fuzz_corpus/MANIFEST.json and the files disagree"
    for path in fuzz.CORPUS.glob("*/*.bin"):
        assert path.stat().st_size < fuzz.MAX_CORPUS_FILE, path
    for fam in fuzz.FAMILIES:
        assert list((fuzz.CORPUS / fam).glob("seed-*.bin")), f"no seed file for {fam}"


@pytest.mark.parametrize("family", fuzz.FAMILIES)
def test_seeds_decode(worker, family):
    """The valid seed files decode in the child (this also warms it: imports, kernels, models)."""
    for res in worker.warm_up(family):
        assert res.outcome == "decoded", res


@pytest.mark.parametrize("rel,family", [_case(rel, fam) for rel, fam in FILES])
def test_corpus_input(worker, rel, family):
    res = worker.run(family, (fuzz.CORPUS / rel).read_bytes())
    assert res.outcome in ("decoded", "typed"), f"{res.outcome}: {res.exc} {res.msg} at {res.where}"
    if res.outcome == "typed":
        assert res.elapsed <= REFUSAL_S, f"refused after {res.elapsed:.2f} s: {res.exc} {res.msg}"
