# Shared by scripts/serve and scripts/test: Debian packages and the project's virtualenv.

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_venv EXTRAS: .venv with the project installed (EXTRAS e.g. "[test]", or empty).
ensure_venv() {
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    echo "installing Debian package: python3-venv"
    apt_install python3-venv
  fi
  # gcc and Python's headers build the request-scanning accelerator (src/gotk_relay/wire/_survey.c).
  # Without them the install still succeeds and the relay takes its pure-Python path, slower.
  if ! command -v gcc >/dev/null || ! python3 -c 'import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    if [ "$(id -u)" = 0 ] || command -v sudo >/dev/null; then
      echo "installing Debian packages: gcc libc6-dev python3-dev (to build the C accelerator)"
      apt_install gcc libc6-dev python3-dev
    else
      echo "note: no gcc or Python headers, and no root: installing without the C accelerator"
    fi
  fi
  # libsnappy (Google's C++ snappy) compresses routed requests ~25 % faster than cramjam
  # (src/gotk_relay/wire/_snappy.c loads it at run time); without it cramjam does.
  if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libsnappy\.so\.1 '; then
    if [ "$(id -u)" = 0 ] || command -v sudo >/dev/null; then
      echo "installing Debian package: libsnappy1v5 (snappy compression)"
      apt_install libsnappy1v5
    else
      echo "note: no libsnappy and no root: cramjam compresses instead"
    fi
  fi
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".$1"
}
