"""ctloop's benchmark: the local CT pipeline against a bare script making the same library calls,
its growth with the data, the statistics step against pyarrow, and the model server against an
in-process call. ``python -m bench.run --help``; results and how to read them:
docs/BENCHMARKS.md.
"""
