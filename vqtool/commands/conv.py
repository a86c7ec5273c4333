"""vqtool conv: what convolutions do, from hand-made kernels to the layers of a trained network."""

from __future__ import annotations

import click

from vqtool.commands import output_options, overwrite_option, trust_pickle_option
from vqtool.commands.completion import complete_model
from vqtool.commands.types import OutputPath

KERNEL_HELP = ("sobel-x, sobel-y, vertical-edge, horizontal-edge, laplacian, blur, sharpen, emboss, "
               "or rows of numbers like '[[-1,0,1],[-1,0,1],[-1,0,1]]'. Repeatable.")


def model_options(command):
    """The model argument, --weights and --allow-partial-weights, shared by summary, features and filters."""
    command = click.option("--allow-partial-weights", is_flag=True,
                           help="Use a --weights file even when it fills less than half of the backbone.")(command)
    command = click.option("--weights", metavar="SPEC",
                           help="Pretrained weights for a model name, as finetune --weights takes them, or none "
                                "(also random: the architecture's random init, the default).")(command)
    command = trust_pickle_option(command)
    return click.argument("model", metavar="MODEL_OR_CHECKPOINT", shell_complete=complete_model)(command)


def scale_option(default: str):
    def decorate(command):
        return click.option("--scale", type=click.Choice(["shared", "channel"]), default=default, show_default=True,
                            help="Colours: one scale for all channels (strengths compare), or each channel on its "
                                 "own (weak channels stay visible); the title says which.")(command)
    return decorate


def out_option(command):
    command = overwrite_option(command)
    return click.option("--out", "out_dir", type=OutputPath(folder=True),
                        help="Folder for the PNGs (default runs/conv-<command>-<timestamp>).")(command)


def print_files(out, files, document: dict | None = None) -> None:
    """The written PNGs: one path a line, or in the JSON document."""
    if out.json:
        out.emit({**(document or {}), "files": [str(path) for path in files]})
        return
    for path in files:
        out.text(str(path))


@click.group()
def conv():
    """What convolutions do: kernels, output sizes, model summaries, feature maps and filters.

    \b
    Examples:
      vqtool conv apply --demo square
      vqtool conv shape --input 224 --kernel 7 --stride 2 --padding 3
      vqtool conv summary resnet18
      vqtool conv features resnet18 --layer layer1
      vqtool conv filters resnet18 --weights DEFAULT
    """


@conv.command()
@click.argument("image", required=False, type=click.Path(dir_okay=False))
@click.option("--kernel", "kernel_specs", multiple=True, metavar="KERNEL", help=KERNEL_HELP)
@click.option("--stride", type=click.IntRange(1), default=1, show_default=True)
@click.option("--padding", type=click.IntRange(0), default=0, show_default=True, help="Zeros added on every side.")
@click.option("--demo", metavar="NAME", help="A built-in tiny image instead of IMAGE: square (5x5).")
@out_option
@output_options
def apply(image, kernel_specs, stride, padding, demo, out_dir, overwrite, out):
    """Slide kernels over IMAGE (greyscale; default: a sample photo) and save each feature map as a PNG.

    Uses torch.nn.functional.conv2d, a cross-correlation (the kernel is not
    flipped). Saves <kernel>.png per map and figure.png (the input, each kernel
    and its map, with colour scales) into --out (default
    runs/conv-apply-<time>); the kernels and maps of tiny images (--demo square)
    are also printed as numbers. Default
    kernels: vertical-edge for --demo, else sobel-x, sobel-y, laplacian,
    blur, sharpen and emboss. Images over $VQTOOL_MAX_IMAGE_PIXELS pixels
    (default 89,478,485) are refused as possible decompression bombs.

    \b
    Examples:
      vqtool conv apply --demo square
      vqtool conv apply photo.jpg --kernel sobel-x --kernel sobel-y --out edges
      vqtool conv apply --kernel "[[0,1,0],[1,-4,1],[0,1,0]]" --stride 2 --padding 1
    """
    from vqtool.conv.kernels import (apply_kernels, default_kernels, describe, load_input, map_document,
                                     parse_kernels, save_maps)
    from vqtool.conv.visualize import output_folder

    kernels = parse_kernels(list(kernel_specs) or list(default_kernels(demo)))
    pixels, source = load_input(image, demo)
    maps = apply_kernels(pixels, kernels, stride, padding)
    folder = output_folder(out_dir, "apply")
    files = save_maps(pixels, maps, folder, source, replace=overwrite)
    out.log(f"{source}: {pixels.shape[1]}×{pixels.shape[0]} (width×height) greyscale, stride {stride}, "
            f"padding {padding}")
    if not out.json:
        for line in describe(pixels, maps):
            out.text(line)
    print_files(out, files, {"input": source, "input_shape": list(pixels.shape), "stride": stride,
                             "padding": padding, "maps": [map_document(m, f) for m, f in zip(maps, files)],
                             "figure": str(files[-1])})


