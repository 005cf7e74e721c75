"""Tests of llm/eval/tasks.py and llm/eval/metrics.py against lm-evaluation-harness itself.

Each task below is written to tmp_path as YAML + local JSONL / CSV / TSV data, then built twice:
by `load_task` and by the harness's own YAML loader + `ConfigurableTask` (with `datasets`
reading the same files offline). Their requests must be byte-identical for num_fewshot 0, 1, 5
and two seeds; fed the same fake LM answers, their per-doc metrics and aggregates (as the
harness's evaluator keys them) must be equal. The harness tests skip where it is not installed.
"""

import copy
import csv
import hashlib
import json
import math
import os
import random
import tempfile

import numpy as np
import pytest
import yaml

# Before anything imports `datasets`: no network, and a cache that is not the user's.
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_CACHE', tempfile.mkdtemp(prefix='hf_datasets_test_'))

from llm.eval import metrics as M  # noqa: E402
from llm.eval import tasks as T  # noqa: E402

SHOTS = (0, 1, 5)
SEEDS = (1234, 7)
BOOT = 2000  # bootstrap iterations: two harness chunks, enough to check the draws are the same


@pytest.fixture(scope='module')
def hx():
  """The harness modules (imported once; slow)."""
  pytest.importorskip('lm_eval')
  pytest.importorskip('datasets')
  import lm_eval.api.metrics as hmetrics
  import lm_eval.api.model as hmodel
  import lm_eval.api.task as htask
  import lm_eval.evaluator as hevaluator
  import lm_eval.evaluator_utils as hutils
  import lm_eval.tasks._yaml_loader as hyaml
  return dict(task=htask, metrics=hmetrics, model=hmodel, evaluator=hevaluator, utils=hutils,
              yaml=hyaml)


# ---------------------------------------------------------------------------------------------
# Task definitions and their data.
# ---------------------------------------------------------------------------------------------


def _write_rows(path, rows, fmt):
  if fmt == 'json':
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows), encoding='utf-8')
    return
  with path.open('w', newline='', encoding='utf-8') as f:
    w = csv.writer(f, delimiter='\t' if fmt == 'tsv' else ',')
    w.writerow(list(rows[0]))
    for r in rows:
      w.writerow(['' if v is None else v for v in r.values()])


def _write_task(folder, cfg, data=None, functions=None, utils=None, name='task.yaml'):
  """Write a task file (+ data files, + utils.py); `functions` maps key -> `module.fn`."""
  folder.mkdir(parents=True, exist_ok=True)
  for fname, (rows, fmt) in (data or {}).items():
    if fmt == 'raw':
      (folder / fname).write_text(rows, encoding='utf-8')
    else:
      _write_rows(folder / fname, rows, fmt)
  text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
  for key, fn in (functions or {}).items():
    text += f'{key}: !function {fn}\n'
  if utils is not None:
    (folder / 'utils.py').write_text(utils)
  path = folder / name
  path.write_text(text, encoding='utf-8')
  return path


def _mc_rows(n, start):
  cats = ['race-color', 'Gender', 'age']
  return [{'question': f'What is {i} plus {i % 3}?',
           'choices': [str(i + i % 3), str(i + 1), f'{i} and a half', 'none of these'],
           'label': (i * 7) % 4, 'category': cats[i % 3]} for i in range(start, start + n)]


def _yes_no_rows():
  rows = []
  for i in range(10):
    rows.append({'premise': f'  The cat {i} sat\non the mat.  ' if i % 4 == 0 else f'dogs bark {i}',
                 'question': f'is  it   {i}', 'answer': ['yes', 'no', 'maybe'][i % 3], 'idx': i,
                 'score': None if i == 3 else i / 2, 'note': 'NA' if i % 5 == 0 else f'n{i}'})
  rows.append(dict(rows[2]))  # a duplicate: the sampler must draw again without it
  return rows


def _tsv_rows(n, start):
  return [{'topic': ['algebra', 'geometry'][i % 2], 'stem': f'Pick the {i}th option',
           'opt_a': f'a{i}', 'opt_b': f'b {i}', 'opt_c': f'c-{i}', 'gold': i % 3}
          for i in range(start, start + n)]


def _wino_rows(n, start):
  names = ['Ann', 'Bob', 'Cid', 'Dee', 'Eve', 'Fay', 'Gus', 'Hal', 'Ivy', 'Jon', 'Kim', 'Lou', 'Max']
  return [{'sentence': f' {names[i % 13]} gave the book to {names[(i + 1) % 13]} because _ was done '
                       f'with chapter {i}. ',
           'option1': names[i % 13], 'option2': names[(i + 1) % 13], 'answer': str(1 + i % 2)}
          for i in range(start, start + n)]


WINO_UTILS = '''
def preprocess(docs):
  return docs.map(lambda d: {"sentence": d["sentence"].strip()})


def doc_to_text(doc):
  return {"1": 0, "2": 1}[doc["answer"]]


def doc_to_target(doc):
  i = doc["sentence"].index("_") + 1
  return doc["sentence"][i:].strip()


def doc_to_choice(doc):
  i = doc["sentence"].index("_")
  return [doc["sentence"][:i] + o for o in (doc["option1"], doc["option2"])]
'''

