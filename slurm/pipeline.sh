#!/bin/bash
# Submit a whole screen to Slurm as three chained jobs: data (ingest, or synth for a demo) ->
# train -> score, each starting only if the one before succeeded (--dependency=afterok).
# Prints the job ids. Run it on a login node (plain bash, not sbatch).
#
#   slurm/pipeline.sh --work DIR --synth [PRESET] [options]          # demo: synthetic plates
#   slurm/pipeline.sh --work DIR --config FILE --manifest TRAIN.csv [--val-manifest VAL.csv]
#   slurm/pipeline.sh --work DIR --config FILE --ingest "INGEST ARGS" [--val-ingest "ARGS"]
#
# Data step:
#   --synth [PRESET]     milscreen synth --preset PRESET (default tiny) --out DIR/data:
#                        trains on DIR/data/train.h5, validates on and scores DIR/data/test.h5.
#                        Without --config, the paper's network (configs/paper.ini beside this
#                        folder) set to the tiny preset's 3 classes, whole images, batch 4.
#   --synth-args "ARGS"  more synth options (e.g. "--size 96x96 --replicates 2")
#   --manifest CSV       milscreen ingest --manifest CSV --out DIR/shards/train.h5
#   --val-manifest CSV   ... and DIR/shards/val.h5 (validation; scored too)
#   --ingest "ARGS"      milscreen ingest ARGS --out DIR/shards/train.h5 (e.g. "--bbbc021
#                        BBBC021_v1_image.csv --moa BBBC021_v1_moa.csv --root /data/bbbc021")
#   --val-ingest "ARGS"  the same for DIR/shards/val.h5
#   --shards "A.h5 ..."  no data step: train on these existing shards
#   --val "V.h5 ..."     ... validating on these
# Training (slurm/train.sbatch) into DIR/run; scoring (slurm/score.sbatch) into DIR/scores:
#   --config FILE        the training config ([data] is set from the shards above)
#   --set sec.key=val    override a config key (repeatable)
#   --score "S.h5 ..."   what to score (default: the validation shards, else the training ones)
# Slurm options (word-split; each job also has its script's #SBATCH defaults):
#   --sbatch "OPTS"      for every job (e.g. "--partition=gpu --account=lab")
#   --data-sbatch, --train-sbatch, --score-sbatch "OPTS"   for one job (e.g. "--gres=gpu:4
#                        --ntasks=4 --time=2-00:00:00" for training)
#   --dry-run            print the sbatch commands instead of submitting
# Environment: MILSCREEN (the binary; default PREFIX/bin/milscreen when this script is the
# installed PREFIX/share/milscreen/slurm/pipeline.sh, else milscreen on PATH, else
# build/pipeline/milscreen beside this folder), passed on to the jobs with the rest of the
# environment.
#
# Output: one line per job ("data   1234" ...) and last "jobs: DATA TRAIN SCORE". Job logs go
# to DIR/logs/<name>-<jobid>.out. If training is requeued near its time limit, scoring waits
# for the requeued run to finish. If a job fails, the ones after it stay pending with reason
# DependencyNeverSatisfied: scancel them.
set -euo pipefail
set -f  # shard lists are word-split below, never globbed here (score.sbatch expands globs)

me=pipeline.sh
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)

work="" synth="" synth_args="" manifest="" val_manifest="" ingest="" val_ingest=""
shards="" val="" config="" score="" common="" data_sb="" train_sb="" score_sb="" dry=0
sets=()
while [[ $# -gt 0 ]]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --work) work=${2:?--work needs a folder}; shift 2 ;;
    --synth)
      if [[ $# -ge 2 && $2 != -* ]]; then synth=$2; shift 2; else synth=tiny; shift; fi ;;
    --synth-args) synth_args=${2?}; shift 2 ;;
    --manifest) manifest=${2:?--manifest needs a CSV}; shift 2 ;;
    --val-manifest) val_manifest=${2:?--val-manifest needs a CSV}; shift 2 ;;
    --ingest) ingest=${2:?--ingest needs arguments}; shift 2 ;;
    --val-ingest) val_ingest=${2:?--val-ingest needs arguments}; shift 2 ;;
    --shards) shards=${2:?--shards needs shard files}; shift 2 ;;
    --val) val=${2:?--val needs shard files}; shift 2 ;;
    --config) config=${2:?--config needs a file}; shift 2 ;;
    --set) sets+=(--set "${2:?--set needs section.key=value}"); shift 2 ;;
    --score) score=${2:?--score needs shard files}; shift 2 ;;
    --sbatch) common=${2?}; shift 2 ;;
    --data-sbatch) data_sb=${2?}; shift 2 ;;
    --train-sbatch) train_sb=${2?}; shift 2 ;;
    --score-sbatch) score_sb=${2?}; shift 2 ;;
    --dry-run) dry=1; shift ;;
    *) die "unknown argument '$1' (see $0 --help)" ;;
  esac
done
[[ -n $work ]] || die "--work DIR is required (where data, run, scores and logs go)"
n=0
for x in "$synth" "$manifest" "$ingest" "$shards"; do [[ -n $x ]] && n=$((n + 1)); done
(( n == 1 )) || die "give exactly one of --synth, --manifest, --ingest or --shards"

