"""Fine-tuning: SFT data and its loss mask, LoRA (init, gradients, merge, PEFT, mesh), finetune.py.

The model is the 'smoke' size with random weights; finetune.py runs start from a smoke
pre-training checkpoint made once per module.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util

from llm import checkpoint, lora, sft, sharding, trainer
from llm.data import DataError
from llm.models import Transformer, config_for_size
from llm.tokenizer import ByteTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOK = ByteTokenizer()
ALL = 'q,k,v,o,gate,up,down'


@functools.lru_cache
def _init_fn(cfg):
  return jax.jit(lambda key: nnx.to_pure_dict(nnx.split(Transformer(cfg, key))[1]))


def _params(cfg, seed=0):
  """The model's initial parameters (built inside jit: eager op-by-op init is slow on CPU)."""
  return _init_fn(cfg)(jax.random.key(seed))


def _graph(cfg):
  return nnx.split(nnx.eval_shape(lambda: Transformer(cfg, jax.random.key(0))))[0]


@functools.lru_cache
def _forward_fn(cfg):
  graphdef = _graph(cfg)
  return jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))


def _logits(cfg, params, x):
  """Logits [b, t, V] of the model ``cfg`` (one compiled program per config)."""
  return _forward_fn(cfg)(params, x)


def _flat(p):
  return traverse_util.flatten_dict(jax.device_get(p))


def _randomise_adapters(params, seed=1):
  """Adapters with non-zero B, so the adapted model differs from its base."""
  flat = dict(traverse_util.flatten_dict(params))
  rng = np.random.default_rng(seed)
  for k, v in flat.items():
    if lora.is_adapter(k):
      flat[k] = jnp.asarray(rng.normal(0, 0.2, v.shape), v.dtype)
  return traverse_util.unflatten_dict(flat)


def _tokens(n=2, t=24, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(3, 250, (n, t)), jnp.int32)


# ---------------------------------------------------------------------------------------------
# Data: records, tokens, the loss mask, packing
# ---------------------------------------------------------------------------------------------


def test_loss_mask_covers_the_completion_and_eos_only():
  toks, trained = sft.tokenize_example([('Review: fine\nSentiment:', False), (' positive', True)], TOK, True, 'x')
  assert TOK.decode(toks[trained]) == ' positive' and toks[-1] == TOK.eos_id and trained[-1]
  assert toks[0] == TOK.bos_id and not trained[:len('Review: fine\nSentiment:') + 1].any()
  rows = sft.examples_to_rows([(toks, trained)], 64, pack=True)
  m = rows['loss_mask'][0]
  assert TOK.decode(rows['targets'][0][m]) == ' positive'  # EOS is trained too but decodes to nothing
  assert int(m.sum()) == len(' positive') + 1


def test_prompt_trailing_space_moves_to_the_completion():
  # The scorer's rule: "A: " + "x" is scored as context "A:" and continuation " x".
  toks, trained = sft.tokenize_example([('A: ', False), ('x', True)], TOK, False, 'x')
  assert TOK.decode(toks[trained]) == ' x'


def test_packed_rows_give_each_example_its_loss_alone():
  cfg = config_for_size('smoke', TOK.vocab_size)
  graphdef, params = _graph(cfg), _params(cfg)
  examples = [sft.tokenize_example([(f'prompt number {i} ' * (i + 1), False), (f' answer {i}', True)], TOK, True, 'x')
              for i in range(3)]
  packed = sft.examples_to_rows(examples, 160, pack=True)
  alone = sft.examples_to_rows(examples, 160, pack=False)
  assert len(packed['inputs']) == 1 and len(alone['inputs']) == 3
  logprobs = jax.jit(lambda p, b: trainer.token_logprobs(graphdef, p, b))
  lp_packed = np.asarray(logprobs(params, {k: jnp.asarray(v) for k, v in packed.items()}))
  lp_alone = np.asarray(logprobs(params, {k: jnp.asarray(v) for k, v in alone.items()}))
  for s in (1, 2, 3):  # examples_to_rows keeps example order: segment s of the packed row is example s-1
    seg = (packed['segments'][0] == s) & packed['loss_mask'][0]
    row = alone['loss_mask'][s - 1]
    assert seg.sum() == row.sum() > 0
    np.testing.assert_allclose(lp_packed[0][seg].sum(), lp_alone[s - 1][row].sum(), atol=1e-5)


