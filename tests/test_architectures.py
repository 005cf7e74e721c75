"""The encoder (BERT) and encoder-decoder (T5) beside the decoder: attention direction, padding,
packing, the builder, parameter counts and FLOPs, and the losses the trainer takes from each."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm import perf, trainer
from llm.models import ARCHITECTURES, SIZES, build, config_for_size
from llm.models.config import ModelConfig

V = 300


def make(size: str, **kw):
  cfg = config_for_size(size, V, **kw)
  return cfg, build(cfg, jax.random.key(0))


@nnx.jit
def forward(model, *args):
  """model(*args), compiled (eager op-by-op dispatch is most of a tiny model's time)."""
  return model(*args)


@nnx.jit
def trunk(model, tokens, positions=None, segments=None):
  return model.trunk(tokens, positions, segments).hidden_btd


def rows(b: int, t: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(3, V, (b, t)).astype(np.int32)


def test_builder_picks_the_architecture_of_the_family():
  for size, arch in (('tiny', 'decoder'), ('bert-tiny', 'encoder'), ('t5-tiny', 'encoder_decoder')):
    cfg = config_for_size(size, V)
    model = nnx.eval_shape(lambda: build(cfg, jax.random.key(0)))
    assert cfg.arch == arch and isinstance(model, ARCHITECTURES[arch])
  assert not config_for_size('bert-tiny', V).causal and config_for_size('tiny', V).causal


@pytest.mark.parametrize('size', sorted(SIZES))
def test_param_count_is_the_models(size):
  """param_count (used for MFU and reports) equals the built model's, for every size and the switches."""
  variants = ({}, {'tie_embeddings': True, 'use_bias': True}, {'lora_rank': 2, 'lora_targets': ('q', 'up')})
  for extra in variants if SIZES[size]['d_model'] <= 256 else variants[:1]:  # the switches on the small ones
    cfg = config_for_size(size, V, **extra)
    if cfg.d_model > 1024:
      continue  # the same formula; spare the abstract trace of the 7b
    shapes = nnx.state(nnx.eval_shape(lambda: build(cfg, jax.random.key(0))), nnx.Param)
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == cfg.param_count(), (size, extra)


def test_encoder_sees_the_future_and_t5s_decoder_does_not():
  """(The decoder's causality is tests/test_model.py's.)"""
  x = rows(1, 12)
  y = x.copy()
  y[0, -1] = (y[0, -1] + 1 - 3) % (V - 3) + 3  # change only the last token
  _, model = make('bert-smoke')
  a, b = forward(model, jnp.asarray(x)), forward(model, jnp.asarray(y))
  assert float(jnp.max(jnp.abs(a[0, 0] - b[0, 0]))) > 1e-4
  _, t5 = make('t5-smoke')
  dec = jnp.asarray(rows(1, 6, 1))
  enc_changed = forward(t5, jnp.asarray(x), dec) - forward(t5, jnp.asarray(y), dec)
  assert float(jnp.max(jnp.abs(enc_changed[0, 0]))) > 1e-4  # every decoder position sees the whole input
  dec2 = dec.at[0, -1].set(7)
  dec_changed = forward(t5, jnp.asarray(x), dec) - forward(t5, jnp.asarray(x), dec2)
  assert float(jnp.max(jnp.abs(dec_changed[0, :-1]))) == 0.0  # but its own future stays hidden


def test_padding_never_leaks_and_packed_rows_equal_documents_alone():
  """Tokens of segment 0 change nothing real; two documents packed in one row score as alone."""
  _, model = make('bert-smoke')
  a, b = rows(1, 5, 1), rows(1, 4, 2)
  packed = np.concatenate([a, b, rows(1, 3, 3)], 1)  # 3 tokens of padding
  segments = np.array([[1] * 5 + [2] * 4 + [0] * 3], np.int32)
  positions = np.array([list(range(5)) + list(range(4)) + [0] * 3], np.int32)
  h = trunk(model, jnp.asarray(packed), jnp.asarray(positions), jnp.asarray(segments))
  alone_a = trunk(model, jnp.asarray(a))
  alone_b = trunk(model, jnp.asarray(b))
  np.testing.assert_allclose(h[0, :5], alone_a[0], atol=1e-5)
  np.testing.assert_allclose(h[0, 5:9], alone_b[0], atol=1e-5)
  other = packed.copy()
  other[0, 9:] = rows(1, 3, 9)
  h2 = trunk(model, jnp.asarray(other), jnp.asarray(positions), jnp.asarray(segments))
  np.testing.assert_array_equal(np.asarray(h[0, :9]), np.asarray(h2[0, :9]))

  _, t5 = make('t5-smoke')
  enc = np.concatenate([a, rows(1, 3, 4)], 1)
  seg = np.array([[1] * 5 + [0] * 3], np.int32)
  dec = rows(1, 4, 5)
  @nnx.jit
  def logits(t5, enc_tokens):
    return t5.head(t5.hidden({'inputs': enc_tokens, 'segments': jnp.asarray(seg), 'dec_inputs': jnp.asarray(dec)}))
  padded = logits(t5, jnp.asarray(enc))
  enc2 = enc.copy()
  enc2[0, 5:] = rows(1, 3, 6)
  np.testing.assert_array_equal(np.asarray(padded), np.asarray(logits(t5, jnp.asarray(enc2))))
  np.testing.assert_allclose(padded, forward(t5, jnp.asarray(a), jnp.asarray(dec)), atol=1e-5)
  # Two examples packed in one T5 row (segments 1 and 2 on both sides) score as each alone.
  e1, e2, d1, d2 = rows(1, 4, 7), rows(1, 3, 8), rows(1, 3, 9), rows(1, 2, 10)
  packed = {'inputs': jnp.asarray(np.concatenate([e1, e2], 1)), 'segments': jnp.asarray([[1] * 4 + [2] * 3]),
            'positions': jnp.asarray([[0, 1, 2, 3, 0, 1, 2]]), 'dec_inputs': jnp.asarray(np.concatenate([d1, d2], 1)),
            'dec_segments': jnp.asarray([[1] * 3 + [2] * 2]), 'dec_positions': jnp.asarray([[0, 1, 2, 0, 1]])}
  both = nnx.jit(lambda m, b: m.head(m.hidden(b)))(t5, packed)
  np.testing.assert_allclose(both[0, :3], forward(t5, jnp.asarray(e1), jnp.asarray(d1))[0], atol=1e-5)
  np.testing.assert_allclose(both[0, 3:], forward(t5, jnp.asarray(e2), jnp.asarray(d2))[0], atol=1e-5)


def test_losses_read_each_architectures_fields():
  """token_logprobs is the one scoring primitive: the masked-LM and span-corruption batches give a
  loss over their own targets (the decoder side's padding left out), and every parameter of
  both models, cross-attention and relative-bias tables included, gets a gradient from it.
  (That they train and resume: test_train_py_resumes_bert_and_t5_exactly.)"""
  enc_batch = {'inputs': rows(2, 8), 'targets': rows(2, 8, 1), 'loss_mask': np.eye(2, 8, dtype=np.int32),
               'segments': np.ones((2, 8), np.int32)}
  dec_segments = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.int32)
  t5_batch = {'inputs': rows(2, 8), 'segments': np.ones((2, 8), np.int32), 'dec_inputs': rows(2, 4, 2),
              'targets': rows(2, 4, 3), 'dec_segments': dec_segments}
  for size, batch, count in (('bert-smoke', enc_batch, 2), ('t5-smoke', t5_batch, 5)):
    _, model = make(size)
    graph, params = nnx.split(model)
    params = nnx.to_pure_dict(params)
    (loss, n), grads = jax.jit(jax.value_and_grad(
        lambda p, b: trainer.next_token_loss(graph, p, b), has_aux=True))(params, batch)
    assert float(n) == count and np.isfinite(float(loss)) and float(loss) > 0
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    silent = ['/'.join(str(k.key) for k in path) for path, g in flat if not np.any(np.asarray(g))]
    assert not silent, f'{size}: no gradient reaches {silent}'


def test_flops_count_attention_by_direction_and_both_sides():
  dec, enc = config_for_size('tiny', V), config_for_size('bert-tiny', V)
  t5 = config_for_size('t5-tiny', V)
  # Bidirectional attention costs twice the causal half per layer: the difference grows with length.
  grow_enc = perf.train_flops_per_token(enc, 512) - perf.train_flops_per_token(enc, 256)
  grow_dec = perf.train_flops_per_token(dec, 512) - perf.train_flops_per_token(dec, 256)
  h = dec.n_heads * dec.d_head
  assert grow_dec == pytest.approx(3 * dec.n_layers * 2 * 2 * 256 * h * 0.5)
  assert grow_enc == pytest.approx(3 * enc.n_layers * 2 * 2 * 256 * h)
  # T5-base at 512 inputs and 114 targets: 6 x (weights each token passes through) per row, with
  # the encoder's weights at 512 tokens and the decoder's and the output layer's at 114, plus attention.
  t5 = config_for_size('t5-base', 32128)
  d, nh, f, L = t5.d_model, t5.n_heads * t5.d_head, t5.d_ff, t5.n_layers
  enc_w, dec_w = L * (4 * d * nh + 3 * d * f), L * (8 * d * nh + 3 * d * f)
  matmuls = 6 * (enc_w * 512 + (dec_w + d * t5.padded_vocab) * 114) / 512
  flops = perf.train_flops_per_token(t5, 512, 114)
  assert matmuls < flops < 1.3 * matmuls  # attention adds a little at this length
  assert perf.train_flops_per_token(t5, 512, 228) > flops


def test_config_errors_name_the_fix():
  with pytest.raises(ValueError, match='bidirectional model is an encoder'):
    ModelConfig(vocab_size=V, family='llama', causal=False)
  with pytest.raises(ValueError, match='relative position biases'):
    ModelConfig(vocab_size=V, family='t5', positions='rope')
  with pytest.raises(ValueError, match="one of \\['llama', 'gpt2', 'bert', 't5'\\]"):
    ModelConfig(vocab_size=V, family='roberta')
  with pytest.raises(ValueError, match="post-norm blocks and token types are the encoder's"):
    ModelConfig(vocab_size=V, family='llama', norm_position='post')
  with pytest.raises(ValueError, match="post-norm blocks and token types are the encoder's"):
    ModelConfig(vocab_size=V, family='t5', type_vocab_size=2)
  with pytest.raises(ValueError, match='first-token classifier is an encoder'):
    ModelConfig(vocab_size=V, family='t5', num_labels=2)
  with pytest.raises(ValueError, match='names 1 classes but model.num_labels=2'):
    ModelConfig(vocab_size=V, family='bert', num_labels=2, labels=('a',))
  from llm import bench
  with pytest.raises(ValueError, match=r"--size=t5-tiny is an encoder_decoder model .* not --arch=encoder"):
    bench.run_benchmark('t5-tiny', 16, 2, arch='encoder')


def test_bad_checkpoints_and_adapters_are_one_message(tmp_path):
  """A checkpoint this version cannot build (an old decoder saved bidirectional) is CheckpointMismatch;
  the harness adapter, which only the decoder's scorer answers, refuses a BERT checkpoint by name."""
  import json

  from llm import checkpoint
  from llm.lm_eval_adapter import load_scorer
  from llm.tokenizer import ByteTokenizer
  cfg = config_for_size('bert-smoke', 260)
  params = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: build(cfg, jax.random.key(0)))))
  params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), params)
  spec = ByteTokenizer(mask=True).spec()
  checkpoint.save_params(str(tmp_path / 'bert'), cfg, spec, params)
  with pytest.raises(ValueError, match='holds an encoder .*harness adapter scores decoders'):
    load_scorer(str(tmp_path / 'bert'))
  checkpoint.save_params(str(tmp_path / 'old'), config_for_size('smoke', 259), ByteTokenizer().spec(),
                         jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), nnx.to_pure_dict(nnx.state(
                             nnx.eval_shape(lambda: build(config_for_size('smoke', 259), jax.random.key(0)))))))
  path = str(tmp_path / 'old' / 'checkpoints' / '0' / 'meta' / 'metadata')  # Orbax's JSON item
  with open(path) as f:
    meta = json.load(f)
  meta['model']['causal'] = False  # what the old ModelConfig allowed
  with open(path, 'w') as f:
    json.dump(meta, f)
  with pytest.raises(checkpoint.CheckpointMismatch, match='cannot build: model.causal=False with model.arch=decoder'):
    checkpoint.load_params(str(tmp_path / 'old'))


