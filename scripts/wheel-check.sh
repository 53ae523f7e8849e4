#!/usr/bin/env bash
# The install a user gets: build the wheel, install it (not editable) into a fresh venv outside
# the checkout, and run what the README promises from it. Without the `demo` extra the demo
# must say which command installs it; with it, the demo runs on its embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$root/.venv/bin/python" -m build --wheel --outdir "$work/dist" "$root" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/shadowproxy-*.whl)
echo "built $(basename "$wheel")"
"$python" - "$wheel" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
missing = {"proxy/defaults/demo.yaml", "proxy/defaults/demo-http.yaml", "proxy/py.typed"} - names
sys.exit(f"the wheel lacks {sorted(missing)}" if missing else None)
PY

"$python" -m venv "$work/venv"
bin=$work/venv/bin
"$bin/pip" install -q "$wheel"
cd "$work"  # never import the checkout by accident
"$bin/shadowproxy" --version
for config in "$root"/config/*.yaml "$("$bin/python" -c 'import proxy, pathlib; print(pathlib.Path(proxy.__file__).parent / "defaults")')"/*.yaml; do
  "$bin/shadowproxy" check-config -c "$config"
done
if "$bin/shadowproxy" demo --duration 5 >"$work/demo.out" 2>&1; then
  echo "the demo ran without its extra installed"; exit 1
fi
grep -q "pip install 'shadowproxy\[demo\]'" "$work/demo.out" || { cat "$work/demo.out"; exit 1; }
echo "without the demo extra: $(tail -n1 "$work/demo.out")"

"$bin/pip" install -q "$wheel[demo]"
"$bin/shadowproxy" demo --duration 5
"$bin/shadowproxy" demo --story http --duration 5
echo "wheel check passed"