def test_next_token_loss_counts_only_masked_targets():
  cfg = config_for_size('smoke', TOK.vocab_size)
  graphdef, params = _graph(cfg), _params(cfg)
  rows = sft.examples_to_rows([sft.tokenize_example([('a long prompt here', False), (' yes', True)], TOK, True, 'x')],
                              32, pack=True)
  batch = {k: jnp.asarray(v) for k, v in rows.items()}
  loss, n = trainer.next_token_loss(graphdef, params, batch)
  lp = trainer.token_logprobs(graphdef, params, batch)
  assert float(n) == 5  # ' yes' + EOS
  np.testing.assert_allclose(float(loss), -float(jnp.sum(lp * rows['loss_mask'])), rtol=1e-6)


def test_jsonl_chat_and_tsv_sources(tmp_path):
  (tmp_path / 'pc.jsonl').write_text(json.dumps({'prompt': 'Q: 1+1?\nA:', 'completion': ' 2'}) + '\n')
  (tmp_path / 'chat.jsonl').write_text(json.dumps({'messages': [
      {'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello'},
      {'role': 'user', 'content': 'bye'}, {'role': 'assistant', 'content': 'ciao'}]}) + '\n')
  (tmp_path / 'rev.tsv').write_text('label\tsentence\n1\tgreat film\n0\tdull\n')
  cfg = sft.SFTConfig(source=str(tmp_path / 'pc.jsonl'), val_fraction=0.0, seq_len=64)
  (chunks, _), = sft.read_examples(cfg)[0]
  assert chunks == [('Q: 1+1?\nA:', False), (' 2', True)]
  (chunks, _), = sft.read_examples(sft.SFTConfig(source=str(tmp_path / 'chat.jsonl'), val_fraction=0.0))[0]
  toks, trained = sft.tokenize_example(chunks, TOK, False, 'x')
  # Only the assistant turns (and their closing newline); the space after "assistant:" goes
  # with the reply, as the scorer splits a context's trailing space into the continuation.
  assert TOK.decode(toks[trained]) == ' hello\n ciao\n'
  assert TOK.decode(toks) == 'user: hi\nassistant: hello\nuser: bye\nassistant: ciao\n'
  tsv = sft.SFTConfig(source=str(tmp_path / 'rev.tsv'), val_fraction=0.0, prompt_template='Review: {sentence}\nSentiment:',
                      completion_template=' {label}', label_names='label=negative,positive')
  got = [c for c, _ in sft.read_examples(tsv)[0]]
  assert got == [[('Review: great film\nSentiment:', False), (' positive', True)],
                 [('Review: dull\nSentiment:', False), (' negative', True)]]


def test_task_source_renders_the_evaluated_prompt():
  data = sft.load_sft(sft.SFTConfig(source='task:sst2_review', seq_len=128, limit=50), TOK, root=REPO)
  assert data.report['train']['examples'] == 50 and data.report['validation']['examples'] == 872
  row = data.corpus.train[0].arrays
  text = TOK.decode(row['inputs'][0][row['segments'][0] == 1])
  assert text.startswith('Review: ') and '\nSentiment: ' in text


def test_truncation_policies_are_counted(tmp_path):
  path = tmp_path / 'long.jsonl'
  path.write_text(json.dumps({'prompt': 'x' * 100, 'completion': ' y'}) + '\n'
                  + json.dumps({'prompt': 'short', 'completion': ' z'}) + '\n')
  base = dict(source=str(path), seq_len=32, val_fraction=0.0)
  with pytest.raises(DataError, match=r'1 of 2 examples are longer than seq_len=32.*long.jsonl:1'):
    sft.load_sft(sft.SFTConfig(**base, truncation='fail'), TOK)
  dropped = sft.load_sft(sft.SFTConfig(**base, truncation='drop'), TOK)
  assert dropped.report['train']['dropped'] == 1 and dropped.report['train']['examples'] == 1
  cut = sft.load_sft(sft.SFTConfig(**base, truncation='truncate_prompt'), TOK)
  assert cut.report['train']['prompt_truncated'] == 1 and cut.report['train']['examples'] == 2
  rows = cut.corpus.train[0].arrays
  assert TOK.decode(rows['targets'][rows['loss_mask']]) == ' y z'  # both completions whole (EOS decodes to '')


