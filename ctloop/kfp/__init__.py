"""The CT pipeline on Kubeflow Pipelines: compiling it, the images its tasks run in, uploading
pipeline versions, runs and recurring schedules through the KFP API."""
