"""Hyper-parameter search over `train` and `finetune` runs (`vqtool tune`), on Optuna.

Each trial is an ordinary run folder made by its task's ordinary entry point (classification's or multilabel's
``finetune`` or ``train``) under the study folder; the loop's epoch listener (:func:`vqtool.classification.loop.epoch_listener`) reports each epoch's val metric
to the pruner. :mod:`.space` is what varies, :mod:`.storage` where the study lives, :mod:`.trial` one trial,
:mod:`.study` the search, :mod:`.results` what it leaves (the best trial's --config YAML, a table, a figure).
Optuna is an optional extra: :func:`.storage.require_optuna` turns its absence into one line.
"""