def test_bad_sft_records_name_the_problem(tmp_path):
  (tmp_path / 'a.tsv').write_text('label\tsentence\n1\tok\n')
  with pytest.raises(DataError, match=r"refers to \['review'\].*\['label', 'sentence'\]"):
    sft.read_examples(sft.SFTConfig(source=str(tmp_path / 'a.tsv'), prompt_template='{review}',
                                    completion_template=' {label}'))
  (tmp_path / 'e.jsonl').write_text(json.dumps({'prompt': 'p', 'completion': ''}) + '\n')
  with pytest.raises(DataError, match=r'e.jsonl:1: chunk 1 .* empty after tokenisation'):
    sft.load_sft(sft.SFTConfig(source=str(tmp_path / 'e.jsonl'), val_fraction=0.0), TOK)
  with pytest.raises(DataError, match='matches no file'):
    sft.read_examples(sft.SFTConfig(source=str(tmp_path / 'missing.jsonl')))


# ---------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------


def test_lora_at_init_equals_the_base_exactly():
  base_cfg = config_for_size('smoke', TOK.vocab_size)
  cfg = lora.with_adapters(base_cfg, 4, 16.0, 0.0, ALL)
  p0, p = _params(base_cfg), _params(cfg)
  x = _tokens()
  assert all(np.array_equal(v, _flat(p)[k]) for k, v in _flat(p0).items())  # the same base weights
  assert jnp.array_equal(_logits(base_cfg, p0, x), _logits(cfg, p, x))
  adapters = [k for k in _flat(p) if lora.is_adapter(k)]
  assert len(adapters) == 2 * 7 and all(np.all(v == 0) for k, v in _flat(p).items() if k[-1].startswith('lora_b'))


def test_lora_trains_only_adapters_and_keeps_moments_only_for_them():
  cfg = lora.with_adapters(config_for_size('smoke', TOK.vocab_size), 4, 16.0, 0.1, ALL)
  mesh = sharding.make_mesh({'data': -1})
  opt = trainer.OptimConfig(lr=1e-2, warmup_steps=1, decay_steps=10)
  setup = trainer.setup_model(cfg, opt, mesh, trainable=lora.trainable_fn(cfg, 'lora'))
  params = _params(cfg)
  state = trainer.state_from_params(setup, params)
  step = trainer.make_train_step(setup, opt, 0)
  x = np.asarray(_tokens(4, 16))
  batch = trainer.shard_batch(dict(inputs=x, targets=np.roll(x, -1, 1), segments=np.ones_like(x),
                                   positions=np.tile(np.arange(16, dtype=np.int32), (4, 1))), mesh)
  for _ in range(3):
    state, _ = step(state, batch)
  before, after = _flat(params), _flat(state.params)
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  assert changed == {k for k in before if lora.is_adapter(k)}
  moments = [p for p, _ in traverse_util.flatten_dict(
      jax.tree.map(lambda a: a, state.opt_state[1][0].mu)).items()]
  assert moments and all(lora.is_adapter(k) for k in moments)
  n_adapter = lora.count({k: v for k, v in before.items() if lora.is_adapter(k)})
  assert n_adapter < 0.2 * lora.count(params)


def test_merge_equals_unmerged():
  cfg = lora.with_adapters(config_for_size('smoke', TOK.vocab_size), 4, 8.0, 0.0, ALL)
  params = _randomise_adapters(_params(cfg))
  plain_cfg, merged = lora.merge(cfg, params)
  assert plain_cfg.lora_rank == 0 and not any(lora.is_adapter(k) for k in _flat(merged))
  x = _tokens()
  unmerged = _logits(cfg, params, x)
  folded = _logits(plain_cfg, merged, x)
  base = _logits(plain_cfg, lora.merge(cfg, _params(cfg))[1], x)  # B = 0: the base model
  assert float(jnp.abs(unmerged - base).max()) > 1e-3  # the adapters matter
  np.testing.assert_allclose(np.asarray(folded), np.asarray(unmerged), atol=2e-5)


