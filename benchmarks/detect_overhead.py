"""The same images through Ultralytics' predict and through `vqtool detect`, one process each.

    python benchmarks/detect_overhead.py [--weights W.pt] [--images DIR ...] [--repeat 3]

Defaults: ../shared/assets/weights/yolov8-fall.pt on the coco8 images and the
cat photos of cats_vs_dogs val (58 images). Prints wall time per image of each whole
process (imports, model load, decode, inference, output), the ratio (goal:
vqtool <= 1.1x Ultralytics), the largest difference between their boxes and
confidences, and the wall time of `vqtool --help` (goal: < 0.3 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}

# Ultralytics as its documentation shows it: a folder source, streamed; boxes dumped for the comparison.
ULTRALYTICS_SCRIPT = """
import json, sys
from ultralytics import YOLO
folder, weights, imgsz, conf, dump = sys.argv[1:6]
with open(dump, "w") as f:
    for r in YOLO(weights).predict(folder, imgsz=int(imgsz), conf=float(conf), stream=True, verbose=False):
        f.write(json.dumps({"path": r.path, "boxes": r.boxes.data.tolist()}) + "\\n")
"""


def gather_images(folders: list[Path], into: Path) -> int:
    """Link every image of ``folders`` into one flat folder, so both tools read the same source in the same order."""
    count = 0
    for folder in folders:
        for file in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            (into / f"{count:04d}_{file.name}").symlink_to(file.resolve())
            count += 1
    return count


def timed(command: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} ... failed:\n{result.stderr[-2000:]}")
    return seconds, result


def largest_difference(ultralytics_dump: Path, vqtool_jsonl: str) -> tuple[float, float, int]:
    """(max |Δ| of box corners in pixels, max |Δ| of confidence, images whose class lists differ)."""
    theirs = {Path(r["path"]).name: r["boxes"] for r in map(json.loads, ultralytics_dump.read_text().splitlines())}
    box_delta = conf_delta = 0.0
    mismatched = 0
    for record in map(json.loads, vqtool_jsonl.splitlines()):
        boxes = theirs[Path(record["path"]).name]
        ours = [[*d["xyxy"], d["confidence"], d["class_id"]] for d in record["detections"]]
        if [int(b[5]) for b in boxes] != [int(o[5]) for o in ours]:
            mismatched += 1
            continue
        for a, b in zip(boxes, ours):
            box_delta = max(box_delta, *(abs(x - y) for x, y in zip(a[:4], b[:4])))
            conf_delta = max(conf_delta, abs(a[4] - b[4]))
    return box_delta, conf_delta, mismatched


def help_seconds(env: dict, repeat: int = 5) -> float:
    return statistics.median(timed([sys.executable, "-m", "vqtool", "--help"], env)[0] for _ in range(repeat))


def main():
    assets = Path(os.environ.get("VQTOOL_TEST_ASSETS", Path(__file__).parents[2] / "shared" / "assets"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(assets / "weights" / "yolov8-fall.pt"))
    data = assets / "data"
    parser.add_argument("--images", type=Path, nargs="+",
                        default=[data / "coco8" / "images", data / "cats_vs_dogs" / "val" / "cats"])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each tool (medians are reported).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vqtool-bench-") as scratch:
        scratch = Path(scratch)
        folder = scratch / "images"
        folder.mkdir()
        n = gather_images(args.images, folder)
        if n < 50:
            sys.exit(f"only {n} images in {', '.join(map(str, args.images))}; the benchmark wants 50 or more")
        # Neither tool may reach the network or write settings outside the scratch folder.
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(scratch / "yolo-config"),
               "VQTOOL_HOME": str(scratch / "vqtool-home")}
        dump = scratch / "ultralytics.jsonl"
        ultralytics_command = [sys.executable, "-c", ULTRALYTICS_SCRIPT, str(folder), args.weights,
                               str(args.imgsz), str(args.conf), str(dump)]
        vqtool_command = [sys.executable, "-m", "vqtool", "detect", str(folder), "--weights", args.weights,
                          "--imgsz", str(args.imgsz), "--conf", str(args.conf), "--format", "jsonl", "-q"]
        theirs, ours, output = [], [], ""
        for _ in range(args.repeat):  # alternate, so drift in machine load hits both alike
            theirs.append(timed(ultralytics_command, env)[0])
            seconds, result = timed(vqtool_command, env)
            ours.append(seconds)
            output = result.stdout
        box_delta, conf_delta, mismatched = largest_difference(dump, output)
        help_time = help_seconds(env)

    ultralytics_per_image, vqtool_per_image = statistics.median(theirs) / n, statistics.median(ours) / n
    print(f"{n} images, {args.imgsz}px, conf {args.conf}, {Path(args.weights).name}, median of {args.repeat} runs")
    print(f"Ultralytics predict : {1000 * ultralytics_per_image:7.1f} ms per image (whole process)")
    print(f"vqtool detect       : {1000 * vqtool_per_image:7.1f} ms per image (whole process)")
    print(f"ratio vqtool / Ultralytics: {vqtool_per_image / ultralytics_per_image:.3f}x (goal <= 1.1x)")
    print(f"largest difference: boxes {box_delta:.2e} px, confidence {conf_delta:.2e}, "
          f"{mismatched} images with different classes")
    print(f"vqtool --help: {help_time:.3f} s (median of 5; goal < 0.3 s)")


if __name__ == "__main__":
    main()
