"""vqtool-tinyvgg: TinyVGG (CNN Explainer) as a vqtool model (``model.py``) and a ``vqtool tinyvgg`` subcommand
(``commands.py``). Nothing is imported here, so that listing vqtool's commands never imports torch."""