def test_bad_lora_settings_name_the_fix():
  cfg = config_for_size('smoke', TOK.vocab_size)
  with pytest.raises(lora.LoraError, match=r"\['qq'\] match no projection.*'q', 'k', 'v', 'o', 'gate', 'up', 'down'"):
    lora.with_adapters(cfg, 8, 16.0, 0.0, 'q,qq')
  gpt2 = config_for_size('smoke', TOK.vocab_size, family='gpt2', mlp='gelu')
  with pytest.raises(lora.LoraError, match='gate'):
    lora.with_adapters(gpt2, 8, 16.0, 0.0, 'gate')
  with pytest.raises(lora.LoraError, match=r"pattern 'blocks/nope\*' matches no parameter.*embed_vd"):
    lora.trainable_fn(cfg, 'full', 'blocks/nope*')
  keep = lora.trainable_fn(cfg, 'full', 'embed_vd,blocks/attn/*')
  assert not keep(('embed_vd',)) and not keep(('blocks', 'attn', 'w_q_dnh')) and keep(('blocks', 'mlp', 'w_in_df'))


def _workdir_with(path, cfg, params):
  checkpoint.save_params(str(path), cfg, checkpoint.record_tokenizer(str(path), TOK), params)
  return str(path)


def test_peft_loads_our_adapter_with_identical_logits(tmp_path):
  torch = pytest.importorskip('torch')
  peft = pytest.importorskip('peft')
  from transformers import AutoModelForCausalLM

  from llm import hf
  base_cfg = config_for_size('smoke', TOK.vocab_size, n_kv_heads=2)
  cfg = lora.with_adapters(base_cfg, 4, 8.0, 0.0, ALL)
  params = _randomise_adapters(_params(cfg))
  plain = {k: v for k, v in _flat(params).items() if not lora.is_adapter(k)}
  base_dir = str(tmp_path / 'base_hf')
  hf.export(_workdir_with(tmp_path / 'base', base_cfg, traverse_util.unflatten_dict(plain)), base_dir)
  adapter_dir = lora.export(_workdir_with(tmp_path / 'ft', cfg, params), str(tmp_path / 'adapter'), base=str(base_dir))
  assert sorted(os.listdir(adapter_dir)) == ['adapter_config.json', 'adapter_model.safetensors']
  model = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                         adapter_dir).eval()
  x = np.asarray(_tokens(2, 20))
  with torch.no_grad():
    theirs = torch.log_softmax(model(torch.as_tensor(x, dtype=torch.long)).logits, -1).numpy()
  ours = np.asarray(jax.nn.log_softmax(_logits(cfg, params, x), -1))
  np.testing.assert_allclose(ours[..., :TOK.vocab_size], theirs[..., :TOK.vocab_size], atol=1e-4)
  with pytest.raises(lora.LoraError, match='already exists'):
    lora.export(str(tmp_path / 'ft'), adapter_dir)


def test_merge_cli_writes_a_plain_checkpoint(tmp_path):
  cfg = lora.with_adapters(config_for_size('smoke', TOK.vocab_size), 4, 8.0, 0.0, 'q,v')
  params = _randomise_adapters(_params(cfg))
  src = _workdir_with(tmp_path / 'ft', cfg, params)
  assert lora.main(['merge', '--workdir', src, '--out', str(tmp_path / 'merged')]) == 0
  plain_cfg, _, merged, _ = checkpoint.load_params(str(tmp_path / 'merged'))
  assert plain_cfg.lora_rank == 0
  want = lora.merge(cfg, params)[1]
  for k, v in _flat(want).items():
    np.testing.assert_allclose(_flat(merged)[k], v, atol=1e-6)
  assert lora.main(['merge', '--workdir', str(tmp_path / 'merged'), '--out', str(tmp_path / 'again')]) == 2
  assert not os.path.exists(tmp_path / 'again')


