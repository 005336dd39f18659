"""Benchmarks run by ``his bench``: each figure is measured next to a raw baseline in the same run.

They live inside the installed package (not only in the repository's ``bench/``) so that
``his bench`` works from an installed wheel. Nothing here runs at import time.
"""