TEXTS = ['the quick brown fox jumps over the lazy dog', 'a  b   c', 'ünïcödé text with ☃ snowmen',
         'one', 'trailing space ', 'tabs\tand\nnewlines here', 'Lorem ipsum dolor sit amet',
         'consectetur adipiscing elit sed do', 'eiusmod tempor incididunt ut labore',
         'et dolore magna aliqua']


def _gen_rows(n, start):
  caps = ['Paris', 'Rome', 'Madrid', 'Berlin', 'Oslo', 'Bern', 'Lima']
  return [{'q': f'Capital number {i}?', 'a': caps[i % 7] if i % 4 else 42 + i,
           'answers': [caps[i % 7], caps[i % 7].lower()]} for i in range(start, start + n)]


def _spec(kind):
  """(cfg, data files, functions, utils.py) of one task used by the parity tests."""
  if kind == 'mc_train':  # few-shot from a separate train split, description, templates
    return dict(
        task='mc_train', dataset_path='json',
        dataset_kwargs={'data_files': {'train': 'train.jsonl', 'test': 'test.jsonl'}},
        training_split='train', test_split='test', output_type='multiple_choice',
        description='The following are questions (with answers) about arithmetic.\n\n',
        doc_to_text='Question: {{question}}\nAnswer:', doc_to_target='{{label}}',
        doc_to_choice='{{choices}}', metadata={'version': 1.0, 'breakdown': 'category'},
    ), {'train.jsonl': (_mc_rows(8, 100), 'json'), 'test.jsonl': (_mc_rows(12, 0), 'json')}, {}, None
  if kind == 'mc_same_split':  # CSV, few-shot from the evaluated split, custom delimiters, filters
    return dict(
        task='mc_same_split', dataset_path='csv',
        dataset_kwargs={'data_files': {'test': 'test.csv'}}, test_split='test', fewshot_split='test',
        output_type='multiple_choice', target_delimiter=': ', fewshot_delimiter='\n###\n',
        doc_to_text="{{ premise | trim | upper }} ({{ note }}, {{ score }}) "
                    "{{ question | regex_replace('\\\\s+', ' ') }}?",
        doc_to_target='answer', doc_to_choice=['yes', 'no', 'maybe'],
        fewshot_config={'sampler': 'default'},
    ), {'test.csv': (_yes_no_rows(), 'csv')}, {}, None
  if kind == 'mc_tsv':  # TSV, validation evaluated, few-shot from train; per-doc description
    return dict(
        task='mc_tsv', dataset_path='csv',
        dataset_kwargs={'data_files': {'train': 'train.tsv', 'validation': 'dev.tsv'},
                        'delimiter': '\t'},
        training_split='train', validation_split='validation', output_type='multiple_choice',
        description='Topic: {{topic}}\n', doc_to_text='{{stem}}', doc_to_target='gold',
        doc_to_choice='{{[opt_a, opt_b, opt_c]}}',
    ), {'train.tsv': (_tsv_rows(7, 50), 'tsv'), 'dev.tsv': (_tsv_rows(9, 0), 'tsv')}, {}, None
  if kind == 'wino':  # WinoGrande-style partial scoring, all by !function, process_docs
    return dict(
        task='wino', dataset_path='json',
        dataset_kwargs={'data_files': {'train': 'train.jsonl', 'validation': 'dev.jsonl'}},
        training_split='train', validation_split='validation', output_type='multiple_choice',
    ), {'train.jsonl': (_wino_rows(8, 20), 'json'), 'dev.jsonl': (_wino_rows(10, 0), 'json')}, {
        'process_docs': 'utils.preprocess', 'doc_to_text': 'utils.doc_to_text',
        'doc_to_target': 'utils.doc_to_target', 'doc_to_choice': 'utils.doc_to_choice'}, WINO_UTILS
  if kind == 'll':  # LAMBADA-style loglikelihood; few-shot from the test split itself
    return dict(
        task='ll', dataset_path='json', dataset_kwargs={'data_files': {'test': 'test.jsonl'}},
        test_split='test', output_type='loglikelihood', target_delimiter='',
        doc_to_text="{{text.split(' ')[:-1]|join(' ')}}", doc_to_target="{{' '+text.split(' ')[-1]}}",
    ), {'test.jsonl': ([{'text': t} for t in TEXTS], 'json')}, {}, None
  if kind == 'rolling':
    return dict(
        task='rolling', dataset_path='json', dataset_kwargs={'data_files': {'test': 'test.jsonl'}},
        test_split='test', output_type='loglikelihood_rolling', doc_to_text='',
        doc_to_target='{{text}}',
    ), {'test.jsonl': ([{'text': t} for t in TEXTS], 'json')}, {}, None
  if kind == 'gen':  # generate_until with until, exact_match options
    return dict(
        task='gen', dataset_path='json',
        dataset_kwargs={'data_files': {'train': 'train.jsonl', 'test': 'test.jsonl'}},
        training_split='train', test_split='test', output_type='generate_until',
        doc_to_text='Q: {{q}}\nA:', doc_to_target='{{a}}',
        generation_kwargs={'until': ['\n', 'Q:'], 'max_gen_toks': 16, 'do_sample': False,
                           'temperature': 0},
        metric_list=[{'metric': 'exact_match', 'aggregation': 'mean', 'higher_is_better': True,
                      'ignore_case': True, 'ignore_punctuation': True}],
    ), {'train.jsonl': (_gen_rows(8, 30), 'json'), 'test.jsonl': (_gen_rows(12, 0), 'json')}, {}, None
  if kind == 'gen_default':  # until defaults to the few-shot delimiter; several gold answers
    return dict(
        task='gen_default', dataset_path='json',
        dataset_kwargs={'data_files': {'train': 'train.jsonl', 'test': 'test.jsonl'}},
        training_split='train', test_split='test', output_type='generate_until',
        fewshot_delimiter='\n\n\n', doc_to_text='{{q}}', doc_to_target='answers',
        generation_kwargs={'max_gen_toks': 8},
    ), {'train.jsonl': (_gen_rows(8, 30), 'json'), 'test.jsonl': (_gen_rows(12, 0), 'json')}, {}, None
  if kind == 'first_n':  # first_n sampler, few-shot target_delimiter override
    return dict(
        task='first_n', dataset_path='json',
        dataset_kwargs={'data_files': {'validation': 'dev.jsonl'}},
        validation_split='validation', fewshot_split='validation', output_type='multiple_choice',
        doc_to_text='{{question}}', doc_to_target='{{label}}', doc_to_choice='choices',
        fewshot_config={'sampler': 'first_n', 'target_delimiter': ' => '},
        metric_list=[{'metric': 'acc'}, {'metric': 'brier_score'}],
    ), {'dev.jsonl': (_mc_rows(9, 0), 'json')}, {}, None
  if kind == 'mc_metrics':  # string golds (one missing), every multiple_choice metric
    rows = _mc_rows(12, 0)
    for i, r in enumerate(rows):
      r['gold'] = r['choices'][r['label']] if i != 5 else 'not a choice'
    return dict(
        task='mc_metrics', dataset_path='json',
        dataset_kwargs={'data_files': {'train': 'train.jsonl', 'test': 'test.jsonl'}},
        training_split='train', test_split='test', output_type='multiple_choice',
        doc_to_text='{{question}}', doc_to_target='gold', doc_to_choice='choices',
        metric_list=[{'metric': m} for m in
                     ('acc', 'acc_norm', 'acc_bytes', 'exact_match', 'acc_mutual_info')],
    ), {'train.jsonl': (rows[6:], 'json'), 'test.jsonl': (rows, 'json')}, {}, None
  if kind == 'csv_unnamed':  # CrowS-Pairs-style: blank and repeated header cells, no context
    text = ',sent_more,sent_less,kind,kind\n' + ''.join(
        f'{i},"The {i} said ""yes""",The {i} said no,{"ab"[i % 2]},{i * 3}\n' for i in range(8))
    return dict(
        task='csv_unnamed', dataset_path='csv', dataset_kwargs={'data_files': {'test': 'test.csv'}},
        test_split='test', output_type='multiple_choice', description='{{kind}}: ',
        doc_to_text='', doc_to_target=0, doc_to_choice='{{[sent_more, sent_less]}}',
        target_delimiter='',
    ), {'test.csv': (text, 'raw')}, {}, None
  raise KeyError(kind)


