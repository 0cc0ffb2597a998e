#!/usr/bin/env bash
# Builds the local cluster (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kubelet, kube-proxy), kwok, helm, the pod sandbox's pause and Traefik (the
# Gateway API implementation the Gateway API router is tested with) from their pinned Go modules into a
# cache outside the work tree, with the Gateway API CRDs of the version Traefik is built with. A component whose go.mod/go.sum and this script
# are unchanged since its last build is not rebuilt.
#
# Traefik is built only with MODELPILOT_GATEWAY=1 (`make test-long` sets it): only the long tier's
# Gateway test runs it, and it is the longest build after Kubernetes itself.
#
# Usage: tests/cluster/build.sh            # prints the bin directory on the last line
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${MODELPILOT_CACHE:-$HOME/.cache/modelpilot}
bin=$cache/bin
mkdir -p "$bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

stamp_of() {  # a component's inputs: its module files and this script
  find "$here/go/$1" -maxdepth 1 -type f -print0 | sort -z | xargs -0 cat "$here/build.sh" | sha256sum | cut -c1-16
}

build() {  # build COMPONENT LDFLAGS PACKAGE...
  local component=$1 ldflags=$2; shift 2
  local stamp; stamp=$(stamp_of "$component")
  if [ "$(cat "$bin/.$component.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "cluster-build: $component is up to date"
    return
  fi
  local start=$SECONDS
  for pkg in "$@"; do
    local name=${pkg##*/}
    [ "$name" = . ] && name=$component
    echo "cluster-build: building $name ($component) ..."
    (cd "$here/go/$component" && go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$name.tmp" "$pkg")
    mv "$bin/$name.tmp" "$bin/$name"
  done
  echo "$stamp" > "$bin/.$component.stamp"
  echo "cluster-build: $component built in $((SECONDS - start))s"
}

module_version() { (cd "$here/go/$1" && go list -m -f '{{.Version}}' "$2"); }

kube_version=$(module_version kube k8s.io/kubernetes)
kube_minor=$(echo "$kube_version" | cut -d. -f2)
kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
helm_version=$(module_version helm helm.sh/helm/v3)

build etcd "" .
build pause "" .
build kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=$(module_version kwok sigs.k8s.io/kwok)" sigs.k8s.io/kwok/cmd/kwok
build helm "-X helm.sh/helm/v3/internal/version.version=$helm_version" helm.sh/helm/v3/cmd/helm
if [ "${MODELPILOT_GATEWAY:-0}" = 1 ]; then
  build traefik "-X github.com/traefik/traefik/v3/pkg/version.Version=$(module_version traefik github.com/traefik/traefik/v3)" \
    github.com/traefik/traefik/v3/cmd/traefik
fi
gateway_crds=$(cd "$here/go/traefik" && go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/standard
if ! diff -rq "$gateway_crds" "$bin/gateway-api-crds" >/dev/null 2>&1; then
  rm -rf "$bin/gateway-api-crds" && cp -r "$gateway_crds" "$bin/gateway-api-crds" && chmod -R u+w "$bin/gateway-api-crds"
fi
build kube "$kube_ldflags" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy
echo "$bin"
