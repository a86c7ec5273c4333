"""The classification task: what it owns and its entry points, as :mod:`vqtool.tasks` calls them.

Imports no torch: the checks that need no data run before the jobs import it.
"""

from __future__ import annotations

from pathlib import Path

from vqtool.classification.config import FinetuneOptions, TrainConfig
from vqtool.data import DataOptions
from vqtool.errors import VQError
from vqtool.option_fields import option_fields, parameter_names
from vqtool.registry import Request, Task, register_task

TRAINING_OPTIONS = parameter_names(TrainConfig, DataOptions) | {"lr_find"}
FINETUNING_OPTIONS = TRAINING_OPTIONS | parameter_names(FinetuneOptions)


def options_of_task(options: frozenset, task: str) -> frozenset:
    """``options`` less the option fields of TrainConfig, DataOptions and FinetuneOptions that ``task`` does not take
    (their ``tasks``)."""
    return options - {item.parameter for config in (TrainConfig, DataOptions, FinetuneOptions)
                      for item in option_fields(config) if not item.taken_by(task)}


@register_task("classification")
class ClassificationTask(Task):
    default = True
    order = 20

    def owns(self, target: str) -> bool:
        from vqtool.classification.checkpoints.export_format import is_exported_classifier

        return is_exported_classifier(target)  # a .onnx or .pt from vqtool export, despite the suffix

    def takes(self, command: str) -> frozenset:
        return {"train": TRAINING_OPTIONS, "finetune": FINETUNING_OPTIONS}.get(command, frozenset())

    def check_training(self, request: Request) -> None:
        check_before_torch(request, training_config(request),
                           finetune_options(request) if request.command == "finetune" else None)

    def train(self, request: Request) -> dict:
        config = training_config(request)
        check_before_torch(request, config)
        from vqtool.classification.training.train import resume_job, train_job

        params = request.params
        if params.get("resume"):
            return resume_job(params["resume"], reporter=request.reporter, epochs=typed_epochs(request),
                              tracking=request.tracking)
        return train_job(request.dataset, request.data, config, reporter=request.reporter,
                         out_dir=params.get("out_dir"), lr_find=params.get("lr_find", False),
                         tracking=request.tracking)

    def finetune(self, request: Request) -> dict:
        config = training_config(request)
        tune = finetune_options(request)
        check_before_torch(request, config, tune)
        from vqtool.classification.training.finetune import finetune_job, lr_find_job, resume_finetune

        params, reporter = request.params, request.reporter
        if params.get("resume"):
            return resume_finetune(params["resume"], reporter=reporter, epochs=typed_epochs(request),
                                   tracking=request.tracking)
        if params.get("lr_find"):
            return lr_find_job(request.dataset, request.data, config, tune, reporter=reporter,
                               out_dir=params.get("out_dir"))
        return finetune_job(request.dataset, request.data, config, tune, reporter=reporter,
                            out_dir=params.get("out_dir"), tracking=request.tracking)

    def evaluate(self, request: Request) -> dict:
        from vqtool.classification.checkpoints.paths import check_model_path

        check_model_path(request.target)  # before torch loads (records imports it)
        from vqtool.classification.inference.records import check_predictions_file

        params = request.params
        predictions = check_predictions_file(params["predictions_file"]) if params.get("predictions_file") else None
        evaluation = run_evaluation(request)
        report = evaluation.report
        if predictions:
            from vqtool.classification.inference.records import write_predictions

            write_predictions(predictions, evaluation.predictions(), min(5, len(evaluation.classifier.classes)))
            request.reporter.log(f"wrote {predictions} ({report['n']} images)")
        return report

    def confusion(self, request: Request) -> dict:
        from vqtool.classification.checkpoints.paths import check_model_path

        check_model_path(request.target)  # before the evaluation imports torch
        from vqtool.classification.inference.confusion import confusion_report, plot_misclassified
        from vqtool.plots import write_confusion_png

        params, reporter = request.params, request.reporter
        evaluation = run_evaluation(request)
        report = confusion_report(evaluation, top=params["top"], normalize=params["normalize"])
        write_confusion_png(report, params.get("png"), replace=params["overwrite"], reporter=reporter)
        if params.get("examples"):
            shown = plot_misclassified(evaluation, Path(params["examples"]), replace=params["overwrite"])
            reporter.log(f"wrote {params['examples']} ({shown} misclassified images)" if shown else
                         f"wrote {params['examples']} (no misclassified images: a figure saying so)")
        return report

    def predict(self, sources, weights: str, options):
        from vqtool.classification.inference.predict import predict as classify

        if options.threshold is not None:
            raise VQError("--threshold is for multi-label models; a classifier gives one class per image (see "
                          "--top-k, or --sort-into with --min-confidence)", usage=True)

        classifier = classifier_for_predict(weights)
        return classify(sources, classifier, options), classifier.classes

    def export(self, checkpoint: str, options, reporter) -> dict:
        from vqtool.classification.checkpoints.paths import check_model_path
        from vqtool.classification.checkpoints.export_format import check_options

        check_options(options)  # usage errors before torch loads
        check_model_path(checkpoint)
        from vqtool.classification.export.formats import export_classifier

        return export_classifier(checkpoint, options, reporter)

    def view(self, report: dict) -> dict:
        if "matrix" in report:  # confusion
            from vqtool.metrics import confusion_view

            return confusion_view(report)
        rows = [[name, m["precision"], m["recall"], m["f1"], m["support"]] for name, m in report["per_class"].items()]
        rows.append(["macro avg", report["macro_precision"], report["macro_recall"], report["macro_f1"], report["n"]])
        top5 = "" if report["top5"] is None else f"  top-5 {report['top5']:.4f}"
        return {"table": {"headers": ["class", "precision", "recall", "f1", "support"], "rows": rows,
                          "title": f"{report['dataset']} ({report['split']})"},
                "lines": [f"top-1 {report['top1']:.4f}{top5}  loss {report['loss']:.4f}  n {report['n']}"]}

    def predict_output(self, classes: list[str], options) -> dict:
        from vqtool.classification.inference.predict import PredictSummary
        from vqtool.classification.inference.records import IMAGE_COLUMNS, csv_values, top_columns

        def table_row(record):
            where = record["path"] + (f" #{record['frame']}" if "frame" in record else "")
            second = record["top"][1] if len(record["top"]) > 1 else {"class": "-", "confidence": 0.0}
            return (f"{record['class']:<20} {record['confidence']:>6.3f}  {second['class']:<20} "
                    f"{second['confidence']:>6.3f}  {where}")

        return {"csv": IMAGE_COLUMNS + top_columns(min(options.top_k, len(classes))),
                "csv_values": lambda record: csv_values(record, IMAGE_COLUMNS),
                "table_header": f"{'class':<20} {'conf':>6}  {'runner-up':<20} {'conf':>6}  image",
                "table_row": table_row,
                "summary": PredictSummary(sort_into=options.sort_into, cam_dir=options.cam_dir)}