KINDS = ('mc_train', 'mc_same_split', 'mc_tsv', 'wino', 'll', 'rolling', 'gen', 'gen_default',
         'first_n', 'mc_metrics', 'csv_unnamed')


@pytest.fixture(scope='module')
def task_dir(tmp_path_factory):
  """Every spec written once: kind -> task file path."""
  root = tmp_path_factory.mktemp('tasks')
  paths = {}
  for kind in KINDS:
    cfg, data, functions, utils = _spec(kind)
    paths[kind] = _write_task(root / kind, cfg, data, functions, utils)
  return paths


_HARNESS_TASKS = {}


def _harness_task(hx, path):
  """The harness's task for `path`: its YAML loader, then absolute data_files for `datasets`."""
  if path not in _HARNESS_TASKS:
    cfg = hx['yaml'].load_yaml(path)
    files = cfg['dataset_kwargs']['data_files']
    cfg['dataset_kwargs']['data_files'] = {s: str(path.parent / f) for s, f in files.items()}
    _HARNESS_TASKS[path] = hx['task'].ConfigurableTask(config=cfg)
  return _HARNESS_TASKS[path]


def _normalise(args):
  """Request args as plain data; the harness leaves a lone `until` string unwrapped."""
  args = tuple(args)
  if len(args) == 2 and isinstance(args[1], dict):
    kwargs = dict(args[1])
    if isinstance(kwargs.get('until'), str):
      kwargs['until'] = [kwargs['until']]
    return (args[0], kwargs)
  return args