def test_classifier_and_seq2seq_rows_refuse_bad_examples():
  """Fine-tuning rows for the new heads: an answer that is no class, examples that do not fit under
  truncation='fail' (counted, the first named), and a task whose choices cannot be a classifier's."""
  import os

  from llm import sft
  from llm.data import DataError
  from llm.eval import tasks as tasks_lib
  from llm.tokenizer import ByteTokenizer
  byte, labels = ByteTokenizer(), ['negative', 'positive']
  with pytest.raises(DataError, match="d0: the answer 'neutral' is not one of the classes"):
    sft.classification_rows([([('x', False), (' neutral', True)], 'd0')], byte, sft.SFTConfig(source='x'), labels, {})
  fail = sft.SFTConfig(source='x', seq_len=8, truncation='fail')
  long = [([('a' * 20, False), (' positive', True)], 'long0'), ([('ab', False), (' negative', True)], 'ok')]
  with pytest.raises(DataError, match=r'1 of 2 examples are longer than seq_len=8 tokens \(the first: long0\)'):
    sft.classification_rows(long, byte, fail, labels, {})
  with pytest.raises(DataError, match=r'1 of 2 examples have a prompt or completion longer .*long0'):
    sft.seq2seq_examples(long, byte, sft.SFTConfig(source='x', seq_len=12, truncation='fail'), {})
  counts = {}
  rows = sft.classification_rows(long, byte, sft.SFTConfig(source='x', seq_len=8, truncation='drop'), labels, counts)
  assert rows['labels'].tolist() == [[0]] and counts == {'dropped': 1, 'kept': 1}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  found = tasks_lib.discover([os.path.join(root, 'tasks')])
  assert tasks_lib.load_task(found['sst2_t5']).class_names() == labels
  with pytest.raises(tasks_lib.TaskError, match='needs a multiple-choice task with fixed choices'):
    tasks_lib.load_task(found['sst2_gen']).class_names()


