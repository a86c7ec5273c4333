"""The multi-label task: runs, checkpoints and exports whose model.json or metadata say ``multilabel``, and
training chosen with --task multilabel or any multi-label option (--labels-from, --loss, --pos-weight).

Imports no torch: commands check their options before it loads.
"""

from __future__ import annotations

from pathlib import Path

from vqtool.classification.task import (FINETUNING_OPTIONS, TRAINING_OPTIONS, check_before_torch, finetune_options,
                                        options_of_task, training_config, typed_epochs)
from vqtool.errors import VQError
from vqtool.multilabel.config import MultilabelOptions
from vqtool.option_fields import parameter_names
from vqtool.registry import Request, Task, register_task

OWN_OPTIONS = parameter_names(MultilabelOptions)
TASK = "multilabel"


@register_task(TASK)
class MultilabelTask(Task):
    order = 10  # before classification: a multi-label export is an exported classifier too
    selected_by = OWN_OPTIONS
    config = MultilabelOptions  # its fields are train's and finetune's multi-label options

    def owns(self, target: str) -> bool:
        return recorded_task(target) == TASK

    def takes(self, command: str) -> frozenset:
        options = {"train": TRAINING_OPTIONS, "finetune": FINETUNING_OPTIONS}.get(command)
        # the single-label fields (their ``tasks``), and the LR range test of a softmax classifier
        return frozenset() if options is None else (options_of_task(options, TASK) - {"lr_find"}) | OWN_OPTIONS

    def train(self, request: Request) -> dict:
        config, objective = self._prepare(request)
        from vqtool.classification.training.train import resume_job, train_job

        if request.params.get("resume"):
            return resume_job(request.params["resume"], reporter=request.reporter, epochs=typed_epochs(request),
                              tracking=request.tracking, objective=objective)
        return train_job(request.dataset, request.data, config, reporter=request.reporter,
                         out_dir=request.params.get("out_dir"), tracking=request.tracking, objective=objective)

    def finetune(self, request: Request) -> dict:
        tune = finetune_options(request)
        head_defaults(request, tune)
        config, objective = self._prepare(request, tune)
        from vqtool.classification.training.finetune import finetune_job, resume_finetune

        if request.params.get("resume"):
            return resume_finetune(request.params["resume"], reporter=request.reporter,
                                   epochs=typed_epochs(request), tracking=request.tracking, objective=objective)
        return finetune_job(request.dataset, request.data, config, tune, reporter=request.reporter,
                            out_dir=request.params.get("out_dir"), tracking=request.tracking, objective=objective)

    def _prepare(self, request: Request, tune=None):
        """(TrainConfig, the run's objective), checked before torch loads; a resumed run's own options."""
        config = training_config(request)
        resume = request.params.get("resume")
        if resume:
            from vqtool.runs.folder import run_arguments

            options = MultilabelOptions.from_dict(run_arguments(resume, request.command)["args"].get(TASK) or {})
            options.check()
            check_before_torch(request, config, tune)
        else:
            options = _checked_options(request, config, tune)
        from vqtool.multilabel.train import objective_of

        return config, objective_of(options)

    def check_training(self, request: Request) -> None:
        _checked_options(request, training_config(request),
                         finetune_options(request) if request.command == "finetune" else None)

    def evaluate(self, request: Request) -> dict:
        return self._evaluation(request).report

    def confusion(self, request: Request) -> dict:
        from vqtool.multilabel.evaluate import confusion_report, plot_mistakes
        from vqtool.plots import write_confusion_png

        params, reporter = request.params, request.reporter
        evaluation = self._evaluation(request)
        report = confusion_report(evaluation, top=params["top"], normalize=params["normalize"])
        write_confusion_png(report, params.get("png"), replace=params["overwrite"], reporter=reporter)
        if params.get("examples"):
            shown = plot_mistakes(evaluation, Path(params["examples"]), replace=params["overwrite"])
            reporter.log(f"wrote {params['examples']} ({shown} images with wrong labels)")
        return report

    def _evaluation(self, request: Request):
        from vqtool.classification.checkpoints.paths import check_model_path

        if request.params.get("predictions_file"):
            raise VQError("--predictions is for single-label classifiers; a multi-label model's labels per "
                          "image: vqtool predict --format csv", usage=True)
        check_model_path(request.target)
        from vqtool.multilabel.evaluate import evaluate_multilabel

        params = request.params
        return evaluate_multilabel(request.target, request.dataset, request.data, split=params.get("split"),
                                   device=params["device"], batch_size=params.get("batch_size"),
                                   reporter=request.reporter, amp=params["amp"],
                                   threshold=params.get("threshold"))

    def predict(self, sources, weights: str, options):
        from vqtool.multilabel.predict import predict_labels

        return predict_labels(sources, weights, options)

    def export(self, checkpoint: str, options, reporter) -> dict:
        from vqtool.classification.checkpoints.paths import check_model_path
        from vqtool.classification.checkpoints.export_format import check_options

        if options.int8:
            raise VQError("--int8 is judged by top-1 accuracy; export a multi-label model in fp32 or --half",
                          usage=True)
        check_options(options)
        check_model_path(checkpoint)
        from vqtool.classification.export.formats import export_classifier
        from vqtool.multilabel.evaluate import held_out_split

        return export_classifier(checkpoint, options, reporter, held_out=held_out_split)

    def view(self, report: dict) -> dict:
        title = f"{report['dataset']} ({report['split']}, n={report['n']})"
        if "matrix" in report:  # confusion
            return {"lines": [title, "most missed (label: missed of images with it):",
                              *(f"  {r['label']}: {r['count']} of {r['of']}" for r in report["most_missed"]),
                              "most falsely predicted (label: false of images without it):",
                              *(f"  {r['label']}: {r['count']} of {r['of']}" for r in report["most_false"])]}
        rows = [[name, m["ap"], m["precision"], m["recall"], m["f1"], m["support"], m["threshold"]]
                for name, m in report["per_label"].items() if m["support"] or m["predicted"]]
        hidden = len(report["per_label"]) - len(rows)
        title += f"; {hidden} labels neither in the data nor predicted not shown" if hidden else ""
        return {"table": {"headers": ["label", "AP", "precision", "recall", "f1", "support", "threshold"],
                          "rows": rows, "title": title},
                "lines": [f"mAP {_figure(report['map'])}  micro-F1 {report['micro_f1']:.4f}  macro-F1 "
                          f"{_figure(report['macro_f1'])} (of {report['labels_scored']} labels)  exact match "
                          f"{report['exact_match']:.4f}  n {report['n']}"]}

    def predict_output(self, classes: list[str], options) -> dict:
        from vqtool.multilabel.predict import RECORD_COLUMNS, LabelSummary, csv_values, table_row

        return {"csv": RECORD_COLUMNS + classes, "csv_values": lambda record: csv_values(record, classes),
                "table_header": f"{'labels (confidence)':<48}  image", "table_row": table_row,
                "summary": LabelSummary()}


