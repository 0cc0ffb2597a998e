"""modelpilot: takes models registered in MLflow to production on Kubernetes."""

__version__ = "0.1.0"
