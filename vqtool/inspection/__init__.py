"""`vqtool inspect`: what a dataset holds before anything trains on it.

Unreadable and odd files, exact and near duplicates (within a class, across
classes, across splits), label-error candidates, outliers, class balance and
per-split statistics; the decoded pixels come from the store and the
embeddings from the frozen-backbone feature store, so a second inspection of
the same data is quick. Nothing here writes into the dataset's folder.
"""