def test_lora_on_an_8_device_mesh_equals_one_device(worker_output):
  returncode, stdout, stderr = worker_output('lora_mesh_worker.py')  # tests/lora_mesh_worker.py
  assert returncode == 0, stderr[-3000:]
  r = json.loads(stdout.strip().splitlines()[-1])
  assert r['moved'] > 1e-3 and r['base_moved'] == 0.0 and r['diff'] < 1e-5, r


# ---------------------------------------------------------------------------------------------
# finetune.py
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def base_workdir(tmp_path_factory):
  """A smoke pre-training run: the base model every finetune.py test starts from."""
  import train
  from configs import default
  wd = str(tmp_path_factory.mktemp('base'))
  train.run(default.get_config('smoke=True'), wd)
  return wd


def _ft_config(init, **changes):
  from configs import finetune_sst2
  c = finetune_sst2.get_config(f'init={init},smoke=True,method=full,fewshot=0')  # one baseline: zero-shot
  with c.unlocked():
    for key, value in changes.items():
      section, _, field = key.rpartition('.')
      (c[section] if section else c)[field] = value
  return c


def test_full_finetune_resume_equals_uninterrupted(base_workdir, tmp_path):
  import finetune
  whole = str(tmp_path / 'whole')
  out = finetune.run(_ft_config(base_workdir, **{'train.decay_steps': 6, 'finetune.baseline_fewshot': 1}), whole)
  assert set(out['baseline']) == {'0-shot', '1-shot'} and out['best']['step'] in (3, 6)
  assert out['trainable_params'] == out['total_params']
  split = str(tmp_path / 'split')
  finetune.run(_ft_config(base_workdir, **{'train.decay_steps': 6, 'train.steps': 3}), split)
  finetune.run(_ft_config(base_workdir, **{'train.decay_steps': 6}), split)
  a, b = checkpoint.load_params(whole)[2], checkpoint.load_params(split)[2]
  for k, v in _flat(a).items():
    np.testing.assert_array_equal(v, _flat(b)[k])
  meta = checkpoint.Checkpointer(os.path.join(whole, 'checkpoints'), 1, 1, False).read_meta(6)
  assert meta['finetuned_from'] == {'init': base_workdir, 'init_step': 6, 'method': 'full', 'data': 'task:sst2_review'}
  best = json.load(open(os.path.join(whole, 'best', 'best.json')))
  assert best['metric'] == 'eval/sst2_review/acc' and checkpoint.load_params(os.path.join(whole, 'best'))[3] == best['step']


def test_lora_finetune_trains_adapters_only(base_workdir, tmp_path):
  import finetune
  out = finetune.run(_ft_config(base_workdir, **{'finetune.method': 'lora'}), str(tmp_path / 'lora'))
  assert 0 < out['trainable_params'] < 0.1 * out['total_params'] and out['optimizer_state_mib'] < 1
  cfg, _, params, _ = checkpoint.load_params(str(tmp_path / 'lora'))
  assert cfg.lora_rank == 8 and cfg.lora_targets == ('q', 'k', 'v', 'o')
  base = _flat(checkpoint.load_params(base_workdir)[2])
  for k, v in _flat(params).items():  # the base weights did not move
    if not lora.is_adapter(k):
      np.testing.assert_array_equal(v, base[k])
  assert any(np.abs(v).max() > 0 for k, v in _flat(params).items() if k[-1].startswith('lora_b'))
  # finetune.py keeps the footprint ledger too: the baseline's and validation's scoring is evaluation.
  fp = json.load(open(tmp_path / 'lora' / 'footprint.json'))
  assert fp['phases']['evaluation']['seconds'] > 0 and fp['runs'][0]['program'] == 'finetune.py'
  assert out['footprint']['energy_kwh'] == pytest.approx(fp['energy_kwh'], rel=0.05)


