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
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".$1"
}
