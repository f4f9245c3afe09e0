"""The results page: ``RESULTS.md`` and ``docs/results/`` from what ``tools/results.py`` measured.

Reads only the finished steps' outputs under the work folder (CompressAI-style JSON, the nervcodec
``runs.json`` training curves, ``steps.json`` timings); copies the JSON beside the page, draws the
plots, and writes the tables. Families with no finished step are listed as not measured.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from bench_common import pyplot

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python tools/results.py run"


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def load_docs(folder: Path) -> list[dict]:
    """Every CompressAI-style JSON in ``folder`` (sorted by name)."""
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        d = json.loads(p.read_text())
        if isinstance(d, dict) and "name" in d and "results" in d:
            out.append({**d, "file": p.name})
    return out


def compressai_series(doc: dict, metric: str) -> tuple[list, list]:
    """(bpp, metric) as CompressAI's plotting reads a results file: ``results`` must hold ``bpp``
    and the metric, as equally long lists."""
    r = doc["results"]
    if "bpp" not in r or metric not in r:
        raise ValueError(f"{doc.get('name')}: needs results.bpp and results.{metric}")
    if len(r["bpp"]) != len(r[metric]):
        raise ValueError(f"{doc.get('name')}: bpp and {metric} differ in length")
    return r["bpp"], r[metric]


def _f(v, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return format(v, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cells(r):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |"

    return [cells(header), "|" + "---|" * len(header)] + [cells(r) for r in rows]


def _table_rows(rows: list[list[str]]) -> list[str]:
    return _table([""], rows)[2:]


def _plt():
    plt = pyplot()
    if plt is None:
        raise ImportError("the results page needs matplotlib: pip install -e '.[bench]'")
    return plt


# ---------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------

IMAGE_COLS = [("bits_per_subpixel", "bits/subpixel", ".4f"), ("ideal_bits_per_subpixel", "ideal −log₂p", ".4f"),
              ("encode_ms_per_image", "encode ms/image", ".2f"), ("decode_ms_per_image", "decode ms/image", ".2f"),
              ("encode_images_per_s", "encode images/s", ".0f"), ("decode_images_per_s", "decode images/s", ".0f")]


def images_section(work: Path, docs: Path) -> list[str]:
    lines = ["## Lossless images: pcz vs PNG, WebP lossless, JPEG XL lossless", ""]
    sets = {name: load_docs(work / "images" / name) for name in ("mnist", "kodak")}
    if not any(sets.values()):
        return lines + ["Not measured yet (steps `images-mnist`, `images-kodak`).", ""]
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (name, ds) in zip(axes, sets.items()):
        if not ds:
            ax.set_visible(False)
            continue
        _copy(ds, work / "images" / name, docs / "images" / name)
        ds.sort(key=lambda d: (not d["name"].startswith("pcz"), d["name"]))
        lines += [f"### {name.upper() if name == 'mnist' else 'Kodak'}", ""]
        lines += [f"- {desc}" for desc in dict.fromkeys(d["description"] for d in ds)] + [""]
        cols = [c for c in IMAGE_COLS if any(c[0] in d["results"] for d in ds)]
        rows = []
        for d in ds:
            label = d["name"].rsplit(" ", 1)[0]
            r = d["results"]
            rows.append([label] + [_f(r.get(k, [None])[0], fmt) for k, _, fmt in cols])
        lines += _table(["codec"] + [h for _, h, _ in cols], rows) + [""]
        labels = [d["name"].rsplit(" ", 1)[0] for d in ds]
        ax.barh(labels, [d["results"]["bits_per_subpixel"][0] for d in ds], color="tab:blue")
        ax.set_xlabel("bits per subpixel (lower is better)")
        ax.set_title(name.upper() if name == "mnist" else "Kodak")
        for i, d in enumerate(ds):
            v = d["results"]["bits_per_subpixel"][0]
            ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / "images.png", dpi=110)
    plt.close(fig)
    return lines + ["![bits per subpixel](docs/results/images.png)", ""]


def video_section(work: Path, docs: Path) -> tuple[list[str], list[str]]:
    """The video section, and the lines the speed section takes from the nervcodec curves."""
    lines = ["## Video: nervcodec vs x264, x265, SVT-AV1", ""]
    base = load_docs(work / "video" / "baselines")
    runs: dict[str, list[dict]] = {}
    for m in ("hnerv", "nirvana", "nervpp"):
        p = work / "video" / m / "runs.json"
        if p.exists():
            runs.update(json.loads(p.read_text()))
            _copy(load_docs(work / "video" / m), work / "video" / m, docs / "video")
    if not base and not runs:
        return lines + ["Not measured yet (steps `video-*`).", ""], []
    _copy(base, work / "video" / "baselines", docs / "video")
    if base:
        lines += [base[0]["description"].split(" Command:")[0], ""]
    rows = []
    for d in base:
        r = d["results"]
        for i in range(len(r["bpp"])):
            rows.append([d["name"], f"crf {r['crf'][i]}" if "crf" in r else "", _f(r["bpp"][i], ".4f"),
                         _f(r["psnr-rgb"][i], ".2f"), _f(r["ms-ssim-rgb"][i], ".4f"), _f(r["encode_s"][i], ".1f"),
                         _f(r["decode_fps"][i], ".0f")])
    for m, pts in runs.items():
        for p in pts:
            rows.append([f"nervcodec {m}", ", ".join(f"{k} {v}" for k, v in sorted(p["settings"].items())),
                         _f(p["bpp"], ".4f"), _f(p["psnr"], ".2f"), _f(p["ms_ssim"], ".4f"), _f(p["encode_s"], ".1f"),
                         _f(p["decode_fps"], ".0f")])
    lines += _table(["codec", "setting", "bpp", "RGB PSNR (dB)", "MS-SSIM", "encode (s)", "decode (fps)"], rows) + [""]
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    series = [(d["name"], d["results"]["bpp"], d["results"]["psnr-rgb"], d["results"]["ms-ssim-rgb"]) for d in base]
    series += [(f"nervcodec {m}", [p["bpp"] for p in pts], [p["psnr"] for p in pts], [p["ms_ssim"] for p in pts])
               for m, pts in runs.items()]
    for name, x, y1, y2 in series:
        order = sorted(range(len(x)), key=lambda i: x[i])
        style = "s--" if name.startswith("nervcodec") else "o-"
        axes[0].plot([x[i] for i in order], [y1[i] for i in order], style, label=name)
        axes[1].plot([x[i] for i in order], [y2[i] for i in order], style, label=name)
    for ax, lab in zip(axes, ("RGB PSNR (dB)", "MS-SSIM (RGB)")):
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "video_rd.png", dpi=110)
    plt.close(fig)
    lines += ["![video rate-distortion](docs/results/video_rd.png)", ""]
    lines += defaults_lines(work)
    return lines, _time_to_psnr(runs, docs)


def interpolate_log_bpp(bpp: float, xs: list[float], ys: list[float]) -> float | None:
    """``ys`` at ``bpp`` on the curve (xs, ys), linear in log bpp; None outside the measured range."""
    pts = sorted(zip(xs, ys))
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= bpp <= x1 and x1 > x0:
            t = (math.log(bpp) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    return None


def defaults_lines(work: Path) -> list[str]:
    """``nervcodec encode`` with its defaults on both clips, beside x264 medium at the same bpp."""
    rows = []
    for tag, base_dir, clip in (("clip", "baselines", "benchmark clip (Big Buck Bunny)"),
                                ("clip2", "baselines2", "second clip (Hamilton, live action)")):
        p = work / "video" / f"defaults-{tag}" / "runs.json"
        if not p.exists():
            continue
        x264 = [d for d in load_docs(work / "video" / base_dir) if d["name"].startswith("x264")]
        for pt in json.loads(p.read_text()).get("hnerv", []):
            ref = interpolate_log_bpp(pt["bpp"], x264[0]["results"]["bpp"], x264[0]["results"]["psnr-rgb"]) \
                if x264 else None
            rows.append([clip, _f(pt["bpp"], ".4f"), _f(pt["psnr"], ".2f"), _f(ref, ".2f") if ref is not None else "—",
                         _f(pt["psnr"] - ref, "+.2f") if ref is not None else "—", _f(pt["encode_s"], ".0f")])
    if not rows:
        return []
    from neural_codecs.codec.nerv import DEFAULT_BPP

    return ([f"### `nervcodec encode` with its defaults (preset medium, {DEFAULT_BPP} bpp asked), both clips", ""]
            + _table(["clip", "bpp", "RGB PSNR (dB)", "x264 medium at that bpp", "difference", "encode (s)"], rows)
            + ["", "x264 is interpolated linearly in log bpp between its measured points (steps `video-baselines*`).",
               ""])


def _time_to_psnr(runs: dict[str, list[dict]], docs: Path) -> list[str]:
    """NIRVANA vs HNeRV: seconds each takes to reach the lower of their final PSNRs (HNeRV from its
    per-epoch training curve; NIRVANA codes group after group, so the clip is done only at the end
    of its encode)."""
    if "hnerv" not in runs or "nirvana" not in runs:
        return []
    h, n = runs["hnerv"][0], runs["nirvana"][0]
    target = min(h["psnr"], n["psnr"])
    t_h = next((s for s, p in h["curve"] if p >= target), h["encode_s"])
    t_n = n["encode_s"] if n["psnr"] >= target - 1e-9 else float("inf")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    if h["curve"]:
        ax.plot([s for s, _ in h["curve"]], [p for _, p in h["curve"]], label="HNeRV training PSNR")
    ax.plot([h["encode_s"]], [h["psnr"]], "o", label="HNeRV whole clip, from its file")
    ax.plot([n["encode_s"]], [n["psnr"]], "s", label="NIRVANA whole clip, from its file")
    ax.set_xlim(left=0)
    ax.axhline(target, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("encode seconds")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "time_to_psnr.png", dpi=110)
    plt.close(fig)
    return ["### NIRVANA vs HNeRV: time to PSNR", "",
            *_table(["model", "final PSNR (dB)", f"seconds to reach {target:.2f} dB", "encode (s)"],
                    [["HNeRV " + h["tag"], _f(h["psnr"], ".2f"), _f(t_h, ".0f"), _f(h["encode_s"], ".0f")],
                     ["NIRVANA " + n["tag"], _f(n["psnr"], ".2f"), _f(t_n, ".0f"), _f(n["encode_s"], ".0f")]]),
            "", f"NIRVANA / HNeRV time to {target:.2f} dB: {t_n / t_h:.2f}× (below 1 means NIRVANA is faster). "
            "HNeRV's curve is its per-epoch training PSNR.", "",
            "![time to PSNR](docs/results/time_to_psnr.png)", ""]


def split_section(work: Path, docs: Path) -> list[str]:
    lines = ["## Split computing: Entropic Student vs JPEG / WebP into the same teacher", ""]
    for sub, title in (("split224", "### At the paper's scale: ImageNet-pretrained EfficientNet-Lite0, 224 px"),
                       ("split", "### Small scale: ResNet-18 (width 16) trained on Imagenette at 64 px")):
        lines += [title, ""]
        bench = work / sub / "bench"
        ds = load_docs(bench)
        if not ds:
            lines += [f"Not measured yet (steps `{sub}-*`).", ""]
            continue
        _copy(ds, bench, docs / sub)
        summary = bench / "summary.md"
        if summary.exists():  # its own title line is replaced by the section's
            lines += [ln for ln in summary.read_text().strip().splitlines() if not ln.startswith("# ")] + [""]
        png = bench / "rate_accuracy.png"
        if png.exists():
            shutil.copyfile(png, docs / f"{sub}_rate_accuracy.png")
            lines += [f"![top-1 vs kB per image](docs/results/{sub}_rate_accuracy.png)", ""]
    return lines


def speed_section(work: Path, docs: Path, video_lines: list[str]) -> list[str]:
    lines = ["## Speed", ""]
    ds = load_docs(work / "speed")
    if ds:
        _copy(ds, work / "speed", docs / "speed")
        for d in ds:
            r = {k: v[0] for k, v in d["results"].items()}
            lines += [f"### {d['name']}", "", d["description"], "",
                      *_table(["path", "images/s", "speed-up vs naive"],
                              [["naive O(D·|p|)", _f(r["naive_images_per_s"], ".1f"), "1"],
                               ["fast, one image per call", _f(r["fast_one_image_per_call_images_per_s"], ".1f"),
                                _f(r["speedup_one_image_per_call"], ".1f") + "×"],
                               ["fast, batched", _f(r["fast_batched_images_per_s"], ".1f"),
                                _f(r["speedup_batched"], ".1f") + "×"]]), ""]
    lines += video_lines
    if len(lines) == 2:
        lines += ["Not measured yet (steps `speed-pcz`, `video-hnerv`, `video-nirvana`).", ""]
    else:
        lines += ["Decode speeds are in the image and video tables (median of repeated decodes of the files).", ""]
    return lines


def _copy(ds: list[dict], src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for d in ds:
        shutil.copyfile(src / d["file"], dst / d["file"])


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


def write(work: Path, docs: Path, page: Path) -> str:
    work, docs = Path(work), Path(docs)
    if docs.exists():
        shutil.rmtree(docs)
    docs.mkdir(parents=True)
    steps = json.loads((work / "steps.json").read_text()) if (work / "steps.json").exists() else {}
    machines = sorted({s["machine"] for s in steps.values()})
    video, speed_from_video = video_section(work, docs)
    body = (images_section(work, docs) + video + split_section(work, docs)
            + speed_section(work, docs, speed_from_video))
    total = sum(s["seconds"] for s in steps.values())
    quick = any(s.get("quick") for s in steps.values())
    head = ["# Results", "",
            "Every number on this page comes from one command, run on a clean checkout with the shared data "
            "beside it (`data/README.md`):", "", "```", COMMAND, "```", "",
            "It runs the benchmarks below one by one (each step's log in `bench_data/results/logs/`), skips what "
            "an earlier run finished, and rewrites this page, its plots and the CompressAI-style JSON in "
            "`docs/results/` (CompressAI's plotting reads them: `python -m compressai.utils.plot --results "
            "docs/results/video/*.json -m psnr`, or `-m ms-ssim`; split: `-m top1`; images: `-m bits_per_subpixel`).", ""]
    if quick:
        head += ["**These are smoke-sized (`--quick`) results, not measurements.**", ""]
    head += [f"Machine: {'; '.join(machines) or 'n/a'}.", "",
             "| step | what | seconds | finished |", "|---|---|---|---|"]
    import results as R

    for s in R.steps(Path("DATA"), Path("WORK")):
        if s.name in steps:
            head += _table_rows([[f"`{s.name}`", s.what, f"{steps[s.name]['seconds']:.0f}", steps[s.name]["finished"]]])
        else:
            head += _table_rows([[f"`{s.name}`", s.what, "not run", ""]])
    head += ["", f"Full regeneration on this machine: {total / 60:.1f} minutes (sum of the steps above).", ""]
    text = "\n".join(head + body)
    tmp = Path(str(page) + ".part")
    tmp.write_text(text)
    tmp.replace(page)
    print(f"wrote {page} and {docs}/")
    return text
