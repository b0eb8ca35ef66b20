# Sourced by scripts/test and scripts/demo: a virtual environment with the project and its dev
# extras; Debian's prometheus and prometheus-pushgateway packages for the drift tests,
# postgresql for the MLflow tracking server, chromium to render the drift report page, and
# libev-dev to build bjoern (the one server of the server tests that is not a wheel).
have_initdb() { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 ||
   ! command -v prometheus-pushgateway >/dev/null 2>&1 || [ ! -f /usr/include/ev.h ] ||
   ! have_initdb || ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Debian's prometheus, prometheus-pushgateway, postgresql, chromium, libev-dev"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-pushgateway \
      postgresql chromium libev-dev >/dev/null
    # The packages start system-wide servers (:9090, :9091, :5432); the tests start their own.
    for service in prometheus prometheus-pushgateway postgresql; do
      (systemctl stop "$service" || service "$service" stop || pkill -f "/usr/bin/$service") \
        >/dev/null 2>&1 || true
    done
  else
    echo "warning: prometheus, its pushgateway, postgresql, chromium or libev-dev missing and cannot apt-get install; those tests skip" >&2
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
  # bjoern builds against libev; without it its tests skip.
  if [ -f /usr/include/ev.h ]; then
    .venv/bin/python -m pip install -q bjoern >>.venv/install.log 2>&1 ||
      echo "warning: bjoern did not build; its tests skip" >&2
  fi
  touch .venv/.installed
fi
