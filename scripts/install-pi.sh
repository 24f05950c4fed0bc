#!/usr/bin/env bash
# Install facegate as a systemd service on a Raspberry Pi (64-bit Raspberry Pi OS).
#
#   sudo scripts/install-pi.sh [options]
#
#   --dry-run            print every action, change nothing
#   --root DIR           install into staging root DIR (all paths below DIR); apt, user
#                        creation, chown, venv and systemctl are printed, not run
#   --models-from DIR    copy models from DIR (a `make models` output with built.json)
#                        instead of this checkout's models/ (built here if missing)
#   --no-broker          do not install the mosquitto broker packages
#   --skip-venv          do not create or update the venv (implied by --root: a venv
#                        holds absolute paths and cannot be staged)
#   --no-start           enable the unit but do not start or restart it
#   -h, --help           this text
#
# Idempotent: run it again after `git pull` to upgrade. Config files and the signing
# key are created only where absent; a user's edits are never overwritten.
#
# Result: /opt/facegate/{venv,models,share}, /etc/facegate/{facegate.yaml,
# enrollment.yaml,unlock.key,unlock.pub}, /var/lib/facegate, the `facegate` system user (in group
# video), /etc/systemd/system/facegate.service enabled and started.
set -euo pipefail
umask 022

PREFIX=/opt/facegate
ETC=/etc/facegate
STATE=/var/lib/facegate
UNIT_DIR=/etc/systemd/system
SVC_USER=facegate
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

ROOT=""
DRY_RUN=0
MODELS_FROM=""
BROKER=1
SKIP_VENV=0
START=1
CHANGED=0 # set when something the running service uses was (re)installed

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
say() { printf 'install-pi: %s\n' "$*"; }
die() {
  printf 'install-pi: error: %s\n' "$*" >&2
  exit 1
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --root)
      [[ $# -ge 2 ]] || die "--root needs a directory"
      ROOT=$2
      shift
      ;;
    --root=*) ROOT=${1#*=} ;;
    --models-from)
      [[ $# -ge 2 ]] || die "--models-from needs a directory"
      MODELS_FROM=$2
      shift
      ;;
    --models-from=*) MODELS_FROM=${1#*=} ;;
    --no-broker) BROKER=0 ;;
    --skip-venv) SKIP_VENV=1 ;;
    --no-start) START=0 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown option: $1"
      ;;
  esac
  shift
done