if [[ -n ${MILSCREEN:-} ]]; then
  [[ -x $MILSCREEN ]] || die "MILSCREEN=$MILSCREEN is not an executable file"
elif [[ $here == */share/milscreen/slurm && -x $here/../../../bin/milscreen ]]; then
  MILSCREEN=$(readlink -f "$here/../../../bin/milscreen")  # installed: PREFIX/bin
elif command -v milscreen >/dev/null; then
  MILSCREEN=$(command -v milscreen)
elif [[ -x $here/../build/pipeline/milscreen ]]; then
  MILSCREEN=$(readlink -f "$here/../build/pipeline/milscreen")
else
  die "cannot find the milscreen binary: set MILSCREEN=/path/to/milscreen or put it on PATH"
fi
export MILSCREEN
for s in train.sbatch score.sbatch; do
  [[ -f $here/$s ]] || die "$here/$s not found (pipeline.sh submits the scripts beside it)"
done
(( dry )) || command -v sbatch >/dev/null ||
  die "sbatch not found: run this where Slurm's commands are"

mkdir -p "$work/logs"
work=$(cd "$work" && pwd)
q() { printf '%q ' "$@"; }
abs() { local s out=(); for s in "$@"; do out+=("$(realpath -m -- "$s")"); done; echo "${out[*]}"; }

# the data step: a command run by a small job, and the shards it will write
data_cmd=""
if [[ -n $synth ]]; then
  data_cmd="$(q "$MILSCREEN" synth --preset "$synth" --out "$work/data") $synth_args"
  train_shards=$work/data/train.h5 val_shards=$work/data/test.h5
  if [[ -z $config ]]; then
    config=$here/../configs/paper.ini
    [[ -f $config ]] || die "no --config and $config not found"
    # the paper's network on the tiny preset: 3 classes, whole 128x128 images
    sets=(--set net.classes=3 --set train.crop=0 --set train.batch=4 "${sets[@]}")
  fi
elif [[ -n $manifest || -n $ingest ]]; then
  [[ -z $manifest || -f $manifest ]] || die "manifest '$manifest' not found"
  [[ -z $val_manifest || -f $val_manifest ]] || die "validation manifest '$val_manifest' not found"
  [[ -n $manifest ]] && ingest="--manifest $(q "$(readlink -f "$manifest")")"
  [[ -n $val_manifest ]] && val_ingest="--manifest $(q "$(readlink -f "$val_manifest")")"
  mkdir -p "$work/shards"
  data_cmd="$(q "$MILSCREEN") ingest $ingest --out $(q "$work/shards/train.h5")"
  train_shards=$work/shards/train.h5 val_shards=""
  if [[ -n $val_ingest ]]; then
    data_cmd+=" && $(q "$MILSCREEN") ingest $val_ingest --out $(q "$work/shards/val.h5")"
    val_shards=$work/shards/val.h5
  fi
else
  for s in $shards $val; do [[ -f $s ]] || die "shard '$s' not found"; done
  # shellcheck disable=SC2086
  train_shards=$(abs $shards) val_shards=$(abs $val)
fi
[[ -n $config ]] || die "--config FILE is required (except with --synth)"
[[ -f $config ]] || die "config '$config' not found"
config=$(readlink -f "$config")
# shellcheck disable=SC2086
score_shards=${score:+$(abs $score)}
score_shards=${score_shards:-${val_shards:-$train_shards}}

submit() {  # name, sbatch args...: prints the job id
  local name=$1; shift
  # shellcheck disable=SC2206  # the option strings are meant to be word-split
  local args=(--parsable --job-name="ms-$name" --output="$work/logs/%x-%j.out"
              --chdir="$work" --export=ALL $common "$@")
  if (( dry )); then
    echo "sbatch ${args[*]}" >&2
    echo "DRY$name"
  else
    local id
    id=$(sbatch "${args[@]}") || die "sbatch for the $name job failed"
    echo "${id%%;*}"
  fi
}

ids=()
dep=()
if [[ -n $data_cmd ]]; then
  # shellcheck disable=SC2086
  jd=$(submit data --ntasks=1 --cpus-per-task=1 --time=04:00:00 $data_sb \
         --wrap="set -ex; $data_cmd")
  ids+=("$jd"); dep=(--dependency=afterok:"$jd")
  printf 'data   %s  (%s)\n' "$jd" "${synth:+synth $synth}${synth:-ingest}"
fi
train_set=(--set "data.train=$train_shards" --set "data.val=$val_shards")
# shellcheck disable=SC2086
jt=$(submit train "${dep[@]}" $train_sb "$here/train.sbatch" "$config" "$work/run" \
       "${train_set[@]}" "${sets[@]}")
ids+=("$jt")
printf 'train  %s  (%s -> %s)\n' "$jt" "$config" "$work/run"
# shellcheck disable=SC2086
js=$(submit score --dependency=afterok:"$jt" $score_sb "$here/score.sbatch" "$work/run" \
       "$work/scores" $score_shards)
ids+=("$js")
printf 'score  %s  (%s -> %s)\n' "$js" "$score_shards" "$work/scores"
echo "jobs: ${ids[*]}"
