"""`vqtool benchmark`'s throughput against a hand measurement of the same file, side by side in one run.

    python benchmarks/benchmark_vs_hand.py model.onnx model.int8.openvino --data ../shared/assets/data/cats_vs_dogs

For each exported file (ONNX or an OpenVINO IR folder), alternately --rounds times: `vqtool benchmark FILE DATA
--batch 1,32 --json` in a process of its own, then the runtime called by hand in this process (an ONNX Runtime
session or a compiled OpenVINO model with the same thread count and precision hint as vqtool's, a fixed
normalised batch, as many calls as fit in --seconds). Prints both images/s per batch size, their ratio and
whether it is within 20 %, with the CPU's features first. The hand figure excludes everything but the runtime's
call, so the ratio is the share of a call's time vqtool's measurement adds or loses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BATCHES = (1, 32)
TOLERANCE = 0.20


def vqtool_figures(model: Path, data: str, seconds: float, threads: int) -> dict[int, float]:
    out = subprocess.run([sys.executable, "-m", "vqtool", "benchmark", str(model), data, "--batch",
                          ",".join(map(str, BATCHES)), "--seconds", str(seconds), "--threads", str(threads),
                          "--json", "-q"], capture_output=True, text=True, check=True).stdout
    measured = json.loads(out)["formats"][0]
    return {batch: measured[f"batch{batch}_images_per_second"] for batch in BATCHES}


def hand_runner(model: Path, threads: int):
    """A function running one normalised float batch through the file's runtime, set up as vqtool sets it up."""
    if model.is_dir():
        import openvino as ov

        compiled = ov.Core().compile_model(str(model / "model.xml"), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
        request = compiled.create_infer_request()
        return lambda batch: request.infer({0: batch})
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})


def hand_figures(model: Path, size: int, seconds: float, threads: int) -> dict[int, float]:
    run = hand_runner(model, threads)
    figures = {}
    for batch in BATCHES:
        inputs = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
        run(inputs)  # the first call compiles kernels: not timed, as vqtool's warm-up call
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            run(inputs)
            calls += 1
        figures[batch] = calls * batch / (time.perf_counter() - started)
    return figures


def input_size(model: Path) -> int:
    document = model / "vqtool.json" if model.is_dir() else None
    if document is not None:
        return json.loads(document.read_text())["preprocess"]["size"]
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    return json.loads(metadata["vqtool"])["preprocess"]["size"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="exported files (.onnx, or an OpenVINO IR folder)")
    parser.add_argument("--data", required=True, help="the dataset vqtool benchmark measures accuracy on")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from vqtool.compute.cpu import cpu_features

    print(f"{cpu_features(with_openvino=True).describe()}; {args.seconds} s per figure, {args.rounds} rounds",
          flush=True)
    print("| file | batch | `vqtool benchmark` img/s (median) | by hand img/s (median) | ratio | within 20 % |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        size = input_size(model)
        ours, hand = {b: [] for b in BATCHES}, {b: [] for b in BATCHES}
        for _ in range(args.rounds):  # alternated, so that the machine's drift falls on both
            for batch, figure in vqtool_figures(model, args.data, args.seconds, args.threads).items():
                ours[batch].append(figure)
            for batch, figure in hand_figures(model, size, args.seconds, args.threads).items():
                hand[batch].append(figure)
        for batch in BATCHES:
            a, b = statistics.median(ours[batch]), statistics.median(hand[batch])
            print(f"| {model.name} | {batch} | {a:.1f} | {b:.1f} | {a / b:.2f} | "
                  f"{'yes' if abs(a / b - 1) <= TOLERANCE else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