def _harness_requests(hx, path, shots, seed):
  task = _harness_task(hx, path)
  task.set_config('num_fewshot', shots)
  task.set_fewshot_seed(seed)
  task.build_all_requests(limit=None)
  return [(i.doc_id, i.idx, i.request_type, _normalise(i.args)) for i in task.instances]


def _our_requests(path, shots, seed):
  return [(r.doc_id, r.index, r.kind, _normalise(r.args))
          for r in T.load_task(str(path), num_fewshot=shots, seed=seed).build_requests()]


# ---------------------------------------------------------------------------------------------
# Prompt parity.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('kind', KINDS)
def test_requests_byte_identical_to_harness(hx, task_dir, kind):
  for shots in SHOTS:
    for seed in SEEDS:
      ours = _our_requests(task_dir[kind], shots, seed)
      theirs = _harness_requests(hx, task_dir[kind], shots, seed)
      assert len(ours) == len(theirs), (kind, shots, seed)
      for a, b in zip(ours, theirs):
        assert a == b, f'{kind} num_fewshot={shots} seed={seed}:\n ours   {a!r}\n theirs {b!r}'


def test_prompt_shapes(task_dir):
  """The prompts hold what the parity test cannot show by itself: real few-shot content."""
  mc = T.load_task(str(task_dir['mc_train']), num_fewshot=2).build_requests()
  ctx, cont = mc[0].args
  assert ctx.startswith('The following are questions (with answers) about arithmetic.\n\nQuestion: ')
  assert ctx.count('Question: ') == 3 and ctx.endswith('Answer:') and cont == ' 0'
  assert [r.index for r in mc[:4]] == [0, 1, 2, 3] and {r.kind for r in mc} == {'loglikelihood'}
  wino = T.load_task(str(task_dir['wino'])).build_requests()
  assert wino[0].args[0].endswith('Ann') and wino[1].args[0].endswith('Bob')
  assert wino[0].args[1] == wino[1].args[1] == ' was done with chapter 0.'
  gen = T.load_task(str(task_dir['gen_default'])).build_requests()
  assert gen[0].args[1]['until'] == ['\n\n\n'] and gen[0].args[1]['max_gen_toks'] == 8
  roll = T.load_task(str(task_dir['rolling'])).build_requests()
  assert roll[1].args == ('a  b   c',) and roll[1].kind == 'loglikelihood_rolling'


def test_parity_check_catches_a_wrong_delimiter_or_seed(hx, task_dir, tmp_path):
  """The comparison is sharp enough: a changed delimiter or seed changes the requests."""
  theirs = _harness_requests(hx, task_dir['mc_train'], 5, 1234)
  assert _our_requests(task_dir['mc_train'], 5, 1234) == theirs
  assert _our_requests(task_dir['mc_train'], 5, 1235) != theirs
  cfg, data, functions, utils = _spec('mc_train')
  wrong = _write_task(tmp_path / 'wrong', {**cfg, 'fewshot_delimiter': '\n'}, data, functions, utils)
  assert _our_requests(wrong, 5, 1234) != theirs
  # And the same-split exclusion: drawing num_fewshot (not + 1) would shift every later doc.
  same = _harness_requests(hx, task_dir['mc_same_split'], 5, 1234)
  task = T.load_task(str(task_dir['mc_same_split']), num_fewshot=5)
  task._exclude_eval_doc = False
  assert [(r.doc_id, r.index, r.kind, r.args) for r in task.build_requests()] != same


def test_limit_keeps_the_prefix(task_dir):
  task = T.load_task(str(task_dir['mc_same_split']), num_fewshot=5, seed=3)
  full = task.build_requests()
  part = task.build_requests(limit=4)
  assert part == full[:len(part)] and {r.doc_id for r in part} == {0, 1, 2, 3}
  assert task.build_requests() == full  # the sampler restarts from the seed on every call


# ---------------------------------------------------------------------------------------------
# Metric parity.
# ---------------------------------------------------------------------------------------------


def _fake_answers(instances, docs_gold, rng):
  """Random LM answers per harness instance: (ll, greedy), a rolling ll, or a generation."""
  out = []
  for inst in instances:
    if inst.request_type == 'loglikelihood':
      out.append((rng.uniform(-30.0, -0.1), rng.random() < 0.3))
    elif inst.request_type == 'loglikelihood_rolling':
      out.append(rng.uniform(-300.0, -5.0))
    else:
      gold = docs_gold[inst.doc_id]
      gold = str(gold[0] if isinstance(gold, list) else gold)
      out.append(rng.choice([gold, gold.upper() + '.', gold.lower(), 'wrong', '', f' {gold}']))
  return out


def _harness_aggregate(hx, task, per_doc):
  raw = {}
  for values in per_doc:
    for name, value in values.items():
      raw.setdefault((name, 'none'), []).append(value)
  agg, _ = hx['utils']._compute_task_aggregations(task, raw, BOOT)
  return agg


