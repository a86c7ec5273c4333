"""What convolutions do: kernels on images, output-size arithmetic, model summaries, feature maps and filters.

The library side of ``vqtool conv``; each module serves one subcommand
(``kernels``: apply, ``arithmetic``: shape, ``summary``: summary,
``inspection``: features and filters), ``visualize`` writes their PNGs.
"""
