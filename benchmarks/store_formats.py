"""Storing decoded pixels: vqtool's raw uint8 file (positional reads) against litdata's optimize + StreamingDataset.

    PYTHONPATH=.:/path/to/litdata python benchmarks/store_formats.py --photos /tmp/data_scale/photos-2000

Both hold the same decoded uint8 images (the split of --photos at --imgsz, taken from vqtool's store, built
first when it is not there). Measured in this process, page cache warm for both (each is read once before):

  write   seconds to write the N images into the format (vqtool: already written by the store; litdata: optimize)
  read    images/s of one epoch in random order, batches of 64 gathered into one uint8 tensor
          (vqtool: pipeline.batches over the stored rows, with its prefetch thread; litdata: StreamingDataset with
          shuffle=True through its StreamingDataLoader, num_workers 0 and 2)

Prints one JSON line per measurement and the ratio of litdata's best read rate to the store's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def stored_split(photos: Path, imgsz: int):
    from vqtool.data import DataOptions, load_dataset
    from vqtool.data.pipeline import Preprocess, decode_split

    split = load_dataset(str(photos), DataOptions(val_split=0)).train
    return decode_split(split, Preprocess(imgsz, 3, (0.5,) * 3, (0.5,) * 3))


def memmap_epoch(split, batch_size: int) -> float:
    from vqtool.data.pipeline import batches

    started, seen = time.perf_counter(), 0
    for images, _ in batches(split, batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)):
        seen += len(images)
    return seen / (time.perf_counter() - started)


class Item:
    """litdata's optimize pickles its function into a worker process: a picklable one over an in-memory copy."""

    def __init__(self, split):
        self.pixels, self.labels = split.pixels[:].numpy(), split.labels.numpy()

    def __call__(self, i):
        return {"image": self.pixels[i], "label": int(self.labels[i])}


def litdata_write(split, folder: Path) -> float:
    from litdata import optimize

    item = Item(split)
    started = time.perf_counter()
    optimize(fn=item, inputs=list(range(len(split))), output_dir=str(folder), chunk_bytes="64MB", num_workers=1)
    return time.perf_counter() - started


def litdata_epoch(folder: Path, batch_size: int, workers: int) -> float:
    from litdata import StreamingDataLoader, StreamingDataset

    loader = StreamingDataLoader(StreamingDataset(str(folder), shuffle=True, seed=0), batch_size=batch_size,
                                 num_workers=workers)
    started, seen = time.perf_counter(), 0
    for batch in loader:
        images = torch.as_tensor(np.asarray(batch["image"]))
        seen += len(images)
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--imgsz", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    split = stored_split(args.photos, args.imgsz)
    print(json.dumps({"images": len(split), "imgsz": args.imgsz, "bytes": len(split) * 3 * args.imgsz**2}))
    memmap_epoch(split, args.batch_size)  # warm the page cache
    mapped = memmap_epoch(split, args.batch_size)
    print(json.dumps({"format": "vqtool store (uint8 file, preadv)", "read_images_per_s": round(mapped, 1)}))
    folder = Path(tempfile.mkdtemp(prefix="litdata-"))
    try:
        seconds = litdata_write(split, folder / "optimized")
        print(json.dumps({"format": "litdata", "write_s": round(seconds, 2)}))
        rates = []
        for workers in (0, 2):
            litdata_epoch(folder / "optimized", args.batch_size, workers)  # warm
            rates.append(litdata_epoch(folder / "optimized", args.batch_size, workers))
            print(json.dumps({"format": "litdata", "num_workers": workers, "read_images_per_s": round(rates[-1], 1)}))
        print(f"litdata's best read rate / the store's: {max(rates) / mapped:.2f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
