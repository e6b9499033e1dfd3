#!/usr/bin/env bash
# Install what skymesh needs on a Debian/Ubuntu machine, skipping what is there:
# system packages (apt), the Python environment (.venv), DynamoDB Local (npm pack).
# The web dashboard's node packages are installed by `make web` (npm ci from web/package-lock.json).
# Safe to run again; each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
have python3      || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
have java         || need_apt+=(openjdk-17-jre-headless)
have javac        || need_apt+=(openjdk-17-jdk-headless)
have npm          || need_apt+=(npm)
have mosquitto || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
have mosquitto_sub || need_apt+=(mosquitto-clients)
have wireguard-go || need_apt+=(wireguard-go)
have wg           || need_apt+=(wireguard-tools)
have ip           || need_apt+=(iproute2)
have ping         || need_apt+=(iputils-ping)
have nft          || need_apt+=(nftables)      # the agent's forwarding and NAT on gateways
have zbarimg      || need_apt+=(zbar-tools)    # tests decode client QR codes
have rsvg-convert || need_apt+=(librsvg2-bin)  # zbarimg (ImageMagick) reads the SVG QR codes through it
have chromium     || need_apt+=(chromium)      # tests/browser drive the web dashboard in it (headless)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts a system-wide mosquitto on port 1883; skymesh runs its own broker.
  if have systemctl && systemctl is-active --quiet mosquitto 2>/dev/null; then
    $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
  fi
fi

stamp=.venv/.skymesh-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: preparing .venv"
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[control,agent,dev,infra]'
  echo "$want" > "$stamp"
fi

# The Lambda package's wheels (Linux x86_64, this Python), fetched while the network
# is there so `chalice package` and `make synth` work offline later: the Makefile and
# tests/infra point pip at this directory (PIP_NO_INDEX, PIP_FIND_LINKS).
wheels=.venv/lambda-wheels
want_wheels=$(cat requirements.txt "$stamp" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$wheels/.stamp" 2>/dev/null)" != "$want_wheels" ]; then
  echo "bootstrap: fetching wheels for the Lambda package"
  pyver=$(.venv/bin/python -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
  platforms=(--platform manylinux2014_x86_64)
  for minor in $(seq 17 26); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
  .venv/bin/python -m pip download -q -d "$wheels" -r requirements.txt
  .venv/bin/python -m pip download -q -d "$wheels" -r requirements.txt --only-binary=:all: \
    --implementation cp --python-version "$pyver" "${platforms[@]}"
  echo "$want_wheels" > "$wheels/.stamp"
fi

# The web dashboard's build (Vite 8, `make web`) needs Node.js 20.19+ or 22.12+; Debian 12's and
# Ubuntu 24.04's nodejs is 18. Then the official Node 22 binary comes from the npm registry's
# node-linux-<arch> package (as DynamoDB Local comes by npm pack) into .venv/node/bin, which the
# Makefile puts first on PATH for the web build only.
NODE_VERSION=22.23.5
node_ok() { "$1" -e 'const [a,b]=process.versions.node.split(".").map(Number);
  process.exit(a>22||(a===22&&b>=12)||(a===20&&b>=19)?0:1)' 2>/dev/null; }
if ! node_ok node && ! node_ok .venv/node/bin/node; then
  case "$(uname -m)" in
    x86_64) arch=x64 ;; aarch64) arch=arm64 ;;
    *) echo "bootstrap: no Node.js 20.19+ here and no node-linux package for $(uname -m)" >&2; exit 1 ;;
  esac
  echo "bootstrap: Node.js $(node --version) is too old for the dashboard's build; fetching Node $NODE_VERSION into .venv/node"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "node-linux-$arch@$NODE_VERSION" >/dev/null)
  tar -xzf "$tmp"/node-linux-"$arch"-*.tgz -C "$tmp" package/bin/node
  mkdir -p .venv/node/bin && mv "$tmp/package/bin/node" .venv/node/bin/node
  rm -rf "$tmp"
fi

.venv/bin/python -c 'from skymesh.local.dynamodb import install, is_installed
import sys
if not is_installed():
    print("bootstrap: installing DynamoDB Local", file=sys.stderr)
install()'
