# modelpilot developer entry points. `make dev` and `make test` are the quick start.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export GOTOOLCHAIN := local

.PHONY: help venv system-deps cluster-bins prometheus-bin lua-bin images cluster crds test test-long test-unit soak dev clean

help:
	@echo "make dev    - build what is needed, start a local cluster + MLflow, run the operator on a demo model"
	@echo "make test   - the test suite (unit + integration on a real control plane, MLflow, Prometheus)"
	@echo "make test-long - the long tier make test leaves out"
	@echo "make soak   - an hour of traffic and alias flips on the real node; memory, writes, outcomes (bench/soak.py)"
	@echo "make cluster - start the local control plane in the foreground and print its kubeconfig"
	@echo "make crds   - regenerate crds/ from the pydantic API models"
	@echo "make images - build the operator and runtime images (the tests build them when needed)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

cluster-bins:
	tests/cluster/build.sh

# Debian packages the suite runs for real: Prometheus scrapes the model servers; containerd, runc, CNI
# plugins and iptables make the real node; buildah and mmdebstrap build the images its pods run.
SYSTEM_PACKAGES := prometheus containerd runc containernetworking-plugins iptables buildah mmdebstrap
SYSTEM_TOOLS := prometheus containerd runc /usr/lib/cni/bridge iptables buildah mmdebstrap
system-deps:
	@missing=0; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || [ -x "$$t" ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); \
	  else echo "warning: not root, so not installing $(SYSTEM_PACKAGES); tests that need them fail or skip" >&2; fi; fi

# Prometheus with Kubernetes service discovery, which Debian's package leaves out, from its pinned Go module.
prometheus-bin: venv
	$(PY) -m tests.support.prometheus_build

# gopher-lua, the Lua VM Argo CD runs health checks in, to test ours in it; from its pinned Go module.
lua-bin: venv
	$(PY) -m tests.support.lua_health_build

# The operator and runtime images from their Dockerfiles (buildah, no registry), cached by their inputs.
images: venv system-deps
	$(PY) -m tests.cluster.images

cluster: venv cluster-bins
	$(PY) -m tests.cluster.launcher

# DEMO=0 skips the scripted analysis demo (and the Prometheus it needs).
dev: venv system-deps
	$(MAKE) --no-print-directory -j3 cluster-bins $(if $(filter 0,$(DEMO)),,prometheus-bin)
	$(PY) -m tests.cluster.dev $(if $(filter 0,$(DEMO)),--no-demo,)

crds: venv
	$(PY) -m modelpilot.api.crd > crds/modelpilot.io_modeldeployments.yaml
	cp crds/modelpilot.io_modeldeployments.yaml helm/modelpilot/files/crds/

test-unit: venv
	$(PY) -m pytest tests/unit -q

# The builds side by side: Go compiles while the image builds mostly download packages.
test: venv system-deps
	$(MAKE) --no-print-directory -j3 cluster-bins prometheus-bin lua-bin images
	$(PY) -m pytest -q -ra --durations=25

# What `make test` leaves out to stay within its budget; same prerequisites, and Traefik for the Gateway test.
test-long: venv system-deps
	MODELPILOT_GATEWAY=1 $(MAKE) --no-print-directory -j3 cluster-bins prometheus-bin lua-bin images
	$(PY) -m pytest -q -ra --durations=25 -m long

# An hour of traffic with alias flips on the real node: memory and descriptors over time, idle writes, outcomes.
soak: venv system-deps
	$(MAKE) --no-print-directory -j3 cluster-bins prometheus-bin images
	$(PY) bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