def training_config(request: Request) -> TrainConfig:
    """The TrainConfig of the request's training options (a --recipe's values are already in ``params``)."""
    return TrainConfig.from_dict({**request.params, "model": request.params.get("model_name"),
                                  "seed": request.data.seed})


def finetune_options(request: Request) -> FinetuneOptions:
    return FinetuneOptions.from_dict(request.params)


def typed_epochs(request: Request) -> int | None:
    """--epochs when the user typed it (a resumed run otherwise keeps its own)."""
    return request.typed.get("epochs")


def check_before_torch(request: Request, config: TrainConfig, tune: FinetuneOptions | None = None) -> None:
    """The usage errors that need no data, raised before the job imports torch: a moment, not seconds (the jobs
    do not check again). A resumed run's own options are checked, with the --epochs typed."""
    from vqtool.registry import get_dataset_source
    from vqtool.runs.folder import run_arguments

    resume = request.params.get("resume")
    if resume:
        recorded, epochs = run_arguments(resume, request.command)["args"], typed_epochs(request)
        config = TrainConfig.from_dict({**(recorded.get("config") or {}), **({"epochs": epochs} if epochs else {})})
        tune = FinetuneOptions.from_dict(recorded.get("finetune") or {}) if request.command == "finetune" else None
    config.check()
    if tune is not None:
        tune.check(config)
    if not resume:
        get_dataset_source(request.dataset)


def run_evaluation(request: Request):
    """The Evaluation of ``eval`` and ``confusion``: the checkpoint over the request's dataset split."""
    from vqtool.classification.inference.evaluate import evaluate

    params = request.params
    return evaluate(request.target, request.dataset, request.data, split=params.get("split"),
                    device=params["device"], batch_size=params.get("batch_size"),
                    reporter=request.reporter, amp=params["amp"])


def classifier_for_predict(weights):
    """A vqtool checkpoint or export; an object that already is a classifier (model, classes, preprocess, meta:
    the detection task's Ultralytics classification weights) as it is."""
    from vqtool.classification.inference.evaluate import load_classifier

    return load_classifier(weights) if isinstance(weights, (str, Path)) else weights
