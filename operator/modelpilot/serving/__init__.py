"""What runs in a model's pod: artifact fetch (init container), model server, metrics and drift.

Entry points:

- ``python -m modelpilot.serving.fetch``  -- download and verify a registered model version;
- ``python -m modelpilot.serving.server`` -- serve it with MLflow's scoring protocol, plus probes and
  Prometheus metrics;
- :func:`modelpilot.serving.baseline.log_baseline_profile` -- called at training time to record the
  input profile that drift is measured against.
"""

# The runtime image's own version, apart from the operator's: an operator upgrade restarts no model. Bumped
# when what runs in a model's pod changes; every ModelDeployment on the default image then rolls to it.
RUNTIME_VERSION = "0.1.0"
MODEL_DIR = "/var/lib/modelpilot/model"
# Where the Install requirements policy builds the model's environments (a volume of their own).
ENVIRONMENTS_DIR = "/var/lib/modelpilot/envs"
MANIFEST_FILE = ".modelpilot-manifest.json"