def _close(a, b):
  if isinstance(a, str) or isinstance(b, str):
    return a == b
  if isinstance(a, (tuple, list)):
    return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
  if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
    return np.allclose(a, b, rtol=1e-12, atol=0)
  return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize('kind', KINDS)
def test_metrics_equal_harness(hx, task_dir, kind, monkeypatch):
  monkeypatch.setenv('DISABLE_MULTIPROC', '1')  # the harness's bootstrap in-process (same draws)
  htask = _harness_task(hx, task_dir[kind])
  htask.set_config('num_fewshot', 1)
  htask.set_fewshot_seed(1234)
  htask.build_all_requests(limit=None)
  hdocs = list(htask.eval_docs)
  answers = _fake_answers(htask.instances, [htask.doc_to_target(d) for d in hdocs],
                          random.Random(kind))
  by_doc = {}
  for inst, ans in zip(htask.instances, answers):
    by_doc.setdefault(inst.doc_id, []).append(ans)
  ours = T.load_task(str(task_dir[kind]), num_fewshot=1)
  docs = ours.docs()
  assert len(docs) == len(hdocs)
  theirs_per_doc, ours_per_doc = [], []
  for doc_id, results in by_doc.items():
    theirs = htask.process_results(hdocs[doc_id], copy.deepcopy(results))
    mine = ours.process_results(docs[doc_id], copy.deepcopy(results))
    assert set(mine) == set(theirs), (kind, doc_id)
    for name in theirs:
      assert _close(mine[name], theirs[name]), (kind, doc_id, name, mine[name], theirs[name])
    theirs_per_doc.append(theirs)
    ours_per_doc.append(mine)
  expected = _harness_aggregate(hx, htask, theirs_per_doc)
  got = ours.aggregate(ours_per_doc, bootstrap_iters=BOOT)
  assert got, kind
  for name, (value, se) in got.items():
    assert _close(value, expected[f'{name},none']), (kind, name, value, expected)
    want = expected[f'{name}_stderr,none']
    assert (se is None) == (want == 'N/A'), (kind, name, se, want)
    if se is not None:
      assert _close(se, want), (kind, name, se, want)
  assert ours.higher_is_better == htask.higher_is_better()


def test_metric_values_hand_checked():
  """A few per-doc values worked by hand, so the parity test is not comparing two wrongs."""
  s = M.ChoiceScores(np.array([-1.0, -3.0]), (True, False), ['a', 'bbbbbb'], 1)
  assert M.METRICS['acc'].compute['multiple_choice'](s) == 0.0
  assert M.METRICS['acc_norm'].compute['multiple_choice'](s) == 1.0  # -3/6 > -1/1
  assert M.METRICS['exact_match'].compute['multiple_choice'](s) == 0
  r = [(-10.0, 5), (-20.0, 15)]
  assert math.isclose(M.weighted_perplexity(r), math.exp(30 / 20))
  assert math.isclose(M.bits_per_byte(r), 1.5 / math.log(2))
  assert math.isclose(M.perplexity([-1.0, -3.0]), math.exp(2.0))
  assert math.isclose(M.mean_stderr([0, 1, 1, 0]), math.sqrt(1 / 3) / 2)
  assert M.median([3, 1, 2, 4]) == 3  # the harness's upper median
  assert M.stderr('weighted_perplexity', r) is None and M.stderr('mean', [1.0]) is None
  g = M.GenerationScore('The Paris!', 'the paris')
  assert M.METRICS['exact_match'].compute['generate_until'](g) == 0.0
  assert M.METRICS['exact_match'].compute['generate_until'](
      g, ignore_case=True, ignore_punctuation=True) == 1.0


def test_bootstrap_draws_are_the_harness_draws(hx, monkeypatch):
  monkeypatch.setenv('DISABLE_MULTIPROC', '1')
  rng = random.Random(0)
  xs = [rng.uniform(-5, 0) for _ in range(37)]
  for agg, fn in (('perplexity', hx['metrics'].perplexity), ('median', hx['metrics'].median)):
    for iters in (1000, 2500):
      want = hx['metrics'].bootstrap_stderr(fn, xs, iters)
      assert math.isclose(M.bootstrap_stderr(agg, xs, iters), want, rel_tol=1e-9), (agg, iters)


# ---------------------------------------------------------------------------------------------
# evaluate_task end to end, against the harness's evaluator.
# ---------------------------------------------------------------------------------------------


def _h(*parts):
  return hashlib.sha256('\x00'.join(parts).encode()).digest()


class FakeLM:
  """A deterministic 'model': answers are hashes of the request, so any two callers agree."""

  def __init__(self):
    self.calls = []

  def loglikelihood(self, requests):
    self.calls.append(('loglikelihood', len(requests)))
    return [(-(_h(c, x)[0] + _h(c, x)[1] / 256) / 10, _h(c, x)[2] % 3 == 0) for c, x in requests]

  def loglikelihood_rolling(self, texts):
    self.calls.append(('loglikelihood_rolling', len(texts)))
    return [-(_h(t)[0] + 1) * len(t) / 40 for t in texts]

  def generate_until(self, requests):
    self.calls.append(('generate_until', len(requests)))
    options = ['Paris', 'rome.', 'Madrid', '42', '46', 'berlin', 'nope']
    return [options[_h(c)[0] % len(options)] for c, _ in requests]


