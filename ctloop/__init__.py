"""ctloop: Kubeflow Pipelines components for continuous training of TensorFlow models."""

__version__ = "0.1.0"
