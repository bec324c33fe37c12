# Shared by scripts/serve and scripts/test: the project's Python environment.
# PYTHON picks the interpreter (default python3, 3.11 or newer).

venv_ready() {  # venv_ready EXTRAS: .venv exists with the project installed (editable) and EXTRAS
  local stamp=".venv/.installed-$1"
  if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
    return 0
  fi
  if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "${PYTHON:-python3}" -m venv .venv
  fi
  echo "setup: installing mailgate[$1] into .venv" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$1]"
  touch "$stamp"
}