def head_defaults(request: Request, tune) -> None:
    """A head trained on a frozen backbone's cached features takes FROZEN_HEAD_DEFAULTS for the options left at
    finetune's defaults (not with --recipe, nor on --resume: a run keeps its own)."""
    from vqtool.models.options import FreezeSpec
    from vqtool.multilabel.config import FROZEN_HEAD_DEFAULTS

    params = request.params
    if params.get("resume") or params.get("recipe") or not tune.uses_cache(FreezeSpec.parse(tune.freeze)):
        return
    changed = {name: value for name, value in FROZEN_HEAD_DEFAULTS.items() if name in request.defaulted}
    params.update(changed)
    if changed:
        request.reporter.log("multi-label head on cached features: " + " ".join(
            f"--{name.replace('_', '-')} {value}" for name, value in changed.items()) + " (multilabel's defaults for a "
            "frozen backbone; options you give win)")


def _checked_options(request: Request, config, tune) -> MultilabelOptions:
    """A new run's multi-label options, its data and its training options checked (no data read, no torch)."""
    options = MultilabelOptions.from_dict(request.params)
    if options.loss == "asl" and options.pos_weight:
        raise VQError("--pos-weight goes with --loss bce (the asymmetric loss weighs positives itself)", usage=True)
    options.check()
    if request.dataset and not _is_file(request.dataset):
        raise VQError(f"{request.dataset}: multi-label data is a CSV/TSV or text list of images and their "
                      f"labels, or a YOLO data.yaml", usage=True)
    config.check()
    if tune is not None:
        tune.check(config)
    return options


def _figure(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _is_file(spec: str) -> bool:
    return Path(spec).is_file()


def recorded_task(spec: str) -> str | None:
    """The task a vqtool checkpoint's model.json or an export's metadata records (None for anything else)."""
    from vqtool.classification.checkpoints.paths import resolve_checkpoint
    from vqtool.classification.checkpoints.export_format import read_metadata
    from vqtool.runs.atomic_files import read_json

    try:
        document = read_metadata(spec)
        if document is None:
            document = read_json(resolve_checkpoint(spec)[1])
    except (VQError, OSError, ValueError):
        return None
    return document.get("task") if isinstance(document, dict) else None
