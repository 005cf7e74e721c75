"""The debiasing objective of fine-tuning (issue 15): counterfactual pairs in the SFT rows
(llm/sft.py, sft.debias_*) and their penalty, ``llm.trainer.counterfactual_pair_loss``.

Tiny one-layer decoders built in process, one compiled program per function (every batch
has one shape); about 15 s on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm import sft, sharding, trainer
from llm.data import DataError
from llm.data import counterfactual as cf
from llm.models import config_for_size
from llm.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
CFG = config_for_size('smoke', TOK.vocab_size, n_layers=1, max_seq_len=64)
ROWS, WIDTH = 4, 64  # every batch of the loss tests: one shape, one compilation per function


def _example(prompt: str, completion: str) -> tuple[list[sft.Chunk], str]:
  return [(prompt, False), (completion, True)], prompt


def _tokens(examples, cfg: sft.SFTConfig):
  return sft._tokenize_all(examples, TOK, cfg, {})


def _batch(rows: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """``rows`` padded with empty rows (segment 0) to ROWS."""
  assert len(rows['inputs']) <= ROWS and rows['inputs'].shape[1] == WIDTH
  return {k: jnp.asarray(np.concatenate([v, np.zeros((ROWS - len(v), WIDTH), v.dtype)])) for k, v in rows.items()}


@functools.lru_cache
def _setup():
  mesh = sharding.make_mesh({'data': -1})
  opt = trainer.OptimConfig(lr=5e-3, warmup_steps=1, decay_steps=1000, weight_decay=0.0, grad_clip=0.0)
  setup = trainer.setup_model(CFG, opt, mesh)
  return setup, opt, trainer.init_state(setup, 0)


@functools.lru_cache
def _loss_fn():
  """Jitted (params, batch, weight) -> counterfactual_pair_loss: the weight traced, one program."""
  graphdef = _setup()[0].graphdef
  return jax.jit(lambda p, b, w: trainer.counterfactual_pair_loss(graphdef, p, b, weight=w))


def _write_jsonl(path, records) -> str:
  path.write_text(''.join(json.dumps(r) + '\n' for r in records))
  return str(path)


RECORDS = [
    {'prompt': 'Review: he was kind to me\nSentiment:', 'completion': ' positive'},
    {'prompt': 'Review: the plot is thin\nSentiment:', 'completion': ' negative'},
    {'prompt': 'Review: Mary and her brother shine\nSentiment:', 'completion': ' positive'},
    {'prompt': 'Review: a dull, long film\nSentiment:', 'completion': ' negative'},
    {'prompt': 'Q: who won?\nA:', 'completion': ' she did'},
    {'prompt': 'Review: great music\nSentiment:', 'completion': ' positive'},
]


# ---------------------------------------------------------------------------------------------
# Data: the pairs in the rows
# ---------------------------------------------------------------------------------------------


def test_pair_field_marks_exactly_the_original_and_its_counterfactual(tmp_path, capsys):
  src = _write_jsonl(tmp_path / 'd.jsonl', RECORDS)
  cfg = sft.SFTConfig(source=src, seq_len=128, val_fraction=0.0, debias_weight=1.0)  # every pair fits a row
  rows = sft.load_sft(cfg, TOK, root=str(tmp_path)).corpus.train[0].arrays
  assert 'debiasing pairs (gender,gender_names): 3 of 6 training examples' in capsys.readouterr().out
  swapper = cf.Swapper.from_categories(cfg.debias_lists)
  pair, seg = rows['pair'], rows['segments']
  assert (pair[seg == 0] == 0).all()
  texts, found = [], 0
  for r in range(len(pair)):
    for k in range(1, pair[r].max() // 2 + 1):
      orig, cfm = pair[r] == 2 * k - 1, pair[r] == 2 * k
      # Each member is one whole segment, the counterfactual the segment right after the original.
      (s_orig,), (s_cf,) = np.unique(seg[r][orig]), np.unique(seg[r][cfm])
      assert (orig == (seg[r] == s_orig)).all() and (cfm == (seg[r] == s_cf)).all() and s_cf == s_orig + 1
      text = TOK.decode(rows['inputs'][r][orig]) + TOK.decode(rows['targets'][r][orig][-1:])
      assert swapper.swap(text)[0] == TOK.decode(rows['inputs'][r][cfm]) + TOK.decode(rows['targets'][r][cfm][-1:])
      assert TOK.decode(rows['targets'][r][orig & rows['loss_mask'][r]]) in (' positive', ' she did')
      texts.append(text)
      found += 1
  assert found == 3 and sorted(t.split(':')[1].split('\n')[0].strip() for t in texts) == [
      'Mary and her brother shine', 'he was kind to me', 'who won?']
  # The other examples train as before, outside any pair: 3 unpaired segments in all.
  unpaired = {(r, s) for r in range(len(seg)) for s in np.unique(seg[r][(seg[r] > 0) & (pair[r] == 0)])}
  assert len(unpaired) == 3


def _rows_before_debiasing(token_examples, seq_len: int, pack: bool) -> dict[str, np.ndarray]:
  """llm.sft.examples_to_rows as it was before pairs existed (the reference layout)."""
  from llm.eval.scorer import pack_rows
  lengths = [len(t) - 1 for t, _ in token_examples]
  groups = pack_rows(lengths, seq_len)[0] if pack else [[i] for i in range(len(token_examples))]
  rows = {k: np.zeros((len(groups), seq_len), np.int32) for k in sft.SFT_FIELDS[:4]}
  rows['loss_mask'] = np.zeros((len(groups), seq_len), bool)
  for r, group in enumerate(sorted(groups)):
    col = 0
    for sid, i in enumerate(sorted(group), start=1):
      toks, trained = token_examples[i]
      n = len(toks) - 1
      rows['inputs'][r, col:col + n], rows['targets'][r, col:col + n] = toks[:-1], toks[1:]
      rows['positions'][r, col:col + n], rows['segments'][r, col:col + n] = np.arange(n), sid
      rows['loss_mask'][r, col:col + n] = trained[1:]
      col += n
  return rows


@pytest.mark.parametrize('pack', [True, False])
def test_zero_weight_keeps_the_layout_and_pairs_are_deterministic(tmp_path, pack):
  src = _write_jsonl(tmp_path / 'd.jsonl', RECORDS * 3)
  off = sft.SFTConfig(source=src, seq_len=WIDTH, val_fraction=0.0, pack=pack, debias_lists='gender')
  got = sft.load_sft(off, TOK, root=str(tmp_path)).corpus.train[0].arrays
  want = _rows_before_debiasing(_tokens(sft.read_examples(off, str(tmp_path))[0], off), WIDTH, pack)
  assert sorted(got) == sorted(want)  # no 'pair' field
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  # With the weight on, the rows are a pure function of the config (an exact resume reads them again).
  on = sft.SFTConfig(source=src, seq_len=WIDTH, val_fraction=0.0, pack=pack, debias_weight=0.5)
  a, b = (sft.load_sft(on, TOK, root=str(tmp_path)).corpus.train[0].arrays for _ in range(2))
  assert a['pair'].max() >= 2 and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_pair_longer_than_a_row_is_cut_to_half_a_row_each_or_split():
  # 53 and 54 positions: each fits a row of 64 alone, the pair does not; the swap is near the end.
  long = _example('Review: it was a fine film, said he\nSentiment:', ' positive')
  for truncation, what in (('truncate_prompt', 'pair_truncated'), ('drop', 'pair_split')):
    cfg = sft.SFTConfig(source='x', seq_len=WIDTH, debias_weight=1.0, truncation=truncation)
    counts: dict[str, int] = {}
    toks, pairs = sft._tokenize_pairs(sft.debias_examples([long], cfg)[0], TOK, cfg, counts)
    assert counts[what] == 1 and len(toks) == 2
    rows = sft.examples_to_rows(toks, WIDTH, True, pairs)
    if what == 'pair_truncated':
      assert pairs == [(0, 1)] and len(rows['inputs']) == 1
      assert [(rows['pair'][0] == v).sum() for v in (1, 2)] == [WIDTH // 2] * 2
      members = [TOK.decode(rows['inputs'][0][rows['pair'][0] == v]) for v in (1, 2)]
      assert [m[-28:] for m in members] == [' said he\nSentiment: positive', 'said she\nSentiment: positive']
    else:
      assert pairs == [] and len(rows['inputs']) == 2 and not rows['pair'].any()
  # A cut that removes the swapped term leaves two identical members: one copy, unpaired.
  early = _example('Review: he said it was a fine film\nSentiment:', ' positive')
  cfg, counts = sft.SFTConfig(source='x', seq_len=WIDTH, debias_weight=1.0), {}
  toks, pairs = sft._tokenize_pairs(sft.debias_examples([early], cfg)[0], TOK, cfg, counts)
  assert counts['pair_identical'] == 1 and pairs == [] and len(toks) == 1


# ---------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------


def _pair_rows() -> dict[str, np.ndarray]:
  """Rows with two pairs in one row, one in another, and unpaired examples."""
  cfg = sft.SFTConfig(source='x', seq_len=WIDTH, debias_weight=1.0)
  examples = [_example('he ran:', ' yes'), _example('it is:', ' no'), _example('Q: who?\nA:', ' he'),
              _example('his cat:', ' ok'), _example('so so:', ' meh')]
  toks, pairs = sft._tokenize_pairs(sft.debias_examples(examples, cfg)[0], TOK, cfg, {})
  return sft.examples_to_rows(toks, WIDTH, True, pairs)


def test_loss_is_cross_entropy_plus_weight_times_token_weighted_squared_gaps():
  setup, _, state = _setup()
  rows = _pair_rows()
  assert rows['pair'].max() >= 4  # a row holds two pairs
  batch = _batch(rows)
  logp = np.asarray(jax.jit(trainer.token_logprobs, static_argnums=0)(setup.graphdef, state.params, batch), np.float64)
  mask = np.asarray(trainer.loss_mask(batch), np.float64)
  ce, n = -(logp * mask).sum(), mask.sum()
  penalty, gaps = 0.0, []
  pair = np.asarray(batch['pair'])
  for r in range(ROWS):
    for k in range(1, pair[r].max() // 2 + 1):
      o, c = (pair[r] == 2 * k - 1) * mask[r], (pair[r] == 2 * k) * mask[r]
      gap = (logp[r] * o).sum() / o.sum() - (logp[r] * c).sum() / c.sum()
      penalty += (o.sum() + c.sum()) * gap ** 2
      gaps.append(abs(gap))
  assert len(gaps) == 3 and max(gaps) > 1e-4
  loss, count, aux = _loss_fn()(state.params, batch, 0.7)
  assert float(count) == n
  np.testing.assert_allclose(float(loss), ce + 0.7 * penalty, rtol=1e-5)
  np.testing.assert_allclose(float(aux['debias_loss'][0]), 0.7 * penalty, rtol=1e-4)
  np.testing.assert_allclose(float(aux['debias_gap'][0]) / float(aux['debias_gap'][1]), np.mean(gaps), rtol=1e-4)
  assert float(aux['debias_gap'][1]) == float(aux['debias_pairs'][0]) == 3
  # Weight 0 is the plain cross-entropy (next_token_loss's sum over the mask).
  assert float(_loss_fn()(state.params, batch, 0.0)[0]) == pytest.approx(ce, rel=1e-6)


def test_penalty_gradient_is_zero_for_identical_members_and_not_otherwise():
  setup, _, state = _setup()
  graphdef = setup.graphdef
  grad = jax.jit(jax.grad(lambda p, b: trainer.counterfactual_pair_loss(graphdef, p, b, weight=1.0)[2]
                          ['debias_loss'][0]))

  def norm(rows):
    return float(trainer._global_norm(grad(state.params, _batch(rows))))

  cfg = sft.SFTConfig(source='x', seq_len=WIDTH, debias_weight=1.0)
  he = _tokens([_example('he was fine:', ' positive')], cfg)
  she = _tokens([_example('she was fine:', ' positive')], cfg)
  same = sft.examples_to_rows(he + he, WIDTH, True, [(0, 1)])  # a pair with nothing swapped
  swapped = sft.examples_to_rows(he + she, WIDTH, True, [(0, 1)])
  assert same['pair'].max() == swapped['pair'].max() == 2
  assert norm(same) < 1e-6 < 1e-3 < norm(swapped)


def test_training_with_the_penalty_shrinks_the_gap_and_accumulates_exactly():
  """Data biased toward " he" after one prompt: cross-entropy alone widens the gap of the pair
  (" he" / " she"); with the penalty it stays small."""
  setup, opt, state0 = _setup()
  cfg = sft.SFTConfig(source='x', seq_len=WIDTH, debias_weight=1.0)
  paired = sft.debias_examples([_example('Q: who\nA:', ' he')], cfg)[0]
  toks, pairs = sft._tokenize_pairs(paired, TOK, cfg, {})
  toks += _tokens([_example('Q: who\nA:', ' he')] * 3, cfg)  # unpaired: the bias
  batch = trainer.shard_batch(_batch(sft.examples_to_rows(toks, WIDTH, True, pairs)), setup.mesh)
  gaps = {}  # weight -> debias_gap logged at each of 30 steps (measured before that step's update)
  for weight in (0.0, 5.0):
    step = trainer.make_train_step(setup, opt, 0, donate=False,
                                   loss_fn=functools.partial(trainer.counterfactual_pair_loss, weight=weight))
    state, gaps[weight] = state0, []
    for _ in range(30):
      state, metrics = step(state, batch)
      gaps[weight].append(float(metrics['debias_gap']))
    assert {'debias_gap', 'debias_loss'} <= set(metrics) and (float(metrics['debias_loss']) > 0) == (weight > 0)
  start, plain, debiased = gaps[0.0][0], np.mean(gaps[0.0][-10:]), np.mean(gaps[5.0][-10:])
  assert plain > 3 * start  # the data biases the model (measured: 0.06 -> 0.35)
  assert debiased < 0.5 * plain  # measured: 0.06
  # Two microbatches (rows 0, 2 and 1, 3) give the update and the metrics of the whole batch.
  two = trainer.make_train_step(setup, dataclasses.replace(opt, accum_steps=2), 0, donate=False,
                                loss_fn=functools.partial(trainer.counterfactual_pair_loss, weight=5.0))
  (s1, m1), (s2, m2) = step(state0, batch), two(state0, batch)  # step: weight 5, one batch
  assert float(m1['debias_pairs']) == 1
  for k in ('train_loss', 'debias_gap', 'debias_loss', 'debias_pairs', 'grad_norm'):
    np.testing.assert_allclose(float(m2[k]), float(m1[k]), rtol=2e-5, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), s1.params, s2.params)


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def test_bad_settings_are_one_clear_message(tmp_path):
  src = _write_jsonl(tmp_path / 'd.jsonl', RECORDS)
  plain = _write_jsonl(tmp_path / 'plain.jsonl', [r for r in RECORDS if not cf.Swapper.from_categories(
      'gender,gender_names').swap(r['prompt'] + r['completion'])[1]])
  cases = [
      (dict(debias_weight=-1.0), r'sft.debias_weight must be >= 0 \(0 = off\), got -1.0'),
      (dict(debias_weight=1.0, debias_lists='gender,genders'),
       r"sft.debias_lists='gender,genders': no counterfactual list 'genders'.*gender, gender_names"),
      (dict(debias_weight=1.0, debias_lists=''), r"sft.debias_lists='': no counterfactual list named"),
      (dict(debias_weight=1.0, counterfactual='gender'), 'leave sft.counterfactual empty'),
      (dict(debias_weight=1.0, source=plain), r"none of the 3 training examples has a term of sft.debias_lists="),
  ]
  for changes, message in cases:
    cfg = sft.SFTConfig(**{'source': src, 'seq_len': WIDTH, 'val_fraction': 0.0, **changes})
    with pytest.raises(DataError, match=message):
      sft.load_sft(cfg, TOK, root=str(tmp_path))
  on = sft.SFTConfig(source=src, seq_len=WIDTH, val_fraction=0.0, debias_weight=1.0)
  for arch, head in (('encoder_decoder', 'lm'), ('encoder', 'classifier')):
    with pytest.raises(DataError, match=f'this run is {arch} with head={head}.*set sft.debias_weight=0'):
      sft.load_sft(on, TOK, root=str(tmp_path), arch=arch, head=head)
  from llm.run import expected_errors
  assert issubclass(DataError, expected_errors())  # finetune.py prints it as one line, no traceback


def test_the_config_takes_the_debias_fields():
  from configs import finetune_sst2
  from llm.run import to_dataclass
  c = finetune_sst2.get_config('init=runs/x,smoke=True')
  assert (c.sft.debias_weight, c.sft.debias_lists) == (0.0, 'gender,gender_names')
  c.sft.debias_weight = 2.0
  assert to_dataclass(sft.SFTConfig, c.sft).debias_weight == 2.0