def _harness_lm(hx):
  fake = FakeLM()

  class HarnessFake(hx['model'].LM):
    def loglikelihood(self, requests):
      return fake.loglikelihood([r.args for r in requests])

    def loglikelihood_rolling(self, requests):
      return fake.loglikelihood_rolling([r.args[0] for r in requests])

    def generate_until(self, requests):
      return fake.generate_until([r.args for r in requests])

  return HarnessFake()


@pytest.mark.parametrize('kind', ['mc_train', 'wino', 'll', 'rolling', 'gen', 'mc_metrics'])
def test_evaluate_task_equals_harness_evaluator(hx, task_dir, kind, monkeypatch):
  monkeypatch.setenv('DISABLE_MULTIPROC', '1')
  htask = _harness_task(hx, task_dir[kind])
  htask.set_config('num_fewshot', 2)
  htask.set_fewshot_seed(99)
  out = hx['evaluator'].evaluate(lm=_harness_lm(hx), task_dict={'tasks': {kind: htask}},
                                 bootstrap_iters=BOOT, log_samples=True)
  theirs = out['results'][kind]
  lm = FakeLM()
  result = T.evaluate_task(T.load_task(str(task_dir[kind]), num_fewshot=2, seed=99), lm,
                           bootstrap_iters=BOOT)
  entry = result.results_entry()
  assert set(entry) == set(theirs), (entry, theirs)
  for key, value in theirs.items():
    assert _close(entry[key], value), (kind, key, entry[key], value)
  # One LM call per request kind, with every request of the task.
  kinds = [k for k, _ in lm.calls]
  assert len(kinds) == len(set(kinds))
  assert sum(n for _, n in lm.calls) == len(htask.instances)
  hsamples = out['samples'][kind]
  assert len(result.samples) == len(hsamples) == result.n
  for ours, harness in zip(result.samples, hsamples):
    assert ours['doc_id'] == harness['doc_id']
    assert ours['arguments'] == json.loads(json.dumps([_normalise(a) for a in harness['arguments']]))
    assert ours['prompt'] == harness['arguments'][0][0]
  json.dumps({'results': {kind: entry}, 'configs': {kind: result.config},
              'samples': result.samples})  # all JSON-safe


def test_breakdown_subtasks(hx, task_dir, monkeypatch):
  monkeypatch.setenv('DISABLE_MULTIPROC', '1')
  task = T.load_task(str(task_dir['mc_train']), num_fewshot=1)
  result = T.evaluate_task(task, FakeLM(), bootstrap_iters=BOOT)
  assert [s.name for s in result.subtasks] == ['mc_train_age', 'mc_train_gender',
                                               'mc_train_race_color']
  assert sum(s.n for s in result.subtasks) == result.n == 12
  htask = _harness_task(hx, task_dir['mc_train'])
  for sub in result.subtasks:
    assert {s['doc']['category'].lower().replace('-', '_') for s in sub.samples} == {
        sub.name[len('mc_train_'):]}
    per_doc = [s['metrics'] for s in sub.samples]
    expected = _harness_aggregate(hx, htask, per_doc)
    for m in ('acc', 'acc_norm'):
      assert _close(sub.metrics[m], expected[f'{m},none'])
      assert _close(sub.stderrs[m], expected[f'{m}_stderr,none'])
    assert sub.results_entry()['alias'] == sub.name


def test_config_dump_is_json_and_names_functions(task_dir):
  cfg = T.load_task(str(task_dir['wino'])).config()
  json.dumps(cfg)
  assert 'def doc_to_text' in cfg['doc_to_text'] and cfg['num_fewshot'] == 0
  assert cfg['metric_list'] == [
      {'metric': 'acc', 'aggregation': 'mean', 'higher_is_better': True},
      {'metric': 'acc_norm', 'aggregation': 'mean', 'higher_is_better': True}]
  gen = T.load_task(str(task_dir['gen'])).config()
  assert gen['generation_kwargs'] == {'until': ['\n', 'Q:'], 'max_gen_toks': 16,
                                      'do_sample': False, 'temperature': 0.0}


def test_discover(task_dir, tmp_path):
  found = T.discover([str(task_dir['mc_train'].parent.parent)])
  assert set(found) == set(KINDS) and found['wino'].endswith('wino/task.yaml')
  cfg, data, functions, utils = _spec('ll')
  _write_task(tmp_path / 'a', cfg, data, functions, utils)
  _write_task(tmp_path / 'b' / 'deep', cfg, data, functions, utils, name='other.yml')
  with pytest.raises(T.TaskError, match=r"task 'll' is defined twice: .*a/task.yaml and .*other.yml"):
    T.discover([str(tmp_path)])


