"""The nervcodec benchmark runs end to end on a tiny clip (so the script cannot rot)."""
import json

from neural_codecs.codec.io.video import write_video
from test_nerv import tiny_clip

import bench_nerv  # noqa: E402


def test_bench_nerv_smoke(tmp_path):
    clip = tmp_path / "clip.mkv"
    write_video(clip, tiny_clip(T=4, H=64, W=64), 24, lossless=True)
    out = tmp_path / "res"
    rc = bench_nerv.main([str(clip), "--out", str(out), "--baselines", "x264", "--crf", "30,40",
                          "--run", "hnerv:size=4k,epochs=1", "--run", "nirvana:size=4k,epochs=1,group=2",
                          "--repeats", "1"])
    assert rc == 0
    x264 = json.loads((out / "x264_medium.json").read_text())
    assert len(x264["results"]["bpp"]) == 2 and x264["results"]["bpp"][0] < x264["results"]["bpp"][1]
    for model in ("hnerv", "nirvana"):
        doc = json.loads((out / f"nervcodec_{model}.json").read_text())
        assert doc["name"] == f"nervcodec {model}"
        r = doc["results"]
        assert r["bpp"][0] > 0 and r["psnr-rgb"][0] > 5 and 0 < r["ms-ssim-rgb"][0] <= 1
    runs = json.loads((out / "runs.json").read_text())
    assert runs["nirvana"][0]["curve"]
    assert "| nervcodec hnerv" in (out / "summary.md").read_text()
    assert len(list(out.glob("*.nerv"))) == 2