def smoke_config(config: str, steps: int = 6):
  import importlib
  c = importlib.import_module(f'configs.{config}').get_config('smoke=True')
  c.train.decay_steps, c.train.steps, c.train.checkpoint_every = 6, steps, 3
  return c


# The compilation cache shares this module's BERT and T5 programs between its runs; the warm runs
# (tests/conftest.py) compile the decoder's, so this module does not wait for them.
WARM_RUNS_NEEDED = False


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory, compile_cache):
  """Uninterrupted smoke pre-training runs of configs/bert.py and configs/t5.py (workdirs by name).

  With the compilation cache the resumed and fine-tuning runs below load these runs' programs."""
  import train
  out = {}
  for config in ('bert', 't5'):
    out[config] = str(tmp_path_factory.mktemp(config) / 'run')
    train.run(smoke_config(config), out[config])
  return out


def read_metrics(wd):
  import json
  import os
  with open(os.path.join(wd, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize('config', ['bert', 't5'])
def test_train_py_resumes_bert_and_t5_exactly(tmp_path, config, pretrained, capsys):
  """train.py on configs/bert.py and configs/t5.py (smoke): the masked-LM / span-corruption rows
  and the weights after a run stopped at step 4 and resumed from its step-3 checkpoint equal an
  uninterrupted run's, metric for metric, as the decoder's do (tests/test_train.py)."""
  import os

  import orbax.checkpoint as ocp

  import train
  full, part = pretrained[config], str(tmp_path / 'part')
  train.run(smoke_config(config, steps=4), part)
  os.rename(os.path.join(part, 'checkpoints', '4'), str(tmp_path / 'discarded'))
  train.run(smoke_config(config), part)
  assert 'sample after' not in capsys.readouterr().out  # no free-running sample from these models
  a, b = read_metrics(full), read_metrics(part)
  assert [r['step'] for r in b] == [1, 2, 3, 4, 5, 6]
  for ra, rb in zip(a, b):
    for k in ('train_loss', 'val_loss', 'grad_norm', 'param_norm'):
      if k in ra:
        assert rb[k] == pytest.approx(ra[k], rel=1e-6, abs=1e-7), (ra['step'], k)
  pa, pb = (ocp.PyTreeCheckpointer().restore(os.path.join(wd, 'checkpoints', '6', 'state'))['params']
            for wd in (full, part))
  assert max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), pa, pb))) < 1e-6
  assert a[-1]['train_loss'] < a[0]['train_loss']


