#!/bin/bash
# A 2 GB corpus from raw pages to training (README: Results, "Data at corpus scale").
#   bash benchmarks/data_at_scale.sh runs/scale [OLD_CHECKOUT]
# Generates ~2.1 GB of web-like JSONL, cleans it, prepares it, trains the default model on
# it and on Tiny Shakespeare (start-up, peak RSS, tokens/s), then starts the in-memory path
# on the same corpus, and, given OLD_CHECKOUT (a worktree of an earlier commit), that
# commit's in-memory path; both stopped at 20 GB of RSS. About 35 minutes on 2 cores.
set -euo pipefail
W=$(realpath -m "${1:-runs/scale}")
OLD=${2:-}
cd "$(dirname "$0")/.."
mkdir -p "$W"
python -m benchmarks.corpus.webgen --out "$W/web" --num_docs 760000 --shards 16 --compresslevel 1
/usr/bin/time -v python -m llm.data.clean.pipeline --config=configs/corpus.py --config.inputs="$W/web/*.jsonl.gz" \
  --config.output="$W/corpus" --config.shards=16 2> "$W/clean.time"
TFDS="$W/corpus/tfds/clean_corpus/default/1.0.0"
/usr/bin/time -v python -m llm.data.prepare --config=configs/prepare.py --config.sources="tfds:$TFDS" \
  --config.output="$W/tokens" --config.runner=multiprocess --config.workers=2 2> "$W/prepare.time"
grep -h "Elapsed\|Maximum resident" "$W/clean.time" "$W/prepare.time"
TRAIN="--config=configs/default.py --config.train.steps=300 --config.train.log_every=1 --config.train.eval_every=0"
TRAIN="$TRAIN --config.train.checkpoint_every=300 --config.sample.num_tokens=16"
for run in tokens shakespeare; do
  src=$([ "$run" = tokens ] && echo "--config.data.sources=tokens:$W/tokens" || true)
  rm -rf "$W/run_$run"
  echo "train on $run: $(python benchmarks/watch.py --log "$W/train_$run.log" -- python train.py $TRAIN $src --workdir="$W/run_$run")"
  python -c "import json,statistics,sys; r=[json.loads(l) for l in open(sys.argv[1])]; \
print('  steady tokens/s (median, steps 51-300):', round(statistics.median(x['tokens_per_sec'] for x in r if x['step'] > 50)))" \
    "$W/run_$run/metrics.jsonl"
done
rm -rf "$W/run_memory"
echo "in memory: $(python benchmarks/watch.py --log "$W/train_memory.log" -- python train.py $TRAIN --config.train.steps=20 \
  --config.data.sources="tfds:$TFDS" --workdir="$W/run_memory")"
if [ -n "$OLD" ]; then
  rm -rf "$W/run_memory_old"
  echo "in memory, $OLD: $(cd "$OLD" && python "$OLDPWD/benchmarks/watch.py" --log "$W/train_memory_old.log" -- \
    python train.py $TRAIN --config.train.steps=20 --config.data.sources="tfds:$TFDS" --workdir="$W/run_memory_old")"
fi
