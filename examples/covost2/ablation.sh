#!/usr/bin/env bash
# The paper's ablation (its Table 2) on the mini corpus: one stage 1, then stage 2 + test evaluation once per
# row, every row with the same stage 1 and the same number of steps, each row adding one part of ComSL to
# the row above (the rows and their overrides on configs/mini.yaml: python -m mini.ablation rows):
#   ST only; + MT; + DDM; + ASR; + speech freezing; + MT regularisation; + CML (= configs/mini.yaml)
# It ends with a table of each row's average test BLEU, its 95% interval and the change from the row above.
#
#   bash examples/covost2/ablation.sh [--out DIR] [--steps N] [--beam N] [--rows a,b,...] [run.sh options]
#
#   --out DIR     experiment directory [exp/ablation]; the shared stages in DIR/base, rows in DIR/rows/NAME
#   --steps N     stage-2 steps of every row [100]
#   --beam N      evaluation beam [2]
#   --rows LIST   run only these rows (names from `python -m mini.ablation rows`) [all]
# Other options go to run.sh (e.g. --speech-init tiny, --langs es,de). Rerunning continues where it stopped.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
if [[ -f .venv/bin/activate ]]; then
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"

out=exp/ablation
steps=100
beam=2
only=""
passed=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --beam) beam=$2; shift 2 ;;
    --rows) only=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) passed+=("$1"); shift ;;
  esac
done

# the part every row shares: set-up, data, stage 1 (and the whisper_zero_shot baseline is left out per row)
bash "$here/run.sh" --out "$out/base" --stop-stage 2 "${passed[@]}"
base=$(cd "$out/base" && pwd)

while IFS=$'\t' read -r name overrides; do
  [[ -z "$only" || ",$only," == *",$name,"* ]] || continue
  row=$out/rows/$name
  mkdir -p "$row/.done"
  for shared in data manifests pretrained mt; do
    if [[ -e $base/$shared && ! -e $row/$shared ]]; then ln -s "$base/$shared" "$row/$shared"; fi
  done
  for marker in setup data mt; do cp "$base/.done/$marker" "$row/.done/$marker"; done
  args=(--comsl "train.max_steps=$steps")
  for o in $overrides; do args+=(--comsl "$o"); done
  echo "[ablation.sh] row $name: ${overrides:-configs/mini.yaml as shipped}"
  bash "$here/run.sh" --out "$row" --stage 3 --beam "$beam" --no-zero-shot "${args[@]}" "${passed[@]}" </dev/null
done < <(python -m mini.ablation rows)

echo
python -m mini.ablation table "$out"