@pytest.mark.parametrize('arch', ['bert', 't5'])
def test_finetune_py_trains_a_classifier_on_bert_and_text_to_text_on_t5(tmp_path, arch, pretrained):
  """finetune.py's SST-2 config with arch=bert (a classifier on the first token, scored through the
  task's choices) and arch=t5 (sst2_t5, text to text): baseline, periodic dev accuracy, the best
  checkpoint, and the classifier's head added to the pre-trained weights."""
  import finetune
  from configs import finetune_sst2
  from llm import checkpoint
  c = finetune_sst2.get_config(f'arch={arch},init={pretrained[arch]},smoke=True')
  c.sft.seq_len = 32  # the smoke models' positions
  out = finetune.run(c, str(tmp_path / 'ft'))
  task = 'sst2_t5' if arch == 't5' else 'sst2_review'
  assert out['metric'] == f'eval/{task}/acc' and out['head'] == ('classifier' if arch == 'bert' else 'lm')
  assert 0.0 <= out['best']['value'] <= 1.0 and '0-shot' in out['baseline']
  rows = read_metrics(str(tmp_path / 'ft'))
  assert rows[-1]['train_loss'] < rows[0]['train_loss'] and f'eval/{task}/acc' in rows[2]
  cfg, tok, params, _ = checkpoint.load_params(str(tmp_path / 'ft' / 'best'), None, None)
  if arch == 'bert':
    assert cfg.num_labels == 2 and cfg.labels == ('negative', 'positive')
    assert params['w_cls_dc'].shape == (cfg.d_model, 2) and out['trainable_params'] == out['total_params']
    # The checkpoint evaluates through its classes (not its untrained masked-LM head) on the tasks that fit.
    import os

    from llm import sharding
    from llm.eval import evaluators
    from llm.eval.encoder_scoring import ClassifierLM
    from llm.eval.lms import make_lm
    graphdef = nnx.split(nnx.eval_shape(lambda: build(cfg, jax.random.key(0))))[0]
    lm = make_lm(graphdef, cfg, params, tok, sharding.make_mesh({'data': 1}, jax.devices()[:1]), max_length=32)
    assert isinstance(lm, ClassifierLM)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ev = evaluators.FewShotEvaluator('dev', 'sst2_review,sst2_gen,shakespeare_ppl', [os.path.join(root, 'tasks')],
                                     limit=8)
    assert [r.name for r in ev.run(lm).results] == ['sst2_review']