def test_num_fewshot_zero_in_file_is_pinned(tmp_path):
  cfg, data, functions, utils = _spec('ll')
  path = _write_task(tmp_path, {**cfg, 'num_fewshot': 0}, data, functions, utils)
  assert T.load_task(str(path), num_fewshot=3).num_fewshot == 0
  path = _write_task(tmp_path, {**cfg, 'num_fewshot': 2}, data, functions, utils)
  assert T.load_task(str(path)).num_fewshot == 2
  assert T.load_task(str(path), num_fewshot=3).num_fewshot == 3


# ---------------------------------------------------------------------------------------------
# Errors: one TaskError naming the file, the place, the problem and the fix.
# ---------------------------------------------------------------------------------------------


def _bad(tmp_path, kind='mc_train', functions=None, utils=None, **changes):
  cfg, data, fns, ut = _spec(kind)
  cfg = {**cfg, **changes}
  cfg = {k: v for k, v in cfg.items() if v is not None}
  return _write_task(tmp_path, cfg, data, functions if functions is not None else fns,
                     utils if utils is not None else ut)


def _raises(path, pattern, **kwargs):
  with pytest.raises(T.TaskError, match=pattern) as e:
    T.load_task(str(path), **kwargs)
  assert str(path) in str(e.value)
  return str(e.value)


def test_error_unknown_key(tmp_path):
  msg = _raises(_bad(tmp_path, doc_to_txt='{{question}}'), r'unknown key `doc_to_txt`')
  assert 'doc_to_text' in msg and 'fewshot_delimiter' in msg  # the known keys are listed


def test_error_refused_key(tmp_path):
  _raises(_bad(tmp_path, doc_to_decontamination_query='{{question}}'),
          r'doc_to_decontamination_query.*not supported')


def test_error_unknown_output_type(tmp_path):
  _raises(_bad(tmp_path, output_type='multiple_choise'),
          r"output_type 'multiple_choise' is unknown.*'loglikelihood_rolling'")


def test_error_template_missing_field(tmp_path):
  msg = _raises(_bad(tmp_path, doc_to_text='Q: {{questoin}}\nA:'),
                r"doc_to_text template 'Q: \{\{questoin\}\}\\nA:' refers to missing field\(s\) "
                r"\['questoin'\] on doc 0 of split 'test'")
  assert "'question'" in msg  # the fields it does have


def test_error_template_missing_field_in_a_later_row(tmp_path):
  cfg, data, _, _ = _spec('rolling')
  rows = [{'text': 'a'}, {'text': 'b'}, {'other': 'c'}]
  path = _write_task(tmp_path, {**cfg, 'doc_to_target': '{{text}}'},
                     {'test.jsonl': (rows, 'json')})
  task = T.load_task(str(path))  # JSON fills the absent field with None, as `datasets` does
  assert task.build_requests()[2].args == ('None',)
  path = _write_task(tmp_path, {**cfg, 'doc_to_target': '{{text}} {{extra}}'},
                     {'test.jsonl': (rows, 'json')})
  _raises(path, r"doc_to_target template .* refers to missing field\(s\) \['extra'\]")


def test_error_data_file_missing(tmp_path):
  msg = _raises(_bad(tmp_path, dataset_kwargs={'data_files': {'train': 'train.jsonl',
                                                              'test': 'tset.jsonl'}}),
                r'data_files.test: data file .*tset.jsonl does not exist')
  assert 'relative to the task file' in msg


def test_error_split_not_in_data_files(tmp_path):
  _raises(_bad(tmp_path, test_split='eval'), r"test_split: 'eval' is not a split .*'train', 'test'")


def test_error_malformed_jsonl_row(tmp_path):
  path = _bad(tmp_path)
  lines = (tmp_path / 'test.jsonl').read_text().splitlines()
  lines[2] = lines[2][:-1]  # drop the closing brace of row 3
  (tmp_path / 'test.jsonl').write_text('\n'.join(lines) + '\n')
  _raises(path, r'test.jsonl: row 3 is not valid JSON')
  (tmp_path / 'test.jsonl').write_text('\n'.join(lines[:2] + ['[1, 2]']) + '\n')
  _raises(path, r'test.jsonl: row 3 is a list, not a JSON object')


def test_error_malformed_csv_row(tmp_path):
  path = _bad(tmp_path, kind='mc_same_split')
  text = (tmp_path / 'test.csv').read_text().splitlines(keepends=True)
  text[3] = text[3].rstrip('\r\n') + ',extra\r\n'  # one field too many on the 3rd data line
  (tmp_path / 'test.csv').write_text(''.join(text))
  # The first row's premise spans two lines, so data row 2 is on file line 4.
  _raises(path, r'test.csv: row 2 \(line 4\) has 7 fields but the header has 6')


