"""vqtool eval: accuracy, top-k and per-class precision/recall/F1 of a checkpoint."""

from __future__ import annotations

import click

from vqtool.choices import SPLITS
from vqtool.commands import (amp_option, data_options, device_option, output_options, threads_option,
                             trust_pickle_option, typed_options)
from vqtool.commands.completion import complete_dataset



def evaluation_options(command):
    """Options `eval` and `confusion` share."""
    command = click.option("--split", type=click.Choice(SPLITS), default=None,
                           help="Which split (default: test, else val, else everything).")(command)
    command = click.option("--batch-size", type=click.IntRange(1), default=None,
                           help="Images per batch (default: 256 on a GPU; on the CPU 64 of 224 px, more of smaller "
                                "ones: as fast per image, and less memory).")(command)
    command = device_option(command)
    command = amp_option(command)
    return threads_option(command)


@click.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.argument("dataset", required=False, shell_complete=complete_dataset)
@evaluation_options
@click.option("--predictions", "predictions_file", type=click.Path(dir_okay=False),
              help="Also write one row per image (path, true class, predicted class, confidence, top-5) to this "
                   ".csv or .jsonl file: where to find mislabelled images.")
@data_options
@trust_pickle_option
@output_options
def evaluate(checkpoint, dataset, split, batch_size, device, amp, predictions_file, data, out):
    """Evaluate CHECKPOINT (a run folder or model file) on held-out data.

    DATASET defaults to the checkpoint's own test (or val) split. YOLO weights
    (.pt, .onnx or a detector run folder) are evaluated on a data.yaml: precision,
    recall, mAP50 and mAP50-95, overall and per class.

    \b
    Examples:
      vqtool eval runs/train-20261123-101500
      vqtool eval runs/pets ./pets-test --json
      vqtool eval best.pt data.yaml --json
    """
    from vqtool.errors import VQError
    from vqtool.tasks import DETECTION, task_of

    if task_of(checkpoint, dataset) == DETECTION:  # YOLO weights or a data.yaml
        if predictions_file:
            raise VQError("--predictions is for classifiers; a detector's boxes per image: vqtool detect",
                          usage=True)
        from vqtool.detection.evaluate import evaluate_detector

        report = evaluate_detector(checkpoint, dataset, split=split, device=device,
                                   batch_size=typed_options().get("batch_size"), reporter=out)
        if out.json:
            out.emit(report)
        else:
            show_detector_report(out, report)
        return
    from vqtool.classification.checkpoint_files import check_model_path

    check_model_path(checkpoint)  # before torch loads
    from vqtool.classification.evaluate import evaluate as run_evaluation
    from vqtool.classification.records import check_predictions_file, write_predictions

    predictions = check_predictions_file(predictions_file) if predictions_file else None
    evaluation = run_evaluation(checkpoint, dataset, data, split=split, device=device, batch_size=batch_size,
                                reporter=out, amp=amp)
    report = evaluation.report
    if predictions:
        write_predictions(predictions, evaluation.predictions(), min(5, len(evaluation.classifier.classes)))
        out.log(f"wrote {predictions} ({report['n']} images)")
    if out.json:
        out.emit(report)
        return
    rows = [[name, m["precision"], m["recall"], m["f1"], m["support"]] for name, m in report["per_class"].items()]
    rows.append(["macro avg", report["macro_precision"], report["macro_recall"], report["macro_f1"], report["n"]])
    out.table(["class", "precision", "recall", "f1", "support"], rows,
              title=f"{report['dataset']} ({report['split']})")
    top5 = "" if report["top5"] is None else f"  top-5 {report['top5']:.4f}"
    out.text(f"top-1 {report['top1']:.4f}{top5}  loss {report['loss']:.4f}  n {report['n']}")


def show_detector_report(out, report: dict) -> None:
    """``vqtool eval`` of a detector, for reading."""
    rows = [[name, m["images"], m["instances"], m["precision"], m["recall"], m["map50"], m["map50_95"]]
            for name, m in report["per_class"].items()]
    rows.append(["all", report["images"], report["instances"], report["precision"], report["recall"],
                 report["map50"], report["map50_95"]])
    out.table(["class", "images", "instances", "precision", "recall", "mAP50", "mAP50-95"], rows,
              title=f"{report['dataset']} ({report['split']})")