def test_finetune_heads_must_fit_the_checkpoint(tmp_path, pretrained):
  import finetune
  from configs import finetune_sst2
  from llm.run import ConfigError
  c = finetune_sst2.get_config(f'arch=bert,init={pretrained["t5"]},smoke=True')
  c.sft.seq_len = 32
  with pytest.raises(ConfigError, match="head=classifier puts a classifier on an encoder's first token"):
    finetune.run(c, str(tmp_path / 'a'))
  c = finetune_sst2.get_config(f'arch=t5,init={pretrained["bert"]},smoke=True')
  c.sft.seq_len = 32
  with pytest.raises(ConfigError, match='fine-tunes with a classifier'):
    finetune.run(c, str(tmp_path / 'b'))


def test_train_py_refuses_an_objective_the_model_does_not_learn(tmp_path):
  import train
  from configs import bert
  from llm.run import ConfigError
  c = bert.get_config('smoke=True')
  c.data.objective = 'next_token'
  with pytest.raises(ConfigError, match="data.objective='next_token' does not train a model.arch='encoder'"):
    train.run(c, str(tmp_path / 'x'))


def test_lora_merge_folds_every_adapter_of_t5():
  """Adapters on T5's encoder, decoder and cross-attention projections fold into their weights:
  the merged plain model gives the adapted model's logits."""
  from llm import lora
  cfg = config_for_size('t5-smoke', V, lora_rank=2, lora_targets=('q', 'v', 'up'))
  graph, state = nnx.split(build(cfg, jax.random.key(0)))
  params = nnx.to_pure_dict(state)
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: rng.normal(0, 0.1, x.shape).astype(np.float32) if str(p[-1].key).startswith('lora_b_') else x,
      params)
  enc, dec = jnp.asarray(rows(2, 8)), jnp.asarray(rows(2, 5, 1))
  adapted = forward(nnx.merge(graph, params), enc, dec)
  plain_cfg, merged = lora.merge(cfg, params)
  plain_graph = nnx.split(nnx.eval_shape(lambda: build(plain_cfg, jax.random.key(0))))[0]
  np.testing.assert_allclose(forward(nnx.merge(plain_graph, merged), enc, dec), adapted, atol=1e-4)
  assert not any('lora' in '/'.join(map(str, k)) for k in jax.tree_util.tree_flatten_with_path(merged)[0])
  # Adapter dropout reaches T5's and BERT's adapters in training (a dropout key), as the decoder's.
  for size in ('t5-smoke', 'bert-smoke'):
    cfg = config_for_size(size, V, lora_rank=2, lora_targets=('q', 'up'), lora_dropout=0.5)
    graph, state = nnx.split(build(cfg, jax.random.key(0)))
    p = jax.tree_util.tree_map_with_path(
        lambda path, x: np.ones(x.shape, np.float32) if str(path[-1].key).startswith('lora_b_') else x,
        nnx.to_pure_dict(state))
    batch = {'inputs': enc, 'dec_inputs': dec}
    hidden = jax.jit(lambda p, key: nnx.merge(graph, p).hidden(batch, key))
    train = hidden(p, jax.random.key(1))
    np.testing.assert_array_equal(train, hidden(p, jax.random.key(1)))
    plain = jax.jit(lambda p: nnx.merge(graph, p).hidden(batch))(p)
    assert float(jnp.max(jnp.abs(train - plain))) > 1e-3, size


