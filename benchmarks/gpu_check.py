"""Mixed precision and torch.compile on a GPU: ResNet-18 images/s in fp32, AMP and AMP + compile, in one go.

    python benchmarks/gpu_check.py                 # on a CUDA machine
    python benchmarks/gpu_check.py --cpu-smoke     # the same code path on the CPU, tiny and quick (no speed claim)

For each mode it trains --steps steps on one fixed random batch (the loss must
fall: the step learns) and times them after --warmup steps (compilation happens
there; its cost is printed), then times inference batches. AMP is what
``--amp auto`` picks (bf16 where the GPU supports it, else fp16 with a gradient
scaler), through vqtool's own Precision. Ratios are against fp32 in the same run.
Without a GPU and without --cpu-smoke it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torchvision

from vqtool.compute.precision import Precision, amp_choice, inference_autocast


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_mode(name: str, device: torch.device, args) -> dict:
    """images/s of training steps and of inference for one mode; the loss before and after."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).to(device, memory_format=torch.channels_last)
    amp = name != "fp32"  # --amp auto on a GPU; bf16 for the CPU smoke run, where auto would be off
    dtype = (amp_choice("auto", device).dtype if device.type == "cuda" else torch.bfloat16) if amp else None
    precision = Precision(dtype, device)
    network = torch.compile(model) if "compile" in name else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(10, (args.batch,), device=device)
    losses, started = [], time.perf_counter()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            synchronize(device)
            first_seconds, started = time.perf_counter() - started, time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            loss = torch.nn.functional.cross_entropy(network(x).float(), y)
        precision.backward(loss)
        precision.step(optimizer)
        losses.append(loss.item())
    synchronize(device)
    train_rate = args.steps * args.batch / (time.perf_counter() - started)
    return {"mode": name, "precision": precision.name, "warmup_s": first_seconds, "train_img_s": train_rate,
            "infer_img_s": inference_rate(network, x, device, amp, args),
            "first_loss": losses[0], "last_loss": losses[-1]}


def inference_rate(network, x: torch.Tensor, device: torch.device, amp: bool, args) -> float:
    network.eval()
    with torch.no_grad(), (inference_autocast(device) if amp else torch.autocast(device.type, enabled=False)):
        for _ in range(args.warmup):
            network(x)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(args.steps):
            network(x)
        synchronize(device)
    network.train()
    return args.steps * len(x) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="run the code path on the CPU at a tiny size")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    if torch.cuda.is_available():
        device = torch.device("cuda")
        print(f"GPU: {torch.cuda.get_device_name(device)}, bf16 supported: {torch.cuda.is_bf16_supported()}")
    elif args.cpu_smoke:
        device = torch.device("cpu")
        args.batch, args.size, args.steps, args.warmup, args.no_compile = 4, 32, 3, 1, True
        print("no GPU: --cpu-smoke runs the code path at batch 4, 32 px (bf16 autocast for AMP); no speed claim")
    else:
        print("no CUDA GPU here: run this on a GPU machine (or pass --cpu-smoke to check the code path)")
        sys.exit(2)
    modes = ["fp32", "amp"] + ([] if args.no_compile else ["amp+compile"])
    results = [train_mode(mode, device, args) for mode in modes]
    base = results[0]
    print(f"ResNet-18, batch {args.batch}, {args.size} px, {args.steps} timed steps after {args.warmup}")
    print("| mode | precision | first steps s | train img/s | × fp32 | inference img/s | × fp32 | loss first → last |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['precision']} | {r['warmup_s']:.1f} | {r['train_img_s']:.0f} | "
              f"{r['train_img_s'] / base['train_img_s']:.2f} | {r['infer_img_s']:.0f} | "
              f"{r['infer_img_s'] / base['infer_img_s']:.2f} | {r['first_loss']:.3f} → {r['last_loss']:.3f} |")
    falling = all(r["last_loss"] < r["first_loss"] for r in results)
    print("loss decreasing in every mode:", "yes" if falling else "NO")
    sys.exit(0 if falling else 1)


if __name__ == "__main__":
    main()
