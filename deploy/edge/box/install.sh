#!/usr/bin/env bash
# Install or upgrade the ganzhi edge agent on a box (docs/edge.md, "Install"):
#
#   sudo deploy/edge/box/install.sh --wheelhouse DIR [--config box.yaml] [--name box]
#
# Each run makes a new release (/opt/ganzhi-edge/releases/<time>: a venv with the agent,
# installed offline from the wheelhouse built by build-wheelhouse.sh), switches
# /opt/ganzhi-edge/current to it atomically and restarts the agents. What it never
# touches: the spool (/var/lib/ganzhi-edge), an existing configuration and the device
# secrets (/etc/ganzhi-edge). The two newest earlier releases are kept: roll back with
#   ln -sfn releases/<previous> /opt/ganzhi-edge/current.new && mv -T ... current
#
# Options: --root DIR installs under DIR (a staging tree, the tests); --no-systemctl
# leaves systemd alone; --no-user does not create the ganzhi-edge user; --python PY.
set -euo pipefail

root=""
wheelhouse=""
config=""
name="box"
systemctl=1
make_user=1
py=python3
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2%/}; shift 2 ;;
    --wheelhouse) wheelhouse=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --python) py=$2; shift 2 ;;
    --no-systemctl) systemctl=0; shift ;;
    --no-user) make_user=0; shift ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$wheelhouse" ] && [ -d "$wheelhouse" ] || {
  echo "install.sh: --wheelhouse DIR (built by build-wheelhouse.sh) is required" >&2; exit 2; }
case "$name" in *[!A-Za-z0-9_-]*|"") echo "install.sh: bad --name $name" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[ganzhi-edge install] %s\n' "$*"; }

opt="$root/opt/ganzhi-edge"
etc="$root/etc/ganzhi-edge"
state="$root/var/lib/ganzhi-edge"

if [ "$make_user" = 1 ] && ! id ganzhi-edge >/dev/null 2>&1; then
  log "creating the system user ganzhi-edge"
  useradd --system --home-dir /var/lib/ganzhi-edge --shell /usr/sbin/nologin ganzhi-edge
fi
owner() { [ "$make_user" = 1 ] && chown "$@" || true; }

# 1. A new release, installed offline; current switched only once it works.
release="$opt/releases/$(date -u +%Y%m%dT%H%M%SZ)-$$"
log "installing into $release"
mkdir -p "$opt/releases"
"$py" -m venv "$release"
"$release/bin/python" -m pip install -q --no-index --find-links "$wheelhouse" "ganzhi[edge]"
"$release/bin/ganzhi" edge --help >/dev/null   # it runs before it goes live
ln -sfn "$release" "$opt/current.new"
mv -T "$opt/current.new" "$opt/current"
# Keep the newest three releases (current and two to roll back to).
ls -1d "$opt"/releases/* | sort | head -n -3 | while read -r old; do
  [ "$old" = "$release" ] || rm -rf "$old"
done

# 2. Configuration and secrets: made once, never overwritten.
install -d -m 0750 "$etc" "$etc/secrets"
owner root:ganzhi-edge "$etc" "$etc/secrets"
if [ ! -e "$etc/$name.yaml" ]; then
  if [ -n "$config" ]; then
    install -m 0640 "$config" "$etc/$name.yaml"
    owner root:ganzhi-edge "$etc/$name.yaml"
    log "configuration $etc/$name.yaml installed"
  else
    log "no $etc/$name.yaml yet: write it (deploy/edge/*.yaml are examples)"
  fi
else
  log "keeping the configuration $etc/$name.yaml"
fi

# 3. The spool's directory (systemd's StateDirectory makes it too): left as it is.
install -d -m 0750 "$state"
owner ganzhi-edge:ganzhi-edge "$state"

# 4. The unit and journald's bounds.
install -D -m 0644 "$here/ganzhi-edge@.service" "$root/etc/systemd/system/ganzhi-edge@.service"
install -D -m 0644 "$here/journald-ganzhi-edge.conf" \
  "$root/etc/systemd/journald.conf.d/ganzhi-edge.conf"

if [ "$systemctl" = 1 ]; then
  systemctl daemon-reload
  systemctl try-reload-or-restart systemd-journald || true
  systemctl enable "ganzhi-edge@$name.service"
  if [ -e "$etc/$name.yaml" ]; then
    systemctl restart "ganzhi-edge@$name.service"
    log "ganzhi-edge@$name restarted on $(readlink "$opt/current")"
  fi
fi
log "done: current -> $(readlink "$opt/current")"
