"""The detection task: YOLO weights, detector run folders and data.yaml files, trained and evaluated through
Ultralytics. Imports neither torch nor Ultralytics: they load when an entry point runs."""

from __future__ import annotations


from vqtool.errors import VQError
from vqtool.registry import Request, Task, register_task, registered_tasks

# The training options a detector understands: the rest of train's and finetune's are a usage error for it.
ALWAYS = frozenset({"epochs", "seed", "device", "imgsz", "data_dir"})
# Hyperparameters a detector takes only when given (typed, or from --config: a run's args.json replays its own):
# vqtool's defaults for them are tuned for classifiers.
TYPED = ("batch_size", "lr", "weight_decay", "early_stop", "workers", "optimizer", "scheduler", "augment")
TAKES = {"train": ALWAYS | set(TYPED) | {"model_name"}, "finetune": ALWAYS | set(TYPED) | {"weights", "freeze"}}


@register_task("detection")
class DetectionTask(Task):
    order = 30

    def owns(self, target: str) -> bool:
        from vqtool.detection.weights import looks_like_weights
        from vqtool.registry import dataset_sources

        return looks_like_weights(target) or any(
            source.task == self.name and source.matches is not None and source.matches(target)
            for source in dataset_sources().values())

    def takes(self, command: str) -> frozenset:
        return frozenset(TAKES.get(command, ()))

    def train(self, request: Request) -> dict:
        from vqtool.detection.train import resume_detector, train_detector

        params = request.params
        if params.get("resume"):
            return resume_detector(params["resume"], reporter=request.reporter, tracking=request.tracking)
        return train_detector(request.dataset, detector_training(request),
                              model_name=given(request).get("model_name"), out_dir=params.get("out_dir"),
                              reporter=request.reporter, tracking=request.tracking)

    def finetune(self, request: Request) -> dict:
        from vqtool.detection.train import finetune_detector, resume_detector

        params = request.params
        if params.get("resume"):
            return resume_detector(params["resume"], reporter=request.reporter, tracking=request.tracking)
        if not params.get("weights"):
            raise VQError("fine-tuning a detector needs --weights W.pt (a YOLO checkpoint)", usage=True)
        return finetune_detector(request.dataset, params["weights"], params["freeze"], detector_training(request),
                                 out_dir=params.get("out_dir"), reporter=request.reporter, tracking=request.tracking)

    def evaluate(self, request: Request) -> dict:
        if request.params.get("predictions_file"):
            raise VQError("--predictions is for classifiers; a detector's boxes per image: vqtool detect", usage=True)
        from vqtool.detection.evaluate import evaluate_detector

        return evaluate_detector(request.target, request.dataset, split=request.params.get("split"),
                                 device=request.params["device"],
                                 batch_size=request.typed.get("batch_size"), reporter=request.reporter)

    def confusion(self, request: Request) -> dict:
        params = request.params
        if params.get("examples"):
            raise VQError("--examples is for classifiers; a detector's matrix has no single image per cell",
                          usage=True)
        from vqtool.detection.evaluate import detection_confusion
        from vqtool.plots import write_confusion_png

        report = detection_confusion(request.target, request.dataset, top=params["top"],
                                     normalize=params["normalize"], split=params.get("split"),
                                     device=params["device"], batch_size=request.typed.get("batch_size"),
                                     reporter=request.reporter)
        write_confusion_png(report, params.get("png"), replace=params["overwrite"], reporter=request.reporter)
        return report

    def predict(self, sources, weights: str, options):
        """Ultralytics classification weights (yolo*-cls.pt) classify as vqtool's classifiers do; a detector's
        weights are refused with a pointer to detect."""
        from vqtool.detection.classify import load_yolo_classifier

        return registered_tasks()["classification"].predict(sources, load_yolo_classifier(weights), options)

    def predict_output(self, classes: list[str], options) -> dict:
        return registered_tasks()["classification"].predict_output(classes, options)

    def export(self, checkpoint: str, options, reporter) -> dict:
        if options.int8:
            raise VQError(f"--int8 quantizes classifiers; {checkpoint} is a YOLO detector: use Ultralytics' own int8 "
                          f"export (yolo export model={checkpoint} format=openvino int8=True data=DATA.yaml)",
                          usage=True)
        from vqtool.detection.export import export_detector

        return export_detector(checkpoint, options, reporter)

    def view(self, report: dict) -> dict:
        if "matrix" in report:  # confusion, with a background class
            from vqtool.metrics import confusion_view

            return confusion_view(report)
        rows = [[name, m["images"], m["instances"], m["precision"], m["recall"], m["map50"], m["map50_95"]]
                for name, m in report["per_class"].items()]
        rows.append(["all", report["images"], report["instances"], report["precision"], report["recall"],
                     report["map50"], report["map50_95"]])
        return {"table": {"headers": ["class", "images", "instances", "precision", "recall", "mAP50", "mAP50-95"],
                          "rows": rows, "title": f"{report['dataset']} ({report['split']})"}}


def detector_training(request: Request):
    """The request's training options as a DetectorTraining (None: Ultralytics' default)."""
    from vqtool.detection.train import DetectorTraining

    params, chosen = request.params, given(request)
    return DetectorTraining(epochs=params["epochs"], seed=params["seed"], device=params["device"],
                            imgsz=params["imgsz"], **{name: chosen.get(name) for name in TYPED})


def given(request: Request) -> dict:
    """The options typed or read from --config, not those left at (or filled in by --recipe over) vqtool's
    defaults."""
    return {name: value for name, value in request.params.items() if name not in request.defaulted}
