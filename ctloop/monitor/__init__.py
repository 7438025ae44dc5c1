"""Monitoring the served model: what it receives and answers, against what it was trained on.

``ctloop serve --record-dir`` writes sampled requests (``ctloop.serving.recorder``); this module
reads a window of them and measures, with the calibrated measures of data validation
(``ctloop.drift``: shared bins, a significance test at a family-wise false-alarm rate and an
effect-size floor):

- **skew**: each feature of the window against the training data of the serving version (the
  profiles stored in the TFDV statistics of the span that version was trained on);
- **drift**: each feature of the window against the window before it (both served by the
  serving version), and the prediction itself the same way;
- the prediction mean, the latency, and the live metric where labels came back (``feedback``).

All these tests share one false-alarm rate, so unchanged traffic reports drift in at most that
share of monitor runs. The decision is *drift* when a feature is breached (or carries values
outside the training data's, beyond chance); ``trigger`` then starts one CT run per drift
episode, after a cool-down.

Modules: ``records`` (reading served records and label feedback; windows), ``measure`` (one run:
skew, drift, prediction, latency, live metric), ``report`` (Markdown and Prometheus), ``trigger``
(one CT run per drift episode; ``claim`` decides and records it, so that a pipeline task can
submit it), ``store`` (a folder or ``s3://``: record files by name pattern, whole writes).
"""

# The pipelines' names on KFP, known to the core so that ``ctloop schedule apply`` can tell which
# pipeline a schedule runs without importing kfp (pipelines/*.py use these).
CT_PIPELINE_NAME = "ctloop-continuous-training"
MONITOR_PIPELINE_NAME = "ctloop-monitor"
