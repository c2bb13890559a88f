"""The bottom layer every part of mcicl stands on: configs, run folders, the vector format, plot style, CLI options.

Nothing here imports from ``mcicl.synthetic``, ``mcicl.probing`` or ``mcicl.analysis``.
"""