@conv.command()
@click.option("--input", "size", type=click.IntRange(1), required=True, help="Input side in pixels.")
@click.option("--kernel", type=click.IntRange(1), help="Kernel side (one layer).")
@click.option("--stride", type=click.IntRange(1), help="Stride (one layer; default 1).")
@click.option("--padding", type=click.IntRange(0), help="Padding on every side (one layer; default 0).")
@click.option("--dilation", type=click.IntRange(1), help="Dilation (one layer; default 1).")
@click.option("--layers", metavar="CHAIN",
              help="A chain instead: convKxK[sS][pP][dD], poolN or poolKsS, comma-separated.")
@output_options
def shape(size, kernel, stride, padding, dilation, layers, out):
    """Output size of a conv layer, or of each layer of a chain: floor((W + 2P - D*(K-1) - 1)/S) + 1.

    \b
    Examples:
      vqtool conv shape --input 224 --kernel 7 --stride 2 --padding 3
      vqtool conv shape --input 32 --kernel 3 --dilation 2
      vqtool conv shape --input 32 --layers "conv3x3s1p1,pool2,conv3x3s1p1,pool2" --json
    """
    from vqtool.conv.arithmetic import Layer, chain_sizes, parse_layers
    from vqtool.errors import VQError

    single = (kernel, stride, padding, dilation)
    if layers is not None and any(value is not None for value in single):
        raise VQError("--layers describes every layer; drop --kernel/--stride/--padding/--dilation", usage=True)
    if layers is None and kernel is None:
        raise VQError("give --kernel K (one layer) or --layers CHAIN", usage=True)
    chain = parse_layers(layers) if layers else [Layer("conv", kernel, stride or 1, padding or 0, dilation or 1)]
    rows = chain_sizes(size, chain)
    if out.json:
        out.emit({"input": size, "layers": rows, "output": rows[-1]["output"]})
    elif layers is None:
        out.text(rows[0]["formula"])
    else:
        out.table(["layer", "kernel", "stride", "padding", "dilation", "input", "output"],
                  [[row[key] for key in ("layer", "kernel", "stride", "padding", "dilation", "input", "output")]
                   for row in rows], title=f"input {size}x{size}")


@conv.command()
@model_options
@click.option("--input", "input_spec", metavar="CxHxW",
              help="Input shape (default: the checkpoint's or the model's own size and channels).")
@click.option("--classes", "num_classes", type=click.IntRange(1),
              help="Classes of a model name (default: 1000 for torchvision/timm, 10 for built-ins).")
@output_options
def summary(model, weights, allow_partial_weights, input_spec, num_classes, out):
    """Each layer's output shape, parameters and multiply-accumulates, with totals.

    Also compares the first conv layer's parameters with a dense layer of
    1,000 units over the same input. MACs count conv and linear layers.

    MODEL_OR_CHECKPOINT is a model name (vqtool models) or a run folder / model.safetensors.

    \b
    Examples:
      vqtool conv summary resnet18
      vqtool conv summary timm/tf_efficientnet_lite0 --input 3x160x160
      vqtool conv summary runs/train-20261123-101500 --json
    """
    from vqtool.conv.inspection import load_inspected
    from vqtool.conv.summary import parse_input, shape_string, summarize, totals_lines

    inspected = load_inspected(model, weights, num_classes, allow_partial=allow_partial_weights)
    preprocess = inspected.preprocess
    input_shape = (parse_input(input_spec, preprocess.channels) if input_spec
                   else (preprocess.channels, preprocess.size, preprocess.size))
    document = summarize(inspected, input_shape, model)
    if out.json:
        out.emit(document)
        return
    out.table(["name", "type", "output", "params", "MACs"],
              [[row["name"], row["type"], shape_string(row["output_shape"]), row["params"], row["macs"]]
               for row in document["layers"]],
              title=f"{inspected.source}, input {shape_string(document['input'])}")
    for line in totals_lines(document):
        out.text(line)