def test_error_malformed_tsv_row(tmp_path):
  path = _bad(tmp_path, kind='mc_tsv')
  lines = (tmp_path / 'dev.tsv').read_text().splitlines()
  lines[5] = '\t'.join(lines[5].split('\t')[:3])
  (tmp_path / 'dev.tsv').write_text('\n'.join(lines) + '\n')
  _raises(path, r"split 'validation': .*dev.tsv: row 5 \(line 6\) has 3 fields but the header has 6")


def test_error_num_fewshot_larger_than_split(tmp_path):
  path = _bad(tmp_path)
  _raises(path, r'num_fewshot=9 needs 9 few-shot docs but the few-shot split has 8', num_fewshot=9)
  path = _bad(tmp_path, kind='mc_same_split')
  _raises(path, r'num_fewshot=11 needs 12 few-shot docs \(one more than num_fewshot: the '
                r'evaluated doc is drawn and dropped\) but the few-shot split has 11',
          num_fewshot=11)


def test_error_metric_not_for_output_type(tmp_path):
  msg = _raises(_bad(tmp_path, metric_list=[{'metric': 'acc'}, {'metric': 'word_perplexity'}]),
                r"metric_list\[1\]: metric 'word_perplexity' is not computed for output_type "
                r"'multiple_choice'")
  assert "'acc_norm'" in msg
  _raises(_bad(tmp_path, metric_list=[{'metric': 'acc', 'aggregation': 'avg'}]),
          r"metric_list\[0\]: aggregation 'avg' is unknown")
  _raises(_bad(tmp_path, metric_list=[{'metric': 'acc', 'ignore_case': True}]),
          r"metric_list\[0\]: key `ignore_case` is not an option of metric 'acc'")


def test_error_function_not_found(tmp_path):
  fns = dict(_spec('wino')[2], doc_to_target='utils.doc_to_targt')
  msg = _raises(_bad(tmp_path / 'a', kind='wino', functions=fns),
                r"`!function utils.doc_to_targt`: .*utils.py has no function 'doc_to_targt'")
  assert "'doc_to_target'" in msg
  fns = dict(_spec('wino')[2], doc_to_target='helpers.doc_to_target')
  _raises(_bad(tmp_path / 'b', kind='wino', functions=fns),
          r"`!function helpers.doc_to_target`: there is no .*helpers.py beside the task file "
          r"and no importable module 'helpers'")
  fns = dict(_spec('wino')[2], doc_to_target='doc_to_target')
  _raises(_bad(tmp_path / 'c', kind='wino', functions=fns), r'names no module')


def test_error_function_raises_names_the_doc(tmp_path):
  utils = WINO_UTILS + '\n\ndef bad_target(doc):\n  return doc["nope"]\n'
  fns = dict(_spec('wino')[2], doc_to_target='utils.bad_target')
  _raises(_bad(tmp_path, kind='wino', functions=fns, utils=utils),
          r"doc_to_target \(!function bad_target\) failed on doc 0 of split 'validation': "
          r"KeyError: 'nope'")


def test_error_choice_template_not_a_list(tmp_path):
  _raises(_bad(tmp_path, doc_to_choice='{{question}}'),
          r'doc_to_choice template .* must render a Python list literal')


def test_error_no_eval_split(tmp_path):
  _raises(_bad(tmp_path, test_split=None), r'set test_split \(or validation_split\)')


def test_error_breakdown_field_missing(tmp_path):
  _raises(_bad(tmp_path, metadata={'breakdown': 'bias_type'}),
          r"metadata.breakdown names field 'bias_type'")


def test_error_yaml_and_includes(tmp_path):
  (tmp_path / 'broken.yaml').write_text('task: x\n  doc_to_text: [\n')
  _raises(tmp_path / 'broken.yaml', r'not valid YAML')
  path = _bad(tmp_path)
  (tmp_path / 'child.yaml').write_text('include: task.yaml\ntask: child\nnum_fewshot: 2\n')
  child = T.load_task(str(tmp_path / 'child.yaml'))
  assert child.name == 'child' and child.num_fewshot == 2 and path.exists()
  (tmp_path / 'orphan.yaml').write_text('include: nowhere.yaml\ntask: o\n')
  with pytest.raises(T.TaskError, match=r'include .*nowhere.yaml does not exist'):
    T.load_task(str(tmp_path / 'orphan.yaml'))


def test_csv_typed_like_pandas(task_dir):
  docs = T.load_task(str(task_dir['mc_same_split'])).docs()
  assert docs[0]['idx'] == 0 and isinstance(docs[0]['idx'], int)
  assert docs[3]['score'] is None and docs[2]['score'] == 1.0 and isinstance(docs[4]['score'], float)
  assert docs[0]['note'] is None and docs[1]['note'] == 'n1'  # "NA" is missing, as in pandas
  assert docs[0]['premise'] == '  The cat 0 sat\non the mat.  '
  docs = T.load_task(str(task_dir['csv_unnamed'])).docs()
  assert list(docs[1]) == ['Unnamed: 0', 'sent_more', 'sent_less', 'kind', 'kind.1']
  assert docs[1]['sent_more'] == 'The 1 said "yes"' and docs[1]['kind.1'] == 3
