"""Adapter throughput: onnxruntime (what ``dmu-migrate evolve`` runs) vs torch eager.

For each shipped adapter size (the examples' dims with the TrainConfig
defaults, plus common production dims) this measures rows/s of the same
function, ``Normalized(ResidualAdapter)`` with random weights of the shipped
shape, in two ways on 1 and 2 threads and batches of 8192 rows (what evolve
streams) and 1024 rows:

- onnxruntime: ``OnnxModel(adapter.onnx, threads=t)``, the class evolve uses,
  on an artifact exported by the project's own exporter;
- torch eager: the module under ``torch.inference_mode()`` with
  ``torch.set_num_threads(t)``.

Both are timed in the same process, interleaved sample by sample, so the
ratio holds on a noisy machine. Achieved GFLOP/s count only the Linear layers
(2 * in * out per row each); LayerNorm, GELU, the residual add and the
L2 normalisations are O(dim) per row and left out. They are set against the
CPU's theoretical FMA peak and against a 2048x2048 float32 numpy matmul
(the attainable peak). Where onnxruntime is slower, a per-operator profile of
both frameworks shows where the time goes.

    python benchmarks/adapter.py              # full run: results/adapter.json + docs section
    python benchmarks/adapter.py --reps 3 --no-write   # a quick check, writes nothing
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from artifacts import adapter_module, make_adapter_artifact
from markdown import publish, replace_section
from threadpoolctl import threadpool_limits

from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.training.config import TrainConfig
from dmu_migrate.training.models import Normalized

RESULTS = Path(__file__).resolve().parent / "results" / "adapter.json"
THREADS = (1, 2)
BATCHES = (8192, 1024)
# Boost clock where cpuinfo cannot show it, by (vendor, family, model): Zen 4 EPYC
# (Genoa) boosts to 3.7 GHz on the common SKUs such as the 9654 (F parts go higher).
BOOST_GHZ = {("AuthenticAMD", 25, 17): 3.7}
SAMPLE_S = 0.05
# Operator names of the matrix products and of F.normalize (its ONNX export is
# ReduceL2 -> Clip -> Expand -> Div), to split a profile into where the time goes.
GEMM_OPS = {"Gemm", "MatMul", "aten::addmm", "aten::mm", "aten::matmul"}
NORM_OPS = {
    "ReduceL2",
    "Clip",
    "Expand",
    "Div",
    "aten::linalg_vector_norm",
    "aten::clamp_min",
    "aten::div",
}  # each timed sample repeats the call until it lasts about this long


@dataclass(frozen=True)
class Size:
    label: str
    old_dim: int
    new_dim: int
    hidden: int
    layers: int


def shipped_sizes() -> list[Size]:
    """The examples' adapters as their run.sh trains them, then common production dims."""
    h, n = TrainConfig.adapter_hidden, TrainConfig.adapter_layers
    return [
        # Fashion-MNIST: old CNN embeds to 64-d, --dim unset so new = old; defaults otherwise.
        Size("fashion_mnist", 64, 64, h, n),
        # WordNet: L3 -> 384-d, new = old; run.sh passes --adapter-layers 2.
        Size("wordnet_text", 384, 384, h, 2),
        Size("128", 128, 128, h, n),
        Size("512", 512, 512, h, n),
        Size("768", 768, 768, h, n),
        Size("768, 2 layers", 768, 768, h, 2),
    ]


def flops_per_row(size: Size) -> int:
    """Multiply-adds of the Linear layers, x2; O(dim) elementwise work is left out."""
    dims = [size.old_dim] + [size.hidden] * size.layers + [size.new_dim]
    flops = sum(2 * a * b for a, b in zip(dims, dims[1:], strict=False))
    if size.old_dim != size.new_dim:  # the skip path is then a Linear too
        flops += 2 * size.old_dim * size.new_dim
    return flops


