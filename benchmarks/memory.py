"""Peak memory and throughput of the in-memory and the on-disk data path; writes DIR/memory.json.

    python benchmarks/memory.py --out runs/memory [--sizes 20000 100000] [--image-size 64]
        [--batches 150] [--workers 2] [--data ../shared/data/cifar10_jpeg.npz]

The image folder is made once under ``DIR/folders/<size>/`` (train/<class>/<i>.jpg and a
1,000-image test/): the offline CIFAR-10 copy's training images in a seeded order, upscaled (bilinear) to
``--image-size`` and re-encoded as JPEG (quality 90); sizes above 50,000 repeat the set,
mirrored, rotated by a quarter turn per further round (new files, new bytes). No network.

Each measurement runs in a fresh process, which builds ``ImageFolder`` (``on_disk`` or not)
and a ``ForgetRemainDataModule`` (10% random forget request, the ``remain`` stream, batch
128, crop + flip), then draws ``--batches`` training batches through the DataLoader and the
datamodule's per-batch work (augmentation, uint8 -> float), as a fit would.

Rows of memory.json (a list):

- ``path``: ``"in_memory"`` (decoded into one uint8 tensor at load; DataLoader without
  workers, its default) or ``"on_disk"`` (decoded per sample in ``--workers`` DataLoader
  workers);
- ``images``: training images in the folder;
- ``peak_rss_mib``: the peak, over the whole process (load included), of the resident
  memory of the process and its DataLoader workers together, counted as PSS (Linux
  ``/proc/<pid>/smaps_rollup``): a page shared by several processes counts once in total,
  split between them, so the workers' view of the parent's tensors is not counted twice;
- ``images_per_s``: training images per second over the batches after the first 10
  (workers started, caches warm);
- ``load_s``: seconds to build the source (decode everything, or read every file's header);
- ``num_workers``.

Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # an uninstalled checkout runs too
from benchmarks.host import cpu_name  # noqa: E402

CIFAR10_JPEG = REPO.parent / "shared" / "data" / "cifar10_jpeg.npz"
TEST_IMAGES = 1000
WARMUP_BATCHES = 10


# ---------------------------------------------------------------------- the image folder
def make_folder(root: Path, size: int, image_size: int, data_file: Path) -> Path:
    """``root/<size>``: ``size`` training JPEGs and ``TEST_IMAGES`` test JPEGs (made once)."""
    from PIL import Image
    from tqdm.auto import tqdm

    folder = root / str(size)
    done = folder / "complete"
    if done.is_file():
        return folder
    archive = np.load(data_file)
    classes = [str(name) for name in archive["classes"]]

    def images(split: str, count: int):
        blob, offsets, labels = archive[f"{split}_jpeg"], archive[f"{split}_offsets"], archive[f"y_{split}"]
        total = len(offsets) - 1
        order = np.random.default_rng(0).permutation(total)  # the archive is sorted by class
        for i in range(count):
            j = int(order[i % total])
            image = Image.open(io.BytesIO(blob[offsets[j] : offsets[j + 1]].tobytes())).convert("RGB")
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            round_ = i // total
            if round_:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(90 * (round_ - 1))
            yield i, image, classes[int(labels[j])]

    for split, count in (("train", size), ("test", TEST_IMAGES)):
        for name in classes:
            (folder / split / name).mkdir(parents=True, exist_ok=True)
        for i, image, name in tqdm(images(split, count), total=count, desc=f"writing {split} ({size})", unit="img"):
            image.save(folder / split / name / f"{i:06d}.jpg", quality=90)
    done.write_text("ok\n")
    return folder


# ---------------------------------------------------------------------- one measurement
def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return found + [grandchild for child in found for grandchild in _children(child)]


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:  # a worker that just exited
        pass
    return 0


class PeakMemory:
    """Samples the PSS of this process and its descendants every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak_kib, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pid = os.getpid()
            self.peak_kib = max(self.peak_kib, sum(_pss_kib(p) for p in [pid, *_children(pid)]))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure(folder: Path, on_disk: bool, workers: int, batches: int) -> dict:
    """One row of memory.json, measured in this process."""
    import torch

    from natmu_lightning.data import ForgetRemainDataModule, ImageFolder, RandomForget

    with PeakMemory() as memory:
        start = time.perf_counter()
        source = ImageFolder(str(folder / "train"), str(folder / "test"), on_disk=on_disk, num_workers=workers)
        dm = ForgetRemainDataModule(source, RandomForget(0.1), stream="remain", batch_size=128, num_workers=workers)
        dm.setup("fit")
        load_s = time.perf_counter() - start
        loader = _endless(dm.train_dataloader())
        images, timed_from = 0, None
        for number in range(batches):
            batch = dm.on_after_batch_transfer(dm.on_before_batch_transfer(next(loader), 0), 0)
            if number == WARMUP_BATCHES - 1:
                timed_from = time.perf_counter()
            elif number >= WARMUP_BATCHES:
                images += batch["image"].shape[0]
        elapsed = time.perf_counter() - timed_from if timed_from is not None else float("nan")
        del loader
    return {
        "path": "on_disk" if on_disk else "in_memory",
        "images": len(dm.train_targets),
        "peak_rss_mib": round(memory.peak_kib / 1024, 1),
        "images_per_s": round(images / elapsed, 1),
        "load_s": round(load_s, 2),
        "num_workers": workers,
        "torch_threads": torch.get_num_threads(),
    }


def _endless(loader):
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


# ---------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 100000])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=CIFAR10_JPEG)
    parser.add_argument("--measure", nargs=3, metavar=("FOLDER", "PATH", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batches <= WARMUP_BATCHES:
        parser.error(f"--batches must exceed the {WARMUP_BATCHES} warm-up batches")
    if args.measure:  # the child process: one row on stdout
        folder, path, workers = args.measure
        print(json.dumps(measure(Path(folder), path == "on_disk", int(workers), args.batches)))
        return
    if not args.data.is_file():
        parser.error(f"{args.data} not found: pass the offline CIFAR-10 JPEG copy (cifar10_jpeg.npz) with --data")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        folder = make_folder(args.out / "folders", size, args.image_size, args.data)
        for path, workers in (("in_memory", 0), ("on_disk", args.workers)):
            command = [sys.executable, "-m", "benchmarks.memory", "--out", str(args.out)]
            command += ["--batches", str(args.batches), "--measure", str(folder), path, str(workers)]
            result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
            if result.returncode:
                raise SystemExit(f"{path} at {size} images failed:\n{result.stderr[-3000:]}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    (args.out / "memory.json").write_text(json.dumps(rows, indent=2) + "\n")
    machine = {
        "device": cpu_name(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    (args.out / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    print(f"wrote {args.out / 'memory.json'}")


if __name__ == "__main__":
    main()
