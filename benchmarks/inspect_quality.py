"""How well `vqtool inspect` finds injected label flips and near copies, and what it costs at scale.

    python benchmarks/inspect_quality.py flips  [--noise 0.05 0.2] [--fashion 3000] [--offset 0] [--flip-seed 1]
    python benchmarks/inspect_quality.py copies [--thresholds 0.88 0.9 0.92 0.95] [--datasets fashion cats_vs_dogs]
    python benchmarks/inspect_quality.py search [--sizes 2000 10000 50000]
    python benchmarks/inspect_quality.py scale  [--sizes 2000 10000] [--imgsz 224]

All data is made under --work from the shared assets (cats_vs_dogs, Fashion-MNIST, the Lite0 weights); the
assets themselves are only read. Each part prints its figures:

flips   random label flips (5 % and 20 % by default) moved into the other class folders of a copy of
        cats_vs_dogs and of a Fashion-MNIST subset (PNG files, --fashion images, classes balanced, each class's from
        its --offset-th item on; --flip-seed picks the flips: other values give an unseen subset); precision and
        recall of inspect's label-error candidates against the flipped set, beside cleanlab's own candidates
        (before inspect drops those whose given label is still as likely as chance) and a plain baseline on the
        same out-of-fold probabilities (an image is flagged when its given label's probability is under 0.5), and the
        time of the whole inspection (first run: decoding and the backbone included).
copies  50 images each copied five ways (resized 0.5x and 2x, JPEG quality 50, 5 % cropped, mirrored) into the
        same class folder, and 10 byte-identical copies (5 into the next class, 5 into the other split), in a copy of
        cats_vs_dogs (500 photos) and of 2,000 Fashion-MNIST items (28 px greyscale PNGs, train/ and val/): recall
        of each kind of near copy (the pair original-copy reported), the true pairs (copies of one image, copy-copy
        pairs included) and the false ones (the dataset's own look-alikes included), and the byte-identical pairs
        reported with their relation; at each --thresholds value of --near-threshold (from one search at the
        lowest).
search  cosine top-10 over N L2-normalised random 1280-d vectors: plain torch in blocks (what inspect uses) vs
        faiss-cpu's exact inner-product index: seconds and the process's peak RSS growth; and "thumbnails", the
        pixel side of the near-copy search on N random thumbnails: their layout search, and the detail and
        layout of every pair it finds compared (as if each were a candidate).
scale   inspect of N Fashion-MNIST PNGs (class folders), each in a process of its own: peak RSS and seconds, the
        first run (decoding, backbone) and the second (from the store and the feature store).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ASSETS = Path(os.environ.get("VQTOOL_TEST_ASSETS") or Path(__file__).resolve().parents[1].parent / "shared" / "assets")
LITE0 = ASSETS / "weights" / "tf_efficientnet_lite0.in1k.safetensors"
CATS_DOGS = ASSETS / "data" / "cats_vs_dogs"
FASHION = ASSETS / "data" / "fashion-mnist"
FASHION_CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def _inspect(folder: Path, threshold: float = 0.90, imgsz: int | None = None):
    from vqtool.data import DataOptions
    from vqtool.inspection.job import InspectOptions, inspect_dataset
    from vqtool.reporter import SILENT

    options = InspectOptions(weights=str(LITE0), near_threshold=threshold, imgsz=imgsz)
    return inspect_dataset(str(folder), DataOptions(), options, SILENT)


# --- label flips ---------------------------------------------------------------------------------


def copy_cats_dogs(target: Path) -> list[tuple[Path, str]]:
    """cats_vs_dogs copied (train/ and val/); (relative path, class) of each image."""
    found = []
    for path in sorted(CATS_DOGS.rglob("*.jpg")):
        relative = path.relative_to(CATS_DOGS)
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / relative)
        found.append((relative, relative.parent.name))
    return found


def fashion_pngs(target: Path, count: int, offset: int = 0, split: str = "train") -> list[tuple[Path, str]]:
    """``count`` Fashion-MNIST training items (classes balanced, from the ``offset``-th of each class) as PNGs in
    <split>/<class>/."""
    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as f:
        items = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    per_class, found = count // 10, []
    for label in range(10):
        for index in np.nonzero(labels == label)[0][offset:offset + per_class]:
            relative = Path(split) / FASHION_CLASSES[label] / f"{index}.png"
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(items[index]).save(target / relative)
            found.append((relative, FASHION_CLASSES[label]))
    return found


def flip_labels(root: Path, images: list[tuple[Path, str]], noise: float, seed: int) -> set[str]:
    """Move a ``noise`` share of the images into another class's folder; their new absolute paths."""
    rng = np.random.default_rng(seed)
    classes = sorted({label for _, label in images})
    chosen = rng.choice(len(images), size=round(noise * len(images)), replace=False)
    flipped = set()
    for i in chosen:
        relative, label = images[i]
        other = classes[(classes.index(label) + rng.integers(1, len(classes))) % len(classes)]
        target = root / relative.parent.parent / other / f"flipped-{relative.name}"
        (root / relative).rename(target)
        flipped.add(str(target))
    return flipped