def cpu_info() -> dict[str, Any]:
    """Model, cores, clock and FMA throughput, from /proc/cpuinfo."""
    fields: dict[str, str] = {}
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    vendor, family = fields.get("vendor_id", ""), int(fields.get("cpu family", "0"))
    model = int(fields.get("model", "0"))
    # Two FMA pipes per core on every x86 core of this class. AVX-512 doubles the
    # lanes only where the pipes are 512 bits wide: AMD Zen 4 (family 25) runs a
    # 512-bit op as two 256-bit halves, so it keeps 8 float32 lanes per pipe.
    wide = "avx512f" in flags and not (vendor == "AuthenticAMD" and family <= 25)
    lanes = 16 if wide else 8 if {"avx2", "fma"} <= flags else 4
    flop_per_cycle = 2 * lanes * 2  # 2 pipes x lanes x (multiply + add)
    # Under a hypervisor cpuinfo shows only the nominal (TSC) clock, and a one-thread
    # matmul beats the peak at that clock, so the cores boost. The peak is therefore
    # taken at the model's boost clock where it is known.
    nominal = float(fields.get("cpu MHz", "0")) / 1000
    ghz = BOOST_GHZ.get((vendor, family, model), nominal)
    simd = [f for f in ("avx2", "fma", "avx512f") if f in flags]
    return {
        "model": fields.get("model name", platform.processor()),
        "vendor": vendor,
        "family": family,
        "model_number": model,
        "cores": os.cpu_count(),
        "simd": simd,
        "ghz_nominal": round(nominal, 3),
        "ghz_assumed": ghz,
        "peak_gflops_per_core_nominal": round(flop_per_cycle * nominal, 1),
        "flop_per_cycle_per_core": flop_per_cycle,
        "peak_gflops_per_core": round(flop_per_cycle * ghz, 1),
        "formula": f"2 FMA pipes x {lanes} float32 lanes x 2 FLOP x {ghz:.2f} GHz per core",
    }