@conv.command()
@model_options
@click.argument("image", required=False, type=click.Path(dir_okay=False))
@click.option("--layer", "layers", multiple=True, metavar="NAME",
              help="A layer whose activations to save (repeatable); without it, list the layers.")
@scale_option("channel")
@out_option
@output_options
def features(model, weights, allow_partial_weights, image, layers, scale, out_dir, overwrite, out):
    """Save the activation maps of named layers for IMAGE (default: a sample photo) as PNG grids.

    The image is prepared as the model's input (size, channels, normalisation);
    each layer gives <layer>-maps.png with one cell per channel.

    MODEL_OR_CHECKPOINT is a model name (vqtool models) or a run folder / model.safetensors.

    \b
    Examples:
      vqtool conv features resnet18
      vqtool conv features resnet18 photo.jpg --layer conv1 --layer layer2 --out maps
      vqtool conv features runs/train-20261123-101500 digit.png --layer features.0
    """
    from vqtool.conv.inspection import feature_maps, load_inspected, map_layers, prepare_image, save_feature_maps
    from vqtool.conv.visualize import output_folder

    inspected = load_inspected(model, weights, allow_partial=allow_partial_weights)
    if not layers:
        listed = map_layers(inspected)
        if out.json:
            out.emit({"model": model, "layers": [{"name": name, "type": kind, "output_shape": shape}
                                                 for name, (kind, shape) in listed.items()]})
            return
        out.table(["layer", "type", "output"], [[name, kind, "x".join(map(str, shape))]
                                                for name, (kind, shape) in listed.items()], title=inspected.source)
        out.log("save a layer's maps with --layer NAME")
        return
    batch, source = prepare_image(image, inspected.preprocess)
    maps = feature_maps(inspected, batch, list(dict.fromkeys(layers)))
    out.log(f"{inspected.source} on {source}")
    files = save_feature_maps(maps, output_folder(out_dir, "features"), inspected.source, scale, replace=overwrite)
    print_files(out, files, {"model": model, "image": source,
                             "layers": {name: list(values.shape) for name, values in maps.items()}})


@conv.command()
@model_options
@click.option("--layer", metavar="NAME", help="A Conv2d layer (default: the first).")
@scale_option("shared")
@out_option
@output_options
def filters(model, weights, allow_partial_weights, layer, scale, out_dir, overwrite, out):
    """Save a conv layer's kernels as a PNG grid: one cell per output channel.

    RGB kernels are shown in colour, others as the mean over input channels;
    mid-grey is zero.

    MODEL_OR_CHECKPOINT is a model name (vqtool models) or a run folder / model.safetensors.

    \b
    Examples:
      vqtool conv filters resnet18 --weights DEFAULT
      vqtool conv filters resnet18 --weights none      # random init, to compare
      vqtool conv filters runs/train-20261123-101500 --layer features.1.0 --out filters --scale channel
    """
    from vqtool.conv.inspection import conv_filters, load_inspected, save_filters
    from vqtool.conv.visualize import output_folder

    inspected = load_inspected(model, weights, allow_partial=allow_partial_weights)
    name, weight = conv_filters(inspected, layer)
    out.log(f"{inspected.source}: {name}, {'x'.join(map(str, weight.shape))} weights")
    path = save_filters(name, weight, output_folder(out_dir, "filters"), inspected.source, scale, replace=overwrite)
    print_files(out, [path], {"model": model, "layer": name, "shape": list(weight.shape)})