def test_evaluators_skip_generation_for_models_that_cannot_generate(capsys):
  """A masked LM (or a classifier) is scored on every task but the generate_until ones, which are named."""
  import os

  from llm.eval import evaluators

  class Scores:
    stats = {'requests': 0}

    @staticmethod
    def skip_reason(task):
      return 'a generation task' if task.output_type == 'generate_until' else None

    def loglikelihood(self, requests):
      return [(-float(len(c)), False) for _, c in requests]

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  ev = evaluators.FewShotEvaluator('dev', 'sst2_gen,sst2', [os.path.join(root, 'tasks')], limit=2)
  out = ev.run(Scores())
  assert [r.name for r in out.results] == ['sst2']
  assert 'skipping sst2_gen (a generation task)' in capsys.readouterr().out


def test_t5_fine_tuning_rows_are_framed_as_the_scorer_frames_requests(tmp_path):
  """Prompt and completion are encoded alone (a SentencePiece completion tokenises differently
  after a prompt), the encoder input ends with EOS, each side is cut to seq_len on its own
  (prompt from the left, completion from the right), and a multi-turn chat is refused."""
  from test_hf_encoders import write_t5_tokenizer

  from llm import sft
  from llm.data import DataError
  from llm.tokenizer import ByteTokenizer, HFTokenizer
  write_t5_tokenizer(str(tmp_path))
  tok = HFTokenizer(str(tmp_path))
  prompt, completion = 'sst2 sentence: a fine film ', 'positive'
  (enc, target), = sft.seq2seq_examples([([(prompt, False), (completion, True)], 'd0')], tok,
                                         sft.SFTConfig(source='x', seq_len=64), {})
  assert enc == [*tok.encode(prompt.rstrip()), tok.eos_id] and target == [*tok.encode(' ' + completion), tok.eos_id]
  counts = {}
  byte = ByteTokenizer()
  pairs = sft.seq2seq_examples([([('abcdefghij', False), ('0123', True)], 'a'), ([('ab', False), ('x' * 30, True)], 'b')],
                               byte, sft.SFTConfig(source='x', seq_len=8), counts)
  assert pairs[0][0] == list(byte.encode('defghij')) + [byte.eos_id]  # BOS and the start cut, EOS kept
  assert pairs[0][1] == list(byte.encode('0123')) + [byte.eos_id]
  assert pairs[1][0] == [byte.bos_id, *byte.encode('ab'), byte.eos_id] and len(pairs[1][1]) == 8
  assert counts == {'prompt_truncated': 1, 'completion_truncated': 1}
  with pytest.raises(DataError, match='multi-turn chat'):
    sft.seq2seq_examples([([('u', False), ('a', True), ('v', False), ('b', True)], 'chat')], byte,
                         sft.SFTConfig(source='x'), {})