def precision_recall(flagged: set[str], truth: set[str]) -> tuple[float, float]:
    hits = len(flagged & truth)
    return hits / max(len(flagged), 1), hits / max(len(truth), 1)


def flips_folder(args, name: str, noise: float) -> Path:
    """The dataset with flipped labels, made unless an earlier run made it (whose stores this one then reads: its
    time says so); the first offset and seed keep their old folder names."""
    size = 500 if name == "cats_vs_dogs" else args.fashion
    subset = "" if (args.offset, args.flip_seed) == (0, 1) else f"-offset{args.offset}-seed{args.flip_seed}"
    root = args.work / f"flips-{name}-{noise}{subset}"
    marker = root / ".complete"
    if not (marker.is_file() and marker.read_text().strip() == str(size)):
        shutil.rmtree(root, ignore_errors=True)
        images = copy_cats_dogs(root) if name == "cats_vs_dogs" else fashion_pngs(root, size, args.offset)
        flip_labels(root, images, noise, seed=args.flip_seed)
        marker.write_text(str(size))
    return root


def flips(args) -> None:
    from vqtool.inspection.labels import cleanlab_issues

    print(f"{'dataset':<14}{'noise':>6}{'images':>8}{'flipped':>9} | {'inspect P':>9}{'R':>6}{'flagged':>8} | "
          f"{'cleanlab P':>10}{'R':>6}{'flagged':>8} | {'baseline P':>10}{'R':>6}{'flagged':>8} | "
          f"{'oof acc':>7}{'seconds':>8}")
    for name in args.datasets:
        for noise in args.noise:
            root = flips_folder(args, name, noise)
            truth = {str(path) for path in root.rglob("flipped-*")}
            started = time.perf_counter()
            inspection = _inspect(root)
            seconds = time.perf_counter() - started
            flagged = {f["image"] for f in inspection.document["label_issues"]}
            pool, probabilities = inspection.images, inspection.probabilities
            labels = np.unique(pool.labels, return_inverse=True)[1]  # the head's: classes with images only
            cleanlab = {pool.names[i] for i in cleanlab_issues(labels, probabilities)}
            given = probabilities[np.arange(len(pool)), labels]
            baseline = {pool.names[i] for i in np.nonzero(given < 0.5)[0]}
            columns = " | ".join(f"{p:>{w}.3f}{r:>6.3f}{len(found):>8}" for found, w in
                                 ((flagged, 9), (cleanlab, 10), (baseline, 10))
                                 for p, r in [precision_recall(found, truth)])
            print(f"{name:<14}{noise:>6.2f}{len(pool):>8}{len(truth):>9} | {columns} | "
                  f"{inspection.document['label_check']['out_of_fold_accuracy']:>7.3f}{seconds:>8.1f}", flush=True)


# --- near copies -----------------------------------------------------------------------------------

KINDS = {
    "resized 0.5x": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.BICUBIC),
    "resized 2x": lambda im: im.resize((im.width * 2, im.height * 2), Image.BICUBIC),
    "jpeg q50": lambda im: im,
    "cropped 5%": lambda im: im.crop((round(im.width * .05), round(im.height * .05), im.width, im.height)),
    "mirrored": ImageOps.mirror,
}


COPIED = {"cats_vs_dogs": lambda root: copy_cats_dogs(root),  # 500 photos, train/ and val/
          "fashion": lambda root: fashion_pngs(root, 1800) + fashion_pngs(root, 200, offset=180, split="val")}


