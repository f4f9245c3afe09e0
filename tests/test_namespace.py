"""The library installs under one import name, ``neural_codecs``, and its core does not need torch.

A research project with its own ``models/`` package (or PyPI's ``bitstream``) must not shadow
ours: a script run from such a folder has that folder first on ``sys.path``.
"""
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = """
import numpy as np
from neural_codecs.codec import nerv, pcz, split
from neural_codecs.models.inr import FitOptions
import models, bitstream  # the user's own, beside this script
assert models.MINE and bitstream.MINE

img = (np.arange(28 * 28) % 7).astype(np.uint8).reshape(28, 28)
model = pcz.load_model("mnist")
assert np.array_equal(pcz.decompress(pcz.compress(img, model), model), img)

clip = np.load("clip.npy")
res = nerv.encode(clip, 24, model="hnerv", size=300, options=FitOptions(epochs=1))
frames, fps = nerv.decode(res.data)
assert frames.shape == clip.shape

edge, server = split.EdgeEncoder(), split.ServerDecoder()
data = edge.encode(np.full((40, 50, 3), 128, np.uint8))
assert "top1" in server.decode(data)
print("ok")
"""


def test_codecs_work_beside_a_users_own_models_and_bitstream(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("MINE = True\n")
    (tmp_path / "bitstream.py").write_text("MINE = True\n")
    (tmp_path / "codec.py").write_text("MINE = True\n")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "clip.npy", rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8))
    (tmp_path / "run.py").write_text(textwrap.dedent(SCRIPT))
    r = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok")


def test_core_and_pcz_do_not_import_torch_or_av():
    """Nor does the split service's client: an edge client posting a file needs no extra."""
    code = ("import sys, neural_codecs.bitstream, neural_codecs.codec.pcz, neural_codecs.codec.cli.pcz;"
            "from neural_codecs.codec.serve.split import predict_remote;"
            "print(sorted(m for m in ('torch', 'av', 'pytorch_msssim', 'skimage') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_missing_extra_is_one_line_and_status_2(tmp_path):
    # torch made unimportable: what a core-only install meets when it runs nervcodec or splitcodec
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nclass _No:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _No())\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for prog, extra in (("nerv", "video"), ("split", "split")):
        r = subprocess.run([sys.executable, "-m", f"neural_codecs.codec.cli.{prog}", "--help"], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"neural-codecs[{extra}]" in lines[0], r.stderr


def test_version_flag():
    for prog in ("pcz", "nerv", "split"):
        r = subprocess.run([sys.executable, "-m", f"neural_codecs.codec.cli.{prog}", "--version"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and "neural-codecs" in r.stdout, r.stderr