def test_frozen_parameters_do_not_move():
  cfg = config_for_size('smoke', TOK.vocab_size)
  mesh = sharding.make_mesh({'data': -1})
  opt = trainer.OptimConfig(lr=1e-2, warmup_steps=1, decay_steps=10)
  setup = trainer.setup_model(cfg, opt, mesh, trainable=lora.trainable_fn(cfg, 'full', 'embed_vd,blocks/attn/*'))
  params = _params(cfg)
  state = trainer.state_from_params(setup, params)
  x = np.asarray(_tokens(4, 16))
  batch = trainer.shard_batch(dict(inputs=x, targets=np.roll(x, -1, 1), segments=np.ones_like(x),
                                   positions=np.tile(np.arange(16, dtype=np.int32), (4, 1))), mesh)
  step = trainer.make_train_step(setup, opt, 0)
  for _ in range(2):  # the first step's learning rate is 0 (warmup)
    state, _ = step(state, batch)
  before, after = _flat(params), _flat(state.params)
  moved = {'/'.join(k) for k in before if not np.array_equal(before[k], after[k])}
  assert not any(m == 'embed_vd' or m.startswith('blocks/attn/') for m in moved)
  assert 'blocks/mlp/w_in_df' in moved and 'head_dv' in moved


def test_continued_pretraining_records_its_base(base_workdir, tmp_path):
  import train
  from configs import default
  c = default.get_config('smoke=True')
  with c.unlocked():
    c.init_from = base_workdir
    c.data.sources = 'data/sst2_dev.tsv'
    c.data.doc_separator = 'line'
  wd = str(tmp_path / 'dapt')
  train.run(c, wd)
  meta = checkpoint.Checkpointer(os.path.join(wd, 'checkpoints'), 1, 1, False).read_meta(6)
  assert meta['init_from'] == base_workdir and meta['init_step'] == 6


def _cli(*args):
  return subprocess.run([sys.executable, 'finetune.py', *args], capture_output=True, text=True, cwd=REPO, timeout=600)


def test_finetune_cli_bad_input_is_one_message(tmp_path):
  r = _cli(f'--config=configs/finetune_sst2.py:init={tmp_path}/nothing,smoke=True', f'--workdir={tmp_path}/w')
  assert r.returncode == 2 and 'Traceback' not in r.stderr
  # TensorFlow's C++ start-up lines (oneDNN, CPU features; not silenced by TF_CPP_MIN_LOG_LEVEL
  # in TF 2.21) may come first on some CPUs; everything else is the one error line.
  ours = [l for l in r.stderr.strip().splitlines()
          if not re.match(r'(WARNING: All log messages before absl|[IWE]\d{4} |To enable the following)', l)]
  assert len(ours) == 1 and ours[0].startswith('error: ') and 'does not exist' in ours[0], r.stderr


def test_finetune_needs_a_model_and_a_matching_method(base_workdir, tmp_path):
  import finetune
  from llm.run import ConfigError
  with pytest.raises(ConfigError, match='init='):
    finetune.run(_ft_config(''), str(tmp_path / 'none'))
  with pytest.raises(lora.LoraError, match='match no projection'):
    finetune.run(_ft_config(base_workdir, **{'finetune.method': 'lora', 'lora.targets': 'q,query'}), str(tmp_path / 'x'))
  assert not os.path.exists(tmp_path / 'x' / 'checkpoints' / '0')


def test_qa_config_runs_generation_metrics(base_workdir, tmp_path):
  import finetune
  from configs import finetune_qa
  out = finetune.run(finetune_qa.get_config(f'init={base_workdir},smoke=True'), str(tmp_path / 'qa'))
  row = out['baseline']['0-shot']
  assert {'eval/synth_qa/exact_match', 'eval/synth_qa/chrf'} <= set(row)
  assert 0 <= row['eval/synth_qa/chrf'] <= 100


from test_configs import FINETUNE_ARGS  # noqa: E402  (the documented arguments, one list)