def make_copies(root: Path, dataset: str, originals: int, seed: int = 2):
    """A copy of ``dataset`` with near and byte-identical copies put in; {copy path: (original path, kind)}."""
    images = COPIED[dataset](root)
    classes = sorted({label for _, label in images})
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(images), size=originals + 10, replace=False)
    copies = {}
    for i in chosen[:originals]:
        relative, _ = images[i]
        source = Image.open(root / relative)
        source = source.convert("L" if source.mode == "L" else "RGB")
        for number, (kind, make) in enumerate(KINDS.items()):
            target = root / relative.parent / f"copy{number}-{relative.stem}{'.jpg' if kind == 'jpeg q50' else relative.suffix}"
            make(source).save(target, quality=50 if kind == "jpeg q50" else 90)
            copies[str(target)] = (str(root / relative), kind)
    for n, i in enumerate(chosen[originals:]):
        relative, label = images[i]
        split, other = relative.parts[0], classes[(classes.index(label) + 1) % len(classes)]
        if n < 5:
            target = root / split / other / f"same-{relative.name}"
            kind = "byte-identical, across classes"
        else:
            target = root / ("val" if split == "train" else "train") / label / f"same-{relative.name}"
            kind = "byte-identical, across splits"
        shutil.copyfile(root / relative, target)
        copies[str(target)] = (str(root / relative), kind)
    return copies


def copies(args) -> None:
    for dataset in args.datasets:
        root = args.work / f"copies-{dataset}"
        recipe = f"{dataset} {args.originals}"
        if (root / ".complete").is_file() and (root / ".complete").read_text().split("\n")[0] == recipe:
            injected = json.loads((root / ".complete").read_text().split("\n", 1)[1])  # an earlier run's files,
        else:  # whose stores this run reads (its time says so)
            shutil.rmtree(root, ignore_errors=True)
            injected = make_copies(root, dataset, args.originals)
            (root / ".complete").write_text(f"{recipe}\n{json.dumps(injected)}")
        started = time.perf_counter()
        inspection = _inspect(root, threshold=min(args.thresholds))
        _copies_table(dataset, inspection.document, injected, time.perf_counter() - started, args)


def _threshold_met(group: dict, thresholds: dict) -> float:
    """The highest --near-threshold at which inspect reports this pair (one search at the lowest tells: the pairs
    its layout confirms do not depend on it, the others need the embeddings' similarity)."""
    if (group["layout_similarity"] or 0) >= thresholds["near_layout_similarity"]:
        return 1.0
    return group["similarity"]


def _copies_table(dataset: str, document: dict, injected: dict, seconds: float, args) -> None:
    family = {path: original for path, (original, _) in injected.items()}

    def same_family(a: str, b: str) -> bool:
        return family.get(a, a) == family.get(b, b)

    pairs = [(g["images"][0]["image"], g["images"][1]["image"], _threshold_met(g, document["thresholds"]))
             for g in document["near_duplicates"]]
    print(f"{dataset}: {document['images']} images, "
          f"{sum(k.startswith('byte') is False for _, k in injected.values())} near copies injected "
          f"({args.originals} images x {len(KINDS)} kinds); inspect took {seconds:.1f} s")
    header = f"{'threshold':>9} | " + " ".join(f"{kind:>13}" for kind in KINDS) + f" | {'all':>6}{'true':>6}{'false':>6}"
    print(header)
    for threshold in sorted(args.thresholds):
        found = {(a, b) for a, b, s in pairs if s >= threshold} | {(b, a) for a, b, s in pairs if s >= threshold}
        recall = {kind: np.mean([(copy, original) in found for copy, (original, k) in injected.items() if k == kind])
                  for kind in KINDS}
        kept = [(a, b) for a, b, s in pairs if s >= threshold]
        true = sum(same_family(a, b) for a, b in kept)
        everything = np.mean([(c, o) in found for c, (o, k) in injected.items() if k in KINDS])
        print(f"{threshold:>9.2f} | " + " ".join(f"{recall[kind]:>13.3f}" for kind in KINDS)
              + f" | {everything:>6.3f}{true:>6}{len(kept) - true:>6}")
    exact = document["exact_duplicates"]
    for kind in ("byte-identical, across classes", "byte-identical, across splits"):
        wanted = [(c, o) for c, (o, k) in injected.items() if k == kind]
        reported = [g for g in exact if {m["image"] for m in g["images"]} & {c for c, _ in wanted}]
        relations = sorted({g["relation"] for g in reported})
        print(f"{kind}: {len(reported)} of {len(wanted)} reported, as {', '.join(relations)}")
    print(f"exact duplicate groups reported in all: {len(exact)}")
    false = [(a, b, s) for a, b, s in pairs if s >= args.default and not same_family(a, b)]
    print(f"false pairs at {args.default}: {len(false)}, e.g.")
    for a, b, s in false[:6]:
        print(f"  {a} {b}")
    print(flush=True)


