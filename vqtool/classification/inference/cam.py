"""``predict --cam``: where in the image the model looked for its top class (Grad-CAM), saved as PNG figures.

Grad-CAM (Selvaraju et al.) weights a layer's activation maps by the mean gradient of the class score over
each map, keeps the positive sum and scales it to 0..1 at the input's size, as pytorch-grad-cam's ``GradCAM``
does (the two agree; tested). It is computed here rather than through that package, which installs a second
OpenCV beside Ultralytics' and SciPy, ttach and tqdm, and whose backward pass fills every parameter's gradient:
here only the layer's activations ask for one. The layer must keep a spatial map,
so the default is the last convolutional stage — the last module, in the
order a forward pass finishes them, whose output is still an image-shaped
(N×C×H×W, H and W above 1) tensor (``layer4`` of a ResNet, the last block of
a small CNN). ``--cam-layer NAME`` names another module (as
``model.named_modules()`` names it). Exported models (.onnx, .ts) carry no
modules to hook into and are refused, as are architectures without such a
layer (vision transformers, MLPs).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vqtool.classification.inference.classifier import Classifier
from vqtool.data.pipeline import Normalizer
from vqtool.errors import VQError, suggest
from vqtool.runs.atomic_files import atomic_save

SUFFIX = "_cam.png"
PANEL_SIDE = 224  # each half of a figure, at least (small inputs are enlarged by a whole factor)
GAP, TITLE_HEIGHT, TITLE_POINTS = 8, 36, 18


class GradCam:
    """Grad-CAM heatmaps of a torch classifier, at its input size."""

    def __init__(self, classifier: Classifier, layer: str | None, device: torch.device):
        model = classifier.model
        if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
            raise VQError("--cam needs a torch checkpoint (a run folder or model.safetensors): an exported model "
                          "has no layers Grad-CAM can look into", usage=True)
        self.model = model
        self.normalize = Normalizer(classifier.preprocess, device)
        size, channels = classifier.preprocess.size, classifier.preprocess.channels
        self.layer_name = layer or last_spatial_stage(model, torch.zeros(1, channels, size, size, device=device))
        modules = dict(model.named_modules())
        if self.layer_name not in modules:
            raise VQError(f"--cam-layer: the model has no module {self.layer_name!r}"
                          f"{suggest(self.layer_name, modules)}", usage=True)
        self.layer = modules[self.layer_name]

    def heatmaps(self, images: torch.Tensor, class_ids: list[int]) -> np.ndarray:
        """N×H×W maps in [0, 1] (1: what most raised the class's score) for uint8 images, one class each."""
        kept: list[torch.Tensor] = []

        def keep_activations(module, inputs, output):
            activations = output.detach().requires_grad_()  # the one tensor whose gradient is asked for
            kept.append(activations)
            return activations.clone()  # a copy: in-place layers after it (ReLU) may change it

        self.model.eval()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.model.requires_grad_(False)  # no parameter gradients: less memory and time than a full backward
        hook = self.layer.register_forward_hook(keep_activations)
        try:
            with torch.enable_grad():
                x = self.normalize(images)
                logits = self.model(x)
                targets = torch.as_tensor(class_ids, device=logits.device)[:, None]
                gradients, = torch.autograd.grad(logits.gather(1, targets).sum(), kept[0])
        finally:
            hook.remove()
            for parameter in trainable:
                parameter.requires_grad_(True)
        activations = kept[0].detach()
        weights = gradients.mean(dim=(2, 3), keepdim=True)
        maps = _scaled(torch.relu((weights * activations).sum(1, keepdim=True)))
        maps = torch.nn.functional.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return _scaled(maps)[:, 0].float().cpu().numpy()


def _scaled(maps: torch.Tensor) -> torch.Tensor:
    """Each N×1×h×w map shifted to start at 0 and divided by its maximum (an all-zero map stays zero)."""
    low = maps.amin(dim=(2, 3), keepdim=True)
    maps = maps - low
    return maps / (1e-7 + maps.amax(dim=(2, 3), keepdim=True))


def last_spatial_stage(model: torch.nn.Module, example: torch.Tensor) -> str:
    """The name of the last module to finish a forward pass with an image-shaped output (see the module doc)."""
    finished: list[tuple[str, tuple]] = []
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: finished.append((name, _shape(o))))
             for name, module in model.named_modules() if name]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for hook in hooks:
            hook.remove()
    spatial = [name for name, shape in finished if len(shape) == 4 and shape[2] > 1 and shape[3] > 1]
    if not spatial:
        raise VQError("--cam: this architecture has no convolutional stage (no layer keeps an image-shaped map), "
                      "so Grad-CAM does not apply; name a layer with --cam-layer if one does", usage=True)
    return spatial[-1]


def _shape(output) -> tuple:
    return tuple(output.shape) if isinstance(output, torch.Tensor) else ()


def save_cam(folder: Path, stem: str, image: torch.Tensor, heatmap: np.ndarray, title: str) -> Path:
    """The model's input image beside it with the heatmap laid over, under a title, in one PNG,
    ``folder/<stem>_cam.png`` (``stem`` may hold subfolders); never over an existing file.

    Composed with Pillow, not a matplotlib figure: about 20 times less time per image (matplotlib's layout and
    rendering took most of `predict --cam`'s time)."""
    from vqtool.classification.inference.sorting import free_names

    stem = Path(stem)
    (folder / stem).parent.mkdir(parents=True, exist_ok=True)
    for candidate in free_names(stem.name + SUFFIX):
        path = folder / stem.parent / candidate
        if not path.exists():
            break
    figure = cam_figure(image, heatmap, title)
    atomic_save(path, lambda tmp: figure.save(tmp, format="PNG"), replace=False)
    return path


def cam_figure(image: torch.Tensor, heatmap: np.ndarray, title: str) -> Image.Image:
    """[input | input with the jet-coloured heatmap at half opacity], each at least PANEL_SIDE pixels, titled."""
    from matplotlib import colormaps

    picture = image.permute(1, 2, 0).numpy()
    picture = np.repeat(picture, 3, axis=2) if picture.shape[2] == 1 else picture
    heat = (colormaps["jet"](np.clip(heatmap, 0, 1))[:, :, :3] * 255).astype(np.float32)
    overlay = (0.5 * picture.astype(np.float32) + 0.5 * heat).round().astype(np.uint8)
    height, width = picture.shape[:2]
    scale = max(1, math.ceil(PANEL_SIDE / max(height, width)))
    panels = [Image.fromarray(np.ascontiguousarray(panel)).resize((width * scale, height * scale), Image.NEAREST)
              for panel in (picture, overlay)]
    font = ImageFont.truetype(_font_file(), TITLE_POINTS)
    canvas = Image.new("RGB", (2 * panels[0].width + 3 * GAP, panels[0].height + TITLE_HEIGHT + GAP), "white")
    for index, panel in enumerate(panels):
        canvas.paste(panel, (GAP + index * (panel.width + GAP), TITLE_HEIGHT))
    ImageDraw.Draw(canvas).text((canvas.width // 2, TITLE_HEIGHT // 2), title, fill="black", font=font, anchor="mm")
    return canvas


def _font_file() -> str:
    import matplotlib

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")
