# Sourced by scripts/test and scripts/demo: a virtual environment with the project and its dev
# extras, and Debian's prometheus and prometheus-pushgateway packages for the drift tests.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 ||
   ! command -v prometheus-pushgateway >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Debian's prometheus and prometheus-pushgateway packages"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-pushgateway >/dev/null
    # The packages start system-wide servers (:9090, :9091); the tests start their own.
    for service in prometheus prometheus-pushgateway; do
      (systemctl stop "$service" || service "$service" stop || pkill -f "/usr/bin/$service") \
        >/dev/null 2>&1 || true
    done
  else
    echo "warning: prometheus or its pushgateway not found and cannot apt-get install; those tests skip" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "== installing boxkite-middleware[dev] into .venv"
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e '.[dev]'; } >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    exit 1
  fi
  touch .venv/.installed
fi