@pytest.mark.parametrize('arg', FINETUNE_ARGS['finetune_sst2.py'])
def test_finetune_sst2_config_arguments(arg):
  from configs import finetune_sst2
  from llm.run import optim_config, to_dataclass
  c = finetune_sst2.get_config(arg)
  assert c.loop == 'finetune' and c.init_from == arg.split(',')[0].split('=', 1)[1]
  to_dataclass(sft.SFTConfig, c.sft)
  assert optim_config(c).decay_steps == c.train.steps
  arch = 'bert' if 'arch=bert' in arg else 't5' if 'arch=t5' in arg else 'decoder'
  full = 'method=full' in arg or (arch != 'decoder' and 'method=lora' not in arg)
  assert c.finetune.method == ('full' if full else 'lora')
  assert c.train.lr == ((3e-4 if arch == 'bert' else 1e-3) if full else 3e-3)
  assert c.lora.rank == (4 if 'rank=4' in arg else 8)
  shots = 0 if 'fewshot=0' in arg or arch != 'decoder' else 1 if 'smoke' in arg else 4
  assert c.finetune.baseline_fewshot == shots
  assert c.finetune.head == ('classifier' if arch == 'bert' else 'lm')
  assert c.finetune.baseline_tasks == ('sst2_t5' if arch == 't5' else 'sst2_review')
  if 'steps=10' in arg:
    assert c.train.steps == 10


@pytest.mark.parametrize('arg', FINETUNE_ARGS['finetune_qa.py'])
def test_finetune_qa_config_arguments(arg):
  from configs import finetune_qa
  c = finetune_qa.get_config(arg)
  assert c.sft.source == 'task:synth_qa' and c.finetune.best_metric == 'eval/synth_qa/exact_match'
  assert c.finetune.method == ('lora' if 'method=lora' in arg else 'full')
  assert c.lora.rank == (16 if 'rank=16' in arg else 8)
  assert c.train.steps == (5 if 'steps=5' in arg else 6 if 'smoke' in arg else 1500)


def test_more_bad_records_name_the_file_and_line(tmp_path):
  (tmp_path / 'empty.jsonl').write_text('')
  with pytest.raises(DataError, match='gave no training examples'):
    sft.read_examples(sft.SFTConfig(source=str(tmp_path / 'empty.jsonl')))
  (tmp_path / 'bad.jsonl').write_text('{"prompt": "a", "completion": " b"}\n{"prompt": \n')
  with pytest.raises(DataError, match=r'bad.jsonl:2: not valid JSON'):
    sft.read_examples(sft.SFTConfig(source=str(tmp_path / 'bad.jsonl')))
  (tmp_path / 'chat.jsonl').write_text(json.dumps({'messages': [{'role': 'user', 'content': 'hi'}]}) + '\n')
  with pytest.raises(DataError, match='chat.jsonl:1: the chat has no assistant turn'):
    sft.read_examples(sft.SFTConfig(source=str(tmp_path / 'chat.jsonl')))
  (tmp_path / 'lab.tsv').write_text('label\tsentence\n2\tok\n')
  with pytest.raises(DataError, match=r"lab.tsv:2: label='2' is not an index into \['neg', 'pos'\]"):
    sft.read_examples(sft.SFTConfig(source=str(tmp_path / 'lab.tsv'), prompt_template='{sentence}',
                                    completion_template=' {label}', label_names='label=neg,pos'))
  with pytest.raises(DataError, match="truncation='cut' is unknown"):
    sft.load_sft(sft.SFTConfig(source=str(tmp_path / 'lab.tsv'), truncation='cut'), TOK)


def test_chrf_and_bleu_equal_the_harness():
  from lm_eval.api import metrics as harness

  from llm.eval import metrics as M
  items = [(['the cat sat on the mat'], 'the cat sat on a mat'), (['Lisbon'], ' Lisbon'), (['a dog'], 'dog')]
  assert M.chrf(items) == pytest.approx(harness.chrf([(r[0], p) for r, p in items]), abs=1e-9)
  assert M.bleu(items) == pytest.approx(harness.bleu([(r[0], p) for r, p in items]), abs=1e-9)
  assert 0 < M.chrf(items) < 100


def test_a_recipe_refuses_a_config_of_another_loop(tmp_path):
  r = _cli('--config=configs/default.py:smoke=True', f'--workdir={tmp_path}/w')
  assert r.returncode == 2 and 'Traceback' not in r.stderr
  assert r.stderr.strip() == ("error: loop='pretrain' is not a loop of this recipe; it runs ['finetune'] "
                              '(pre-training and evaluation: train.py; fine-tuning: finetune.py)')
  assert not os.path.exists(tmp_path / 'w')