if [[ -n $ROOT ]]; then
  [[ $ROOT == /* ]] || ROOT=$PWD/$ROOT
  ROOT=${ROOT%/}
  [[ -n $ROOT ]] || die "--root / is the live system: leave --root out instead"
  SKIP_VENV=1
fi
if [[ -z $ROOT && $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
  die "run as root (sudo), or use --dry-run / --root DIR"
fi

# --- action helpers: everything that changes the system goes through these ----------

# Run (or, with --dry-run, only print) a command that changes files under $ROOT.
quoted() {
  local q
  q=$(printf '%q ' "$@")
  printf '%s' "${q% }"
}

run() {
  if ((DRY_RUN)); then
    printf '[dry-run] %s\n' "$(quoted "$@")"
  else
    printf '+ %s\n' "$(quoted "$@")"
    "$@"
  fi
}

# Like run, for actions on the live system (apt, users, owners, venv, systemctl):
# skipped, but printed, in --root mode.
sys_run() {
  if [[ -n $ROOT ]]; then
    printf '[skipped: --root] %s\n' "$(quoted "$@")"
  else
    run "$@"
  fi
}

r() { printf '%s%s' "$ROOT" "$1"; } # a live path inside the staging root

mode_of() { stat -c '%a' "$1"; }

# create_dir PATH: a system directory (/etc, /var/lib, ...) that only --root lacks;
# created when missing, never chmod-ed.
create_dir() {
  [[ -d $(r "$1") ]] || run install -d -m 0755 "$(r "$1")"
}

# ensure_dir PATH MODE [OWNER:GROUP]: one of our directories, mode enforced.
ensure_dir() {
  local dir=$1 mode=$2 owner=${3:-}
  if [[ ! -d $(r "$dir") ]]; then
    run install -d -m "$mode" "$(r "$dir")"
  elif [[ $(mode_of "$(r "$dir")") != "${mode#0}" ]]; then
    run chmod "$mode" "$(r "$dir")"
  fi
  [[ -z $owner ]] || sys_run chown "$owner" "$(r "$dir")"
}

# install_file SRC DST MODE [OWNER:GROUP]: copy when content or mode differs.
install_file() {
  local src=$1 dst=$2 mode=$3 owner=${4:-}
  local target
  target=$(r "$dst")
  if [[ -f $target ]] && cmp -s "$src" "$target" && [[ $(mode_of "$target") == "${mode#0}" ]]; then
    say "unchanged: $dst"
  else
    run install -m "$mode" "$src" "$target"
    CHANGED=1
  fi
  [[ -z $owner ]] || sys_run chown "$owner" "$target"
}

# install_if_absent SRC DST MODE [OWNER:GROUP] [SED_SCRIPT]: a config file the user owns
# once it exists. SED_SCRIPT adapts the example to installed paths on first install only.
install_if_absent() {
  local src=$1 dst=$2 mode=$3 owner=${4:-} script=${5:-}
  local target tmp
  target=$(r "$dst")
  if [[ -e $target ]]; then
    say "keeping existing $dst (never overwritten; compare with $src)"
    return 0
  fi
  if ((DRY_RUN)); then
    printf '[dry-run] install -m %s %s %s%s\n' "$mode" "$src" "$target" \
      "${script:+ (paths adapted: sed -e ${script//$'\n'/ -e })}"
  else
    tmp=$(mktemp "$target.XXXXXX")
    sed -e "${script:-}" "$src" >"$tmp"
    chmod "$mode" "$tmp"
    mv "$tmp" "$target"
    say "installed $dst from $src"
  fi
  [[ -z $owner ]] || sys_run chown "$owner" "$target"
}

# --- 1. system packages ---------------------------------------------------------------

packages=(python3-venv python3-pip python3-picamera2)
((BROKER)) && packages+=(mosquitto mosquitto-clients)
missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [[ -n $ROOT ]]; then
  sys_run apt-get install -y "${packages[@]}"
elif ((${#missing[@]})); then
  sys_run apt-get update
  sys_run env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
else
  say "apt packages present: ${packages[*]}"
fi

# --- 2. service user --------------------------------------------------------------------

if [[ -n $ROOT ]] || ! id -u "$SVC_USER" >/dev/null 2>&1; then
  sys_run useradd --system --user-group --home-dir "$STATE" --no-create-home \
    --shell /usr/sbin/nologin --comment "facegate door access" "$SVC_USER"
fi
if [[ -n $ROOT ]] || ! id -nG "$SVC_USER" 2>/dev/null | tr ' ' '\n' | grep -qx video; then
  sys_run usermod --append --groups video "$SVC_USER"
fi

# --- 3. directories ---------------------------------------------------------------------

[[ -z $ROOT ]] || create_dir /
for dir in /opt /etc /var/lib /etc/systemd "$UNIT_DIR"; do create_dir "$dir"; done
ensure_dir "$PREFIX" 0755
ensure_dir "$PREFIX/models" 0755
ensure_dir "$PREFIX/share" 0755
ensure_dir "$PREFIX/share/doc" 0755
ensure_dir "$PREFIX/share/mosquitto" 0755
ensure_dir "$ETC" 0750 "root:$SVC_USER"
ensure_dir "$STATE" 0750 "$SVC_USER:$SVC_USER"

# --- 4. models, checked against built.json ------------------------------------------------

models_src=${MODELS_FROM:-$SRC/models}
if [[ -z $MODELS_FROM && ! -f $SRC/models/built.json ]]; then
  say "no built models in $SRC/models: building them (TensorFlow, slow on a Pi;"
  say "or run 'make models' on a PC and pass --models-from DIR)"
  run make -C "$SRC" models
fi
if [[ -f $models_src/built.json ]]; then
  # built.json: {"files": {"<name>.tflite": {"sha256": "<hex>", ...} | "<hex>", ...}, ...}
  listing=$(python3 - "$models_src/built.json" <<'PY'
import json, re, sys
files = json.load(open(sys.argv[1])).get("files", {})
if isinstance(files, list):  # tolerate [{"name"/"file": ..., "sha256": ...}]
    files = {f.get("name") or f.get("file"): f for f in files}
for name, info in sorted(files.items()):
    sha = info.get("sha256") if isinstance(info, dict) else info
    if not isinstance(name, str) or "/" in name or name.startswith("."):
        sys.exit(f"built.json: bad file name {name!r}")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        sys.exit(f"built.json: {name}: no sha256")
    print(name, sha)
PY
  ) || die "cannot read $models_src/built.json"
  [[ -n $listing ]] || die "$models_src/built.json lists no files"
  # Check every file before copying any, so a bad set never half-replaces a good one.
  while read -r name sha; do
    [[ -f $models_src/$name ]] || die "model $models_src/$name listed in built.json is missing"
    actual=$(sha256sum "$models_src/$name" | cut -d' ' -f1)
    [[ $actual == "$sha" ]] || die "model $models_src/$name: sha256 $actual, built.json says $sha"
  done <<<"$listing"
  say "models verified against $models_src/built.json"
  while read -r name _; do
    install_file "$models_src/$name" "$PREFIX/models/$name" 0644
  done <<<"$listing"
  install_file "$models_src/built.json" "$PREFIX/models/built.json" 0644
elif ((DRY_RUN)); then
  say "models would be verified and copied after the build"
else
  die "no $models_src/built.json: pass --models-from DIR (the models/ of a 'make models' run)"
fi

# --- 5. configuration (only where absent) and the signing key ----------------------------

# The examples point at the checkout (../models, a demo video); installed, they point at
# $PREFIX/models and the Pi camera.
adapt="s#^\([[:space:]]*dir:[[:space:]]*\)\.\./models\b#\1$PREFIX/models#
s#^\([[:space:]]*source:[[:space:]]*\)\.\./models/data/demo\.mp4#\1picamera2#"
install_if_absent "$SRC/config/facegate.yaml" "$ETC/facegate.yaml" 0640 "root:$SVC_USER" "$adapt"
install_if_absent "$SRC/config/enrollment.yaml" "$ETC/enrollment.yaml" 0640 "root:$SVC_USER"

# The unlock key: Ed25519 (JWS EdDSA). The daemon keeps the private key; door controllers get
# only unlock.pub, which cannot sign.
key=$ETC/unlock.key
pub=$ETC/unlock.pub
if [[ -e $(r "$key") ]]; then
  say "keeping existing signing key $key"
elif ((DRY_RUN)); then
  printf '[dry-run] generate %s: an Ed25519 key pair (private 0600, %s 0644)\n' "$(r "$key")" "$(r "$pub")"
else
  tmp=$(mktemp "$(r "$key").XXXXXX") # mktemp creates it 0600
  openssl genpkey -algorithm ed25519 -out "$tmp" 2>/dev/null
  openssl pkey -in "$tmp" -pubout -out "$(r "$pub").tmp"
  chmod 0644 "$(r "$pub").tmp"
  mv "$(r "$pub").tmp" "$(r "$pub")"
  mv "$tmp" "$(r "$key")"
  say "generated signing key $key; give $pub (never the key) to the door controllers"
fi
sys_run chown "$SVC_USER:$SVC_USER" "$(r "$key")"

# --- 6. documentation and broker example ---------------------------------------------------

[[ ! -f $SRC/docs/deployment.md ]] ||
  install_file "$SRC/docs/deployment.md" "$PREFIX/share/doc/deployment.md" 0644
for f in facegate.conf acl bridge-site.conf; do
  install_file "$SRC/systemd/mosquitto/$f" "$PREFIX/share/mosquitto/$f" 0644
done
install_file "$SRC/scripts/gen-test-certs.sh" "$PREFIX/share/mosquitto/gen-test-certs.sh" 0755

# --- 7. the venv with the package ------------------------------------------------------------

venv=$PREFIX/venv
if ((SKIP_VENV)); then
  say "skipping the venv ($( [[ -n $ROOT ]] && echo "--root implies " )--skip-venv): $venv not touched"
else
  if [[ ! -x $venv/bin/python ]]; then
    # --system-site-packages: the apt python3-picamera2 (libcamera bindings) stays visible.
    run python3 -m venv --system-site-packages "$venv"
  fi
  # Reinstall only when the package sources changed since the last install.
  stamp=$venv/.facegate-source.sha256
  digest=$(cd "$SRC" && find daemon setup.cfg pyproject.toml -type f -not -path '*/__pycache__/*' \
    -not -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  if [[ -f $stamp && $(cat "$stamp") == "$digest" && -x $venv/bin/facegate ]]; then
    say "facegate package unchanged in $venv"
  else
    run "$venv/bin/pip" install --quiet --disable-pip-version-check "${SRC}[pi]"
    if ((!DRY_RUN)); then printf '%s\n' "$digest" >"$stamp"; fi
    CHANGED=1
  fi
fi

# --- 8. the systemd unit ----------------------------------------------------------------------

install_file "$SRC/systemd/facegate.service" "$UNIT_DIR/facegate.service" 0644
sys_run systemctl daemon-reload
sys_run systemctl enable facegate.service

if [[ -n $ROOT ]]; then
  sys_run systemctl start facegate.service
elif ((!START)); then
  say "not starting (--no-start): sudo systemctl start facegate"
elif ((DRY_RUN)) || runuser -u "$SVC_USER" -- "$venv/bin/facegate" check-config \
  --config "$ETC/facegate.yaml"; then
  if ((CHANGED)); then
    sys_run systemctl restart facegate.service
  else
    sys_run systemctl start facegate.service
  fi
else
  say "NOT started: $ETC/facegate.yaml does not pass check-config (see above)."
  say "Edit $ETC/facegate.yaml and $ETC/enrollment.yaml, run"
  say "  sudo -u $SVC_USER $venv/bin/facegate enroll --config $ETC/facegate.yaml"
  say "  sudo systemctl start facegate"
fi

if ((BROKER)) && [[ -z $ROOT ]]; then
  say "mosquitto installed with its default config; for TLS + per-door ACLs see"
  say "  $PREFIX/share/mosquitto/ and $PREFIX/share/doc/deployment.md"
fi
if ((DRY_RUN)); then
  say "dry run finished: nothing was changed"
else
  say "done${ROOT:+ (staged in $ROOT)}"
fi
