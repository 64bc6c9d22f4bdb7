#!/usr/bin/env bash
# Install what the code sandbox (verifiers.code) needs on a fresh Debian/Ubuntu machine, as root.
# bubblewrap gives each untrusted run private namespaces (no network, own PID tree), a read-only root
# and a size-capped tmpfs scratch dir; python3 is the world-readable interpreter the sandbox runs
# (a venv under /root is not readable by the unprivileged uid the sandbox drops to); prlimit,
# setpriv and unshare (util-linux) set the limits, the uid and the network namespace.
# Without a working bubblewrap, code envs refuse to run untrusted code (docs/sandbox.md, "Fail closed").
set -euo pipefail
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
[ -x /usr/bin/python3 ] || need+=(python3)
for t in prlimit setpriv unshare; do command -v "$t" >/dev/null 2>&1 || need+=(util-linux); done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-sandbox.sh: need root to install ${need[*]} (or install them yourself)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# bwrap runs unprivileged (the sandbox drops to a dedicated uid first), so it needs unprivileged
# user namespaces: allow them where a sysctl forbids them (older Debian kernels, Ubuntu 24.04 AppArmor).
if [ "$(id -u)" -eq 0 ]; then
  f=/proc/sys/kernel/unprivileged_userns_clone; [ -w "$f" ] && [ "$(cat $f)" = 0 ] && echo 1 > "$f"
  f=/proc/sys/kernel/apparmor_restrict_unprivileged_userns; [ -w "$f" ] && [ "$(cat $f)" = 1 ] && echo 0 > "$f"
fi
bwrap --version
# smoke test, as an unprivileged uid like the sandbox's
if setpriv --reuid=65534 --regid=65534 --clear-groups -- bwrap --unshare-all --ro-bind /usr /usr \
     --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --proc /proc /usr/bin/python3 -c pass; then
  echo "sandbox: bubblewrap works"
else
  echo "sandbox: WARNING bubblewrap cannot create namespaces here; code envs will refuse to run and the" \
       "sandbox tests will skip (see docs/sandbox.md)" >&2
fi