def rate(fn: Callable[[], object], rows: int, inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return rows * inner / (time.perf_counter() - start)


def calibrate(fn: Callable[[], object]) -> int:
    """Warm up, then pick how many calls make one timed sample last about SAMPLE_S."""
    for _ in range(2):
        fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    return max(1, round(SAMPLE_S / max(once, 1e-6)))


def interleaved(
    fns: dict[str, Callable[[], object]], rows: int, reps: int
) -> dict[str, list[float]]:
    """Rows/s samples of each function, timed in turn so that load spikes hit both."""
    inner = {name: calibrate(fn) for name, fn in fns.items()}
    rates: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for rep in range(reps):
        # Alternate who goes first: caches and clock boost then favour neither.
        for name in names if rep % 2 == 0 else reversed(names):
            rates[name].append(rate(fns[name], rows, inner[name]))
    return rates


def matmul_peak(threads: int, reps: int) -> dict[str, float]:
    """GFLOP/s of a 2048^3 float32 matmul in numpy (OpenBLAS) and torch, on ``threads``."""
    n = 2048
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    torch.set_num_threads(threads)
    with threadpool_limits(limits=threads, user_api="blas"):
        rates = interleaved({"numpy": lambda: np.dot(a, b), "torch": lambda: ta @ tb}, 1, reps)
    return {name: 2 * n**3 * statistics.median(r) / 1e9 for name, r in rates.items()}


def bench_size(size: Size, workdir: Path, reps: int) -> list[dict[str, Any]]:
    """Rows/s of both frameworks for one adapter size, every thread count and batch."""
    path = make_adapter_artifact(
        workdir / size.label.replace(" ", "_").replace(",", ""),
        size.old_dim,
        size.new_dim,
        size.hidden,
        size.layers,
    )
    module = Normalized(adapter_module(size.old_dim, size.new_dim, size.hidden, size.layers))
    rows = []
    for threads in THREADS:
        onnx = OnnxModel(path / "adapter.onnx", threads=threads)
        torch.set_num_threads(threads)
        for batch in BATCHES:
            x = np.random.default_rng(1).standard_normal((batch, size.old_dim), dtype=np.float32)
            xt = torch.from_numpy(x)

            def run_torch(xt: torch.Tensor = xt) -> np.ndarray:
                with torch.inference_mode():
                    return module(xt).numpy()

            def run_ort(x: np.ndarray = x, onnx: OnnxModel = onnx) -> np.ndarray:
                return onnx(x)

            error = float(np.abs(run_ort() - run_torch()).max())
            samples = interleaved({"ort": run_ort, "torch": run_torch}, batch, reps)
            rates = {name: statistics.median(r) for name, r in samples.items()}
            # Samples were taken in pairs, so per-pair ratios show the noise of the ratio.
            paired = [o / t for o, t in zip(samples["ort"], samples["torch"], strict=True)]
            q1, _, q3 = statistics.quantiles(paired, n=4)
            gflop = flops_per_row(size) / 1e9
            rows.append(
                {
                    **asdict(size),
                    "threads": threads,
                    "batch": batch,
                    "flops_per_row": flops_per_row(size),
                    "ort_rows_s": rates["ort"],
                    "torch_rows_s": rates["torch"],
                    "ratio": rates["ort"] / rates["torch"],
                    "ratio_iqr": [q1, q3],
                    "ort_gflops": rates["ort"] * gflop,
                    "torch_gflops": rates["torch"] * gflop,
                    "max_abs_diff": error,
                    "samples_rows_s": samples,
                }
            )
            print(
                f"{size.label:>14} t={threads} batch={batch:>5}: ort {rates['ort']:>10,.0f} "
                f"torch {rates['torch']:>10,.0f} rows/s  ratio {rates['ort'] / rates['torch']:.2f}",
                flush=True,
            )
    return rows


def ort_profile(path: Path, x: np.ndarray, threads: int, calls: int) -> dict[str, float]:
    """Share of onnxruntime kernel time per operator type, from its built-in profiler.

    OnnxModel cannot switch profiling on, so this session copies its options
    (intra-op threads, CPU provider) and adds only the profiler.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(calls):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            per_op[op] = per_op.get(op, 0.0) + event["dur"]
    return per_call_ms(per_op, 1e-3, calls)


def torch_profile(
    module: torch.nn.Module, x: np.ndarray, threads: int, calls: int
) -> dict[str, float]:
    """Share of torch CPU self time per aten operator."""
    torch.set_num_threads(threads)
    xt = torch.from_numpy(x)
    with torch.inference_mode(), torch.profiler.profile() as prof:
        for _ in range(calls):
            module(xt)
    per_op = {e.key: float(e.self_cpu_time_total) for e in prof.key_averages()}
    return per_call_ms(per_op, 1e-3, calls)


def per_call_ms(per_op: dict[str, float], to_ms: float, calls: int) -> dict[str, float]:
    """Milliseconds per call of each operator type, largest first, the tail under 1% dropped."""
    total = sum(per_op.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])
    return {op: round(t * to_ms / calls, 3) for op, t in ranked if t / total >= 0.01}


def split(ops: dict[str, float]) -> tuple[float, float, float]:
    """Milliseconds in matrix products, in L2 normalisations, and in everything else."""
    gemm = sum(ms for op, ms in ops.items() if op in GEMM_OPS)
    norm = sum(ms for op, ms in ops.items() if op in NORM_OPS)
    return gemm, norm, sum(ops.values()) - gemm - norm


def describe(ops: dict[str, float]) -> str:
    total = sum(ops.values()) or 1.0
    top = list(ops.items())[:5]
    return ", ".join(f"{op} {ms:.2f} ms ({100 * ms / total:.0f}%)" for op, ms in top)


def profile_misses(
    results: list[dict[str, Any]], sizes: list[Size], workdir: Path
) -> list[dict[str, Any]]:
    """Per-operator profiles of the worst miss at each thread count (batch 8192)."""
    out = []
    for threads in THREADS:
        misses = [
            r for r in results if r["threads"] == threads and r["batch"] == 8192 and r["ratio"] < 1
        ]
        if not misses:
            continue
        worst = min(misses, key=lambda r: r["ratio"])
        size = next(s for s in sizes if s.label == worst["label"])
        path = workdir / size.label.replace(" ", "_").replace(",", "") / "adapter.onnx"
        x = np.random.default_rng(1).standard_normal((8192, size.old_dim), dtype=np.float32)
        module = Normalized(adapter_module(size.old_dim, size.new_dim, size.hidden, size.layers))
        out.append(
            {
                "label": size.label,
                "threads": threads,
                "ratio": worst["ratio"],
                "ort_ops": ort_profile(path, x, threads, 10),
                "torch_ops": torch_profile(module, x, threads, 10),
            }
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    cpu, peaks = report["cpu"], report["matmul_gflops"]
    lines = [
        "## Adapter throughput: onnxruntime vs torch eager",
        "",
        f"Machine: {cpu['model']} ({cpu['vendor']} family {cpu['family']} model "
        f"{cpu['model_number']}), {cpu['cores']} cores, {', '.join(cpu['simd'])}; "
        f"onnxruntime {report['versions']['onnxruntime']}, torch {report['versions']['torch']}, "
        f"numpy {report['versions']['numpy']}. Date: {report['date']}.",
        f"Reproduce: `{report['command']}` ({report['reps']} interleaved samples per cell, "
        "median; raw numbers in `benchmarks/results/adapter.json`).",
        "",
        "Same function both sides: `Normalized(ResidualAdapter)` with random weights of the "
        "shipped shape; onnxruntime through `OnnxModel(path, threads=t)` (what evolve runs), "
        "torch under `inference_mode` with `set_num_threads(t)`. GFLOP/s count the Linear "
        "layers only (2 x in x out per row); LayerNorm, GELU, the residual add and the "
        "normalisations are left out.",
        "",
        f"Peaks per thread count. Theoretical: {cpu['formula']} = "
        f"{cpu['peak_gflops_per_core']} GFLOP/s per core. Under the hypervisor /proc/cpuinfo "
        f"shows only the nominal {cpu['ghz_nominal']} GHz "
        f"({cpu['peak_gflops_per_core_nominal']} GFLOP/s per core at that clock), which a "
        "one-thread matmul exceeds, so the cores boost; the clock assumed is the boost clock of "
        "the common Zen 4 EPYC parts (e.g. 9654). Attainable: a 2048x2048 float32 matmul, median of "
        "interleaved runs.",
        "",
        "| threads | theoretical GFLOP/s | numpy matmul GFLOP/s | torch matmul GFLOP/s |",
        "|---:|---:|---:|---:|",
    ]
    for t in THREADS:
        p = peaks[str(t)]
        theo = cpu["peak_gflops_per_core"] * t
        lines.append(f"| {t} | {theo:.0f} | {p['numpy']:.0f} | {p['torch']:.0f} |")
    lines += [
        "",
        "| adapter (old->new, hidden, layers) | MFLOP/row | threads | batch | ORT rows/s "
        "| torch rows/s | ORT/torch (pair IQR) | ORT GFLOP/s | torch GFLOP/s | ORT % theor. "
        "| ORT % matmul | target met |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        theo = cpu["peak_gflops_per_core"] * r["threads"]
        attain = peaks[str(r["threads"])]["numpy"]
        shape = f"{r['label']}: {r['old_dim']}->{r['new_dim']}, {r['hidden']}, {r['layers']}"
        lines.append(
            f"| {shape} | {r['flops_per_row'] / 1e6:.2f} | {r['threads']} | {r['batch']} "
            f"| {r['ort_rows_s']:,.0f} | {r['torch_rows_s']:,.0f} | {r['ratio']:.2f} "
            f"({r['ratio_iqr'][0]:.2f}-{r['ratio_iqr'][1]:.2f}) "
            f"| {r['ort_gflops']:.1f} | {r['torch_gflops']:.1f} | {100 * r['ort_gflops'] / theo:.0f}% "
            f"| {100 * r['ort_gflops'] / attain:.0f}% | {verdict(r['ratio'])} |"
        )
    lines += ["", summary(report)]
    return "\n".join(lines)


def verdict(ratio: float) -> str:
    return "yes" if ratio >= 1 else f"no ({100 * (ratio - 1):.1f}%)"


def summary(report: dict[str, Any]) -> str:
    """The target's verdict, with where the time goes for the misses."""
    results = report["results"]
    misses = [r for r in results if r["ratio"] < 1]
    text = [
        f'Target "onnxruntime adapter >= torch eager on the same thread count": met in '
        f"{len(results) - len(misses)} of {len(results)} cells."
    ]
    for t in THREADS:
        cells = [r for r in misses if r["threads"] == t]
        if not cells:
            text.append(f"Met in every {t}-thread cell.")
        else:
            worst = min(cells, key=lambda r: r["ratio"])
            text.append(
                f"Missed on {t} thread(s) in {len(cells)} cells; worst {worst['label']} "
                f"batch {worst['batch']}: ORT at {worst['ratio']:.2f}x torch "
                f"({100 * (1 - worst['ratio']):.0f}% slower)."
            )
    for t in THREADS:
        # Relative spread of the per-pair ratios: how far one cell's ratio can be trusted.
        widths = [
            (r["ratio_iqr"][1] - r["ratio_iqr"][0]) / r["ratio"]
            for r in results
            if r["threads"] == t
        ]
        text.append(
            f"Noise, {t} thread(s): the per-pair ratio's interquartile range is "
            f"{100 * statistics.median(widths):.0f}% of the ratio (median over cells)."
        )
    cell = {(r["label"], r["batch"], r["threads"]): r for r in results}
    pairs = [(r, cell[(r["label"], r["batch"], 2)]) for r in results if r["threads"] == 1]
    slower = {
        fw: sum(two[f"{fw}_rows_s"] < one[f"{fw}_rows_s"] for one, two in pairs)
        for fw in ("ort", "torch")
    }
    if any(slower.values()):
        # Two threads slower than one means the second core was busy with other work.
        text.append(
            f"Two threads were slower than one in {slower['ort']} of {len(pairs)} "
            f"onnxruntime cells and {slower['torch']} torch cells: the second core was not free "
            "during this run, so the 2-thread ratios say how each framework copes with a "
            "contended core more than how it scales."
        )
    if "load_avg_1min" in report:
        text.append(f"1-minute load average at the end of the run: {report['load_avg_1min']}.")
    for p in report["profiles"]:
        ort_split, torch_split = split(p["ort_ops"]), split(p["torch_ops"])
        text.append(
            f"Profile of the worst miss, {p['label']}, {p['threads']} thread(s), batch 8192, "
            "per call (onnxruntime: a session with OnnxModel's options plus its profiler): "
            f"onnxruntime kernels {describe(p['ort_ops'])}; "
            f"torch self time {describe(p['torch_ops'])}. "
            f"Grouped, onnxruntime vs torch: matrix products {ort_split[0]:.1f} vs "
            f"{torch_split[0]:.1f} ms, L2 normalisations {ort_split[1]:.1f} vs "
            f"{torch_split[1]:.1f} ms, the rest {ort_split[2]:.1f} vs {torch_split[2]:.1f} ms; "
            f"of the {sum(ort_split) - sum(torch_split):.1f} ms gap, "
            f"{ort_split[1] - torch_split[1]:.1f} ms is in the normalisations and "
            f"{ort_split[0] - torch_split[0]:.1f} ms in the matrix products "
            "(onnxruntime fuses the exported GELU's division into Gelu, so Div here is the "
            "normalisations' alone; torch's aten::copy_ is addmm's bias copy, under the rest)."
        )
    expanded = any("Expand" in str(p["ort_ops"]) for p in report["profiles"])
    if report["profiles"] and expanded:
        text.append(
            "Why: the exported `F.normalize` (run twice: on the input inside the adapter and on "
            "the output by `Normalized`) is ReduceL2 -> Clip -> Expand -> Div. Expand writes the "
            "row norms out as a full batch x dim tensor and Div then reads two full tensors, "
            "where torch divides by a broadcast view of the norms. The matrix products are "
            "onnxruntime's own sgemm against torch's."
        )
    elif report["profiles"]:
        text.append(
            "The normalisations export as ReduceL2 -> Clip -> Div with a broadcast divide "
            "(`models.l2_normalize`, no Expand), so the gap left is onnxruntime's own sgemm "
            "against torch's and the element-wise kernels."
        )
    return "\n\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=21, help="Timed samples per cell.")
    parser.add_argument("--no-write", action="store_true", help="Print only; write nothing.")
    parser.add_argument("--sizes", type=int, default=0, help="Only the first N sizes (0 = all).")
    parser.add_argument(
        "--render", action="store_true", help="Rewrite the docs section from the saved JSON only."
    )
    args = parser.parse_args()
    if args.reps < 2:
        parser.error("--reps must be at least 2 (the pair ratios need a spread)")
    if args.render:
        replace_section("adapter", markdown(json.loads(RESULTS.read_text())))
        return

    sizes = shipped_sizes()[: args.sizes or None]
    start = time.perf_counter()
    peaks = {str(t): matmul_peak(t, max(3, args.reps // 3)) for t in THREADS}
    print(f"matmul GFLOP/s: {peaks}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = [row for s in sizes for row in bench_size(s, Path(tmp), args.reps)]
        profiles = profile_misses(results, sizes, Path(tmp))
    command = "python benchmarks/adapter.py" + (f" --reps {args.reps}" if args.reps != 21 else "")
    report = {
        "date": datetime.date.today().isoformat(),
        # The 1-minute load average at the end: another process's load skews 2-thread cells.
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "command": command,
        "reps": args.reps,
        "cpu": cpu_info(),
        "versions": {
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "matmul_gflops": peaks,
        "results": results,
        "profiles": profiles,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(summary(report))
    print(f"wall {report['wall_s']} s")
    if not args.no_write:
        publish(RESULTS, report, "adapter", markdown(report))


if __name__ == "__main__":
    main()