# --- search: torch blocks vs faiss -----------------------------------------------------------------


def search(args) -> None:
    for n in args.sizes:
        for method in args.methods:
            result = subprocess.run([sys.executable, __file__, "search-one", "--method", method, "--n", str(n)],
                                    capture_output=True, text=True, check=True)
            print(result.stdout.strip(), flush=True)


def search_one(args) -> None:
    import torch

    torch.manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(args.n, 1280), dim=1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if args.method == "torch":
        from vqtool.inspection.duplicates import near_pairs

        found = len(near_pairs(vectors, threshold=-1.0, neighbours=10))
    elif args.method == "thumbnails":  # the pixel side: the layout search, and every pair's detail compared
        from vqtool.inspection import thumbnails
        from vqtool.inspection.duplicates import near_pairs

        thumbs = (torch.rand(args.n, thumbnails.DETAIL_SIDE, thumbnails.DETAIL_SIDE) * 255).to(torch.uint8)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        pairs = [(i, j) for i, j, _ in near_pairs(thumbnails.layout_vectors(thumbs, True), -1.0, 10)]
        found = len(thumbnails.detail_similarity(thumbs, pairs, True))
        found = min(found, len(thumbnails.layout_similarity(thumbs, pairs, True)))
        vectors = thumbs
    else:
        import faiss

        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors.numpy())
        _, neighbours = index.search(vectors.numpy(), 11)
        found = len({tuple(sorted((i, int(j)))) for i, row in enumerate(neighbours) for j in row if j != i})
    seconds = time.perf_counter() - started
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"n={args.n:>6} {args.method:<6} {seconds:>7.2f} s  peak RSS +{growth:>6.0f} MB  ({found} pairs, "
          f"data {vectors.numel() * vectors.element_size() / 1e6:.0f} MB)")


# --- scale ---------------------------------------------------------------------------------------


def scale(args) -> None:
    cache = args.work / "scale-cache"
    for n in args.sizes:
        folder = args.work / f"scale-{n}"
        if not (folder / ".complete").exists():
            shutil.rmtree(folder, ignore_errors=True)
            fashion_pngs(folder, n)
            (folder / ".complete").touch()  # a dot file: not an image, not listed
        for run in ("first", "second"):
            command = [sys.executable, "-m", "vqtool", "inspect", str(folder), "--weights", str(LITE0), "--json",
                       "--quiet"]
            if args.imgsz:
                command += ["--imgsz", str(args.imgsz)]
            started = time.perf_counter()
            process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                                       env={**os.environ, "VQTOOL_CACHE_DIR": str(cache)})
            output = process.stdout.read()
            _, status, usage = os.wait4(process.pid, 0)  # this process's own peak, not the largest child's so far
            seconds = time.perf_counter() - started
            if status != 0:
                sys.exit(f"inspect failed on {folder} (status {status})")
            document = json.loads(output)
            print(f"n={n:>6} {run:<6} run: {seconds:>7.1f} s, peak RSS {usage.ru_maxrss / 1024:>6.0f} MB; "
                  f"stages {document['seconds']}; findings {document['counts']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["flips", "copies", "search", "search-one", "scale"])
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "inspect-bench")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.2])
    parser.add_argument("--fashion", type=int, default=3000)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--flip-seed", type=int, default=1)
    parser.add_argument("--originals", type=int, default=50)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.88, 0.9, 0.92, 0.95])
    parser.add_argument("--datasets", nargs="+", choices=sorted(COPIED), default=sorted(COPIED))
    parser.add_argument("--default", type=float, default=0.92)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--imgsz", type=int, default=None)
    parser.add_argument("--method", default="torch")
    parser.add_argument("--methods", nargs="+", choices=["torch", "faiss", "thumbnails"],
                        default=["torch", "faiss", "thumbnails"])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    if not LITE0.is_file():
        sys.exit(f"the shared assets are not at {ASSETS}")
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VQTOOL_CACHE_DIR", str(args.work / "cache"))
    {"flips": flips, "copies": copies, "search": search, "search-one": search_one, "scale": scale}[args.part](args)


if __name__ == "__main__":
    main()
