"""Model cards (llm/card.py): content equal to the run's files, provenance, --check, errors, notes, lineage.

Workdirs are built by hand in tmp_path with the formats real runs write (the Orbax step
layout with its JSON ``meta`` item, config.json, metrics.jsonl, footprint.json,
eval_results.json in lm-evaluation-harness's layout, a prepared corpus' manifest and the
corpus pipeline's DONE and report), so no test trains; one test writes a real Orbax
checkpoint through ``llm.checkpoint.save_params`` to pin the layout the card reads.
"""

import copy
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from llm import card

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The 'smoke' size with the byte vocabulary as checkpoint meta records it (llm.checkpoint.model_meta).
SMOKE_MODEL = {'vocab_size': 259, 'd_model': 64, 'n_layers': 2, 'n_heads': 4, 'n_kv_heads': 2, 'd_head': 16,
               'd_ff': 128, 'max_seq_len': 32, 'family': 'llama', 'arch': 'decoder', 'norm': 'rms',
               'norm_position': 'pre', 'positions': 'rope', 'mlp': 'swiglu', 'use_bias': False,
               'tie_embeddings': False, 'dropout': 0.0, 'causal': True, 'scale_attention': True, 'type_vocab_size': 0,
               'n_decoder_layers': 0, 'rel_buckets': 32, 'rel_max_distance': 128, 'num_labels': 0, 'labels': [],
               'rope_theta': 10000.0, 'norm_eps': 1e-05, 'vocab_multiple': 128, 'dtype': 'float32',
               'param_dtype': 'float32', 'remat': 'none', 'attention': 'xla', 'scan_layers': True,
               'dense_grad': 'pretransposed', 'init_std': 0.02, 'lora_rank': 0, 'lora_alpha': 16.0,
               'lora_dropout': 0.0, 'lora_targets': []}
# Its parameters as the arrays of a real smoke run count them (finetune.py's total_params on this model).
SMOKE_PARAMS = 123_200


def _json(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(obj, f, indent=2)


def _sha(path):
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def make_run(wd, *, step=6, loop='pretrain', meta_extra=None, sources=None, footprint=True, sample=True,
             energy=8.16e-06):
  """A workdir as train.py (or finetune.py) leaves it, by hand."""
  ck = os.path.join(wd, 'checkpoints', str(step))
  meta = {'model': SMOKE_MODEL, 'data_seed': 0, 'batch_size': 8, 'tokenizer': {'kind': 'byte'}, 'step': step,
          'checksums': {"['params']['embed_vd']": [1, 2]}, **(meta_extra or {})}
  _json(os.path.join(ck, 'meta', 'metadata'), meta)
  _json(os.path.join(ck, '_CHECKPOINT_METADATA'), {'commit_timestamp_nsecs': 1796588443485141589})
  os.makedirs(os.path.join(ck, 'state', 'd'), exist_ok=True)
  with open(os.path.join(ck, 'state', 'd', 'blob'), 'wb') as f:
    f.write(b'\x00\x01parameters' * 100)
  if sources is None:
    sources = os.path.join(os.path.dirname(wd), 'corpus.txt')
    with open(sources, 'w') as f:
      f.write('First Citizen:\nBefore we proceed any further, hear me speak.\n')
  config = {'loop': loop, 'seed': 0, 'init_from': '', 'mesh': {'data': -1, 'fsdp': 1, 'tensor': 1},
            'data': {'sources': sources, 'seq_len': 32, 'tokenizer': 'byte', 'objective': 'next_token',
                     'split': 'document', 'val_fraction': 0.1, 'counterfactual': '', 'counterfactual_mode': 'add',
                     'counterfactual_rate': 1.0, 'reweight': '', 'reweight_max_weight': 10.0},
            'train': {'steps': step, 'batch_size': 8, 'accum_steps': 1, 'lr': 0.001, 'min_lr': 0.0001,
                      'warmup_steps': 2, 'decay_steps': 0, 'weight_decay': 0.1, 'grad_clip': 1.0, 'b1': 0.9,
                      'b2': 0.99},
            'eval': {'task_dirs': 'tasks'}, 'footprint': {'region': 'world', 'pue': 1.0},
            'monitor': {'enabled': False, 'action': 'log', 'placeholder': '[blocked]', 'flag_on': 'harmful',
                        'negative_threshold': -0.5, 'harmful_terms': 'data/badwords/en.txt', 'identity_terms_dir': '',
                        'identity_categories': '', 'sentiment_lexicon': 'data/sentiment/en.tsv', 'scope': 'sentence',
                        'min_outputs': 1}}
  if loop == 'finetune':
    config.update(sft={'source': 'task:sst2_review', 'seq_len': 64, 'pack': True, 'truncation': 'truncate_prompt',
                       'counterfactual': '', 'counterfactual_mode': 'add', 'counterfactual_rate': 1.0},
                  finetune={'method': 'lora', 'head': 'lm'}, lora={'rank': 8, 'alpha': 16.0, 'dropout': 0.0,
                                                                    'targets': 'q,k,v,o'})
  _json(os.path.join(wd, 'config.json'), config)
  with open(os.path.join(wd, 'metrics.jsonl'), 'w') as f:
    for s in range(1, step + 1):
      row = {'step': s, 'train_loss': 5.6 - 0.05 * s, 'learning_rate': 1e-3, 'tokens_per_sec': 1000.0 + s,
             'energy_kwh': energy * s / step, 'co2e_kg': 4e-6 * s / step}
      if s % 3 == 0:
        row.update(val_loss=5.4 - 0.1 * s, val_perplexity=200.0 - s)
      f.write(json.dumps(row, sort_keys=True) + '\n')
  if footprint:
    _json(os.path.join(wd, 'footprint.json'), {
        'version': 1, 'method': {'host_cpu': 'power model: 2.19 W per busy CPU thread x CPU time', 'fallbacks': [],
                                 'not_counted': 'host memory'},
        'devices': {'kind': 'cpu', 'count': 0, 'hosts': 1}, 'host_cpu': {'model': 'AMD EPYC'}, 'pue': 1.0,
        'region': 'world', 'intensity_g_per_kwh': 480.0, 'intensity_source': 'World 2023 (Ember)', 'seconds': 13.27,
        'device_hours': 0.0, 'cpu_core_hours': 0.00373, 'it_energy_kwh': energy, 'energy_kwh': energy,
        'co2e_kg': 3.917e-06,
        'phases': {'setup': {'seconds': 3.9, 'energy_kwh': 2.4e-06, 'co2e_kg': 1.15e-06},
                   'training': {'seconds': 0.12, 'energy_kwh': 6.68e-08, 'co2e_kg': 3.2e-08}},
        'runs': [{'program': 'train.py', 'start_step': 0, 'end_step': step}]})
  if sample:
    with open(os.path.join(wd, 'sample.txt'), 'w') as f:
      f.write('ROMEO: what light')
  return wd


def make_eval(ed, ckpt, step=6):
  """An evaluation workdir of ``ckpt`` as the evaluation loop writes it (results, bias report, ledger)."""
  results = {
      'sst2': {'alias': 'sst2', 'acc,none': 0.55, 'acc_stderr,none': 0.1141},
      'crows_pairs_english': {'alias': 'crows_pairs_english', 'pct_stereotype,none': 0.6,
                              'pct_stereotype_stderr,none': 0.11, 'likelihood_diff,none': 3.25,
                              'likelihood_diff_stderr,none': 0.5},
      'crows_pairs_english_gender': {'pct_stereotype,none': 0.75, 'pct_stereotype_stderr,none': 'N/A'},
      'winobias': {'acc,none': 0.4, 'acc_stderr,none': 0.11, 'acc_pro,none': 0.45, 'acc_anti,none': 0.35,
                   'pro_anti_gap,none': 0.1, 'pro_anti_gap_stderr,none': 'N/A'},
      'bbq': {'acc,none': 0.5, 'acc_stderr,none': 0.11, 'acc_ambig,none': 0.6667, 'acc_disambig,none': 0.25,
              's_dis,none': 0.3333, 's_amb,none': float('nan')},
  }
  _json(os.path.join(ed, 'eval_results.json'), {
      'results': results,
      'configs': {t: {'task': t, 'dataset_kwargs': {'data_files': {'test': f'../../data/{t}.jsonl'}}} for t in results},
      'versions': {t: 1.0 for t in results}, 'n-shot': {t: 0 for t in results},
      'higher_is_better': {'sst2': {'acc': True}, 'winobias': {'acc': True, 'pro_anti_gap': False}},
      'n-samples': {t: {'original': 20, 'effective': 20} for t in results},
      'config': {'model': 'llm', 'ckpt': os.path.abspath(ckpt), 'step': step, 'devices': '1 cpu'},
      'throughput': {}, 'date': '2026-12-06T20:21:41+0000'})
  with open(os.path.join(ed, 'bias_report.md'), 'w') as f:
    f.write('# Bias report\n')
  _json(os.path.join(ed, 'footprint.json'), {'energy_kwh': 4.76e-06, 'co2e_kg': 2.28e-06, 'runs': [{}]})
  return ed


def _card(wd, **kw):
  """(card JSON, card Markdown) of ``wd``, made with ``card.make_card(wd, **kw)``."""
  md, js = card.make_card(wd, **kw)
  with open(js) as f:
    data = json.load(f)
  with open(md) as f:
    text = f.read()
  return data, text


@pytest.fixture
def run(tmp_path):
  """A pre-training workdir, its evaluation beside it (runs/x and runs/x_eval), and the card of both."""
  wd = make_run(str(tmp_path / 'run'))
  make_eval(str(tmp_path / 'run_eval'), wd)
  make_eval(str(tmp_path / 'other_eval'), str(tmp_path / 'another_run'))  # someone else's: never in this card
  data, text = _card(wd)
  return wd, data, text


def _section(text, title):
  return text.split(f'## {title}\n', 1)[1].split('\n## ', 1)[0]


def _resolve(doc, key):
  """An independent JSON pointer walk (RFC 6901), to check the card's."""
  for part in key.split('/')[1:]:
    part = part.replace('~1', '/').replace('~0', '~')
    doc = doc[int(part)] if isinstance(doc, list) else doc[part]
  return doc


def test_card_values_equal_the_recorded_artefacts(run):
  wd, data, text = run
  v = {k: e['value'] for k, e in data['values'].items()}
  with open(os.path.join(wd, 'footprint.json')) as f:
    fp = json.load(f)
  with open(os.path.join(wd, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  with open(os.path.join(os.path.dirname(wd), 'run_eval', 'eval_results.json')) as f:
    ev = json.load(f)
  assert v['footprint.energy_kwh'] == fp['energy_kwh'] and v['footprint.co2e_kg'] == fp['co2e_kg']
  assert v['footprint.phases.training.energy_kwh'] == fp['phases']['training']['energy_kwh']
  assert v['footprint.intensity_g_per_kwh'] == 480.0 and v['footprint.runs'] == 1
  assert v['metrics.last.train_loss'] == rows[-1]['train_loss'] and v['metrics.last.step'] == 6
  assert v['metrics.val.val_loss'] == [r for r in rows if 'val_loss' in r][-1]['val_loss']
  assert data['values']['metrics.val.val_loss']['source']['line'] == 6
  assert v['eval.0.sst2.acc'] == ev['results']['sst2']['acc,none'] == 0.55
  assert v['eval.0.sst2.acc_stderr'] == 0.1141
  assert v['eval.0.crows_pairs_english.pct_stereotype'] == 0.6
  assert v['eval.0.crows_pairs_english_gender.pct_stereotype'] == 0.75
  assert v['eval.0.winobias.pro_anti_gap'] == 0.1 and v['eval.0.bbq.s_dis'] == 0.3333
  assert v['eval.0.bbq.s_amb'] == 'nan'  # strict JSON: a non-finite value is kept as its string
  assert v['model.params'] == SMOKE_PARAMS and v['model.d_model'] == 64 and v['tokenizer.kind'] == 'byte'
  assert v['train.tokens'] == 6 * 8 * 32 and v['checkpoint.step'] == 6
  assert not any(k.startswith('eval.1.') for k in v)  # the evaluation of another run is not this model's
  # The Markdown shows them as links to their files, titled with the key (or line) they came from.
  assert '[8.16e-06](footprint.json "/energy_kwh")' in text
  assert '[0.55](../run_eval/eval_results.json "/results/sst2/acc,none")' in text
  assert '[4.8](metrics.jsonl#L6 "line 6 /val_loss")' in text
  assert '[123,200](checkpoints/6/meta/metadata ' in text
  assert '[0.6](../run_eval/eval_results.json "/results/crows_pairs_english/pct_stereotype,none")' in \
      _section(text, 'Quantitative analyses').split('### Bias probes')[1]
  # Every number in the card's text and tables is inside a link (code spans and the file list aside).
  body = text.split('\n## Not recorded')[0].split('```')
  body = ''.join(body[0::2])  # without the sample's code block
  body = re.sub(r'\[[^\]]*\]\([^)]*\)', '', re.sub(r'`[^`]*`', '', body))
  assert not re.findall(r'\d+\.\d+|\d{1,3}(?:,\d{3})+', body)
  for line in body.splitlines():
    if line.startswith('|'):
      for cell in line.strip('|').split('|'):
        assert not re.fullmatch(r'\s*-?[\d.,e+-]+%?\s*', cell) or not re.search(r'\d', cell), line


def test_every_source_is_listed_with_the_sha256_of_its_file(run):
  wd, data, _ = run
  listed = {a['path']: a for a in data['artefacts']}
  for a in data['artefacts']:
    full = os.path.normpath(os.path.join(wd, a['path']))
    if a['kind'] == 'directory':  # the SHA-256 of the sorted relative paths and SHA-256s of its files
      files = sorted(os.path.relpath(os.path.join(r, n), full) for r, _, ns in os.walk(full) for n in ns)
      h = hashlib.sha256(''.join(f'{f}\0{_sha(os.path.join(full, f))}\n' for f in files).encode())
      assert a['sha256'] == h.hexdigest() and a['files'] == len(files)
    else:
      assert a['sha256'] == _sha(full) and a['bytes'] == os.path.getsize(full)
  sourced = list(data['values'].values())
  assert len(sourced) > 50 and all('source' in e for e in sourced)  # every value names its file
  for e in sourced:
    src = e['source']
    full = os.path.normpath(os.path.join(wd, src['path']))
    assert src['path'] in listed and src['sha256'] == _sha(full)
    if 'key' in src and 'derived' not in e:
      with open(full) as f:
        doc = json.loads(f.read().splitlines()[src['line'] - 1]) if 'line' in src else json.load(f)
      got = _resolve(doc, src['key'])
      got = len(got) if src.get('count') else got
      assert card._plain(got) == e['value'], (src, e['value'])
  for role in ('checkpoints/6', 'checkpoints/6/meta/metadata', 'config.json', 'metrics.jsonl', 'footprint.json',
               'sample.txt', '../run_eval/eval_results.json', '../run_eval/bias_report.md', '../corpus.txt'):
    assert role in listed
  # The training text is hashed (the run recorded only its path).
  assert data['values']['data.0.files.0.sha256']['value'] == _sha(os.path.join(os.path.dirname(wd), 'corpus.txt'))


def test_check_passes_untouched_and_names_each_changed_or_missing_file(run, capsys):
  wd = run[0]
  assert card.main(['--workdir', wd, '--check']) == 0
  assert 'verified' in capsys.readouterr().out

  def fails_naming(*names):
    assert card.main(['--workdir', wd, '--check']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: ') and all(n in err for n in names), err

  fp = os.path.join(wd, 'footprint.json')
  with open(fp) as f:
    original = f.read()
  with open(fp, 'w') as f:
    f.write(original.replace('"energy_kwh": 8.16e-06', '"energy_kwh": 9e-06'))
  fails_naming('footprint.json', 'changed')
  with open(fp, 'w') as f:
    f.write(original)
  assert card.main(['--workdir', wd, '--check']) == 0
  capsys.readouterr()
  os.rename(os.path.join(wd, 'metrics.jsonl'), os.path.join(wd, 'metrics.moved'))
  fails_naming('metrics.jsonl', 'missing')
  os.rename(os.path.join(wd, 'metrics.moved'), os.path.join(wd, 'metrics.jsonl'))
  with open(os.path.join(wd, 'checkpoints', '6', 'state', 'd', 'blob'), 'ab') as f:
    f.write(b'!')  # one more byte in the weights
  fails_naming('checkpoints/6', 'changed')
  card.make_card(wd)  # regenerated: verified again
  assert card.main(['--workdir', wd, '--check']) == 0
  capsys.readouterr()
  os.remove(os.path.join(os.path.dirname(wd), 'run_eval', 'bias_report.md'))
  fails_naming('bias_report.md', 'missing')
  card.make_card(wd)
  js = os.path.join(wd, card.CARD_JSON)
  with open(js) as f:
    doc = json.load(f)
  tampered = copy.deepcopy(doc)
  tampered['values']['footprint.energy_kwh']['value'] = 1.0  # a number edited in the card itself
  with open(js, 'w') as f:
    json.dump(tampered, f)
  fails_naming('footprint.energy_kwh', 'footprint.json')
  with open(js, 'w') as f:
    json.dump(doc, f)
  with open(os.path.join(wd, card.CARD_MD), 'a') as f:
    f.write('edited by hand\n')
  fails_naming('MODEL_CARD.md', 'edited')


def test_missing_or_unreadable_required_artefacts_are_one_clear_message(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  r = subprocess.run([sys.executable, '-m', 'llm.card', f'--workdir={empty}'], cwd=ROOT, capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr
  assert r.stderr.startswith('error: ') and 'no checkpoint' in r.stderr and 'python train.py' in r.stderr
  assert not os.path.exists(empty / card.CARD_MD)

  wd = make_run(str(tmp_path / 'run'))
  os.remove(os.path.join(wd, 'config.json'))
  with pytest.raises(card.CardError, match=r'config\.json is missing.*rerun the command that trained'):
    card.make_card(wd)
  wd = make_run(str(tmp_path / 'run2'))
  with open(os.path.join(wd, 'footprint.json'), 'w') as f:
    f.write('{"energy_kwh": 1.0,')  # cut short
  with pytest.raises(card.CardError, match=r'footprint\.json \(energy and carbon ledger\) cannot be read'):
    card.make_card(wd)
  wd = make_run(str(tmp_path / 'run3'))
  with open(os.path.join(wd, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 7, "train_\n')
  with pytest.raises(card.CardError, match=r'metrics\.jsonl line 7 .*not JSON'):
    card.make_card(wd)
  wd = make_run(str(tmp_path / 'run4'), meta_extra={'tokenizer': {'kind': 'hf', 'path': 'tokenizer/tokenizer.json',
                                                                   'sha256': '0' * 64}})
  with pytest.raises(card.CardError, match=r'tokenizer/tokenizer\.json: the tokenizer file .* is missing'):
    card.make_card(wd)
  os.makedirs(os.path.join(wd, 'tokenizer'))
  with open(os.path.join(wd, 'tokenizer', 'tokenizer.json'), 'w') as f:
    f.write('{}')
  with pytest.raises(card.CardError, match=r'is not the tokenizer file .* trained with'):
    card.make_card(wd)
  with pytest.raises(card.CardError, match=r'has no checkpoint at step 5; it has steps \[6\]'):
    card.make_card(make_run(str(tmp_path / 'run5')), step=5)
  with pytest.raises(card.CardError, match=r'holds no model card .*python -m llm\.card --workdir='):
    card.check_card(str(tmp_path / 'run5'))


def test_optional_artefacts_absent_are_reported_with_the_command_that_makes_them(tmp_path):
  wd = make_run(str(tmp_path / 'run'), footprint=False, sample=False)
  data, text = _card(wd)
  absent = {a['artefact']: a for a in data['absent']}
  assert f'configs/fewshot.py:ckpt={wd}' in absent['eval_results.json']['make']
  assert 'footprint.json' in absent and 'sample.txt' in absent
  assert 'configs/fewshot.py:ckpt=' in _section(text, 'Not recorded')
  assert 'Not recorded' in _section(text, 'Energy and carbon')
  assert 'Not recorded' in _section(text, 'Quantitative analyses').split('### Bias probes')[1]
  assert not any(k.startswith(('eval.', 'footprint.')) for k in data['values'])
  assert card.main(['--workdir', wd, '--check']) == 0
  # An --eval folder that evaluated another model is refused, naming both.
  other = make_eval(str(tmp_path / 'other_eval'), str(tmp_path / 'elsewhere'))
  with pytest.raises(card.CardError, match=r'is an evaluation of .*elsewhere, not of .*run'):
    card.make_card(wd, evals=[other])


def test_intended_use_is_marked_until_the_notes_fill_it(tmp_path):
  wd = make_run(str(tmp_path / 'run'))
  out = str(tmp_path / 'card')
  md, js = card.make_card(wd, out)
  with open(md) as f:
    text = f.read()
  for title in ('Intended use', 'Factors', 'Ethical considerations', 'Caveats and recommendations'):
    assert card.TO_FILL in _section(text, title), title
  assert card.TO_FILL not in _section(text, 'Metrics')
  notes = tmp_path / 'notes.md'
  notes.write_text('# Notes for the card\n\n## Intended use\n\nResearch on tiny language models only.\n\n'
                   '## Limitations\n\nTrained for 6 steps: it writes noise.\n')
  md, js = card.make_card(wd, out, notes=str(notes))
  with open(md) as f:
    text = f.read()
  with open(js) as f:
    data = json.load(f)
  assert 'Research on tiny language models only.' in _section(text, 'Intended use')
  assert card.TO_FILL not in _section(text, 'Intended use')
  assert 'it writes noise' in _section(text, 'Caveats and recommendations')
  assert card.TO_FILL in _section(text, 'Ethical considerations')
  assert data['notes']['intended_use']['filled'] and not data['notes']['ethical_considerations']['filled']
  assert data['notes']['intended_use']['source']['sha256'] == _sha(notes)
  assert card.main(['--workdir', wd, '--out', out, '--check']) == 0
  notes.write_text('## Intended use\nchanged\n')
  assert card.main(['--workdir', wd, '--out', out, '--check']) == 2  # the notes are an artefact too
  notes.write_text('## Intended uses\nResearch.\n')
  with pytest.raises(card.CardError, match=r"notes\.md line 1: unknown section 'Intended uses'"):
    card.make_card(wd, out, notes=str(notes))
  # A card_notes.md in the workdir is read without --notes.
  with open(os.path.join(wd, card.NOTES_FILE), 'w') as f:
    f.write('## Intended use\nTeaching.\n')
  md, _ = card.make_card(wd)
  with open(md) as f:
    assert 'Teaching.' in _section(f.read(), 'Intended use')


def test_lineage_names_the_base_of_a_fine_tuned_model_recursively(tmp_path):
  base = make_run(str(tmp_path / 'base'), energy=1e-05)
  dapt = make_run(str(tmp_path / 'dapt'), step=4, meta_extra={'init_from': base, 'init_step': 6}, energy=2e-05)
  ft = make_run(str(tmp_path / 'sst2_lora'), loop='finetune', meta_extra={
      'finetuned_from': {'init': dapt, 'init_step': 4, 'method': 'lora', 'data': 'task:sst2_review'}})
  data, text = _card(ft)
  v = {k: e['value'] for k, e in data['values'].items()}
  assert [e['base'] for e in data['lineage']] == [dapt, base]
  assert [e['relation'] for e in data['lineage']] == ['fine-tuned (lora) from', 'continued pre-training from']
  assert v['lineage.0.step'] == 4 and v['lineage.0.data'] == 'task:sst2_review' and v['lineage.1.step'] == 6
  assert v['lineage.0.energy_kwh'] == 2e-05 and v['lineage.1.energy_kwh'] == 1e-05
  assert data['values']['lineage.0.base']['source']['key'] == '/finetuned_from/init'
  details = _section(text, 'Model details')
  assert f'fine-tuned (lora) from [{dapt}]' in details and f'continued pre-training from [{base}]' in details
  # The fine-tuning data: the task file and its data files, hashed.
  assert v['data.0.task_file.sha256'] == _sha(os.path.join(ROOT, 'tasks', 'sst2', 'sst2_review.yaml'))
  assert v['data.0.train.0.sha256'] == _sha(os.path.join(ROOT, 'data', 'sst2_train.tsv'))
  assert v['config.finetune.method'] == 'lora' and v['config.lora.rank'] == 8
  # A base that is not readable here is named, and said to be so.
  os.rename(dapt, dapt + '.gone')
  md, js = card.make_card(ft)
  with open(js) as f:
    data = json.load(f)
  assert [e['base'] for e in data['lineage']] == [dapt] and not data['lineage'][0]['readable']
  assert any('not readable' in c for c in data['caveats'])


def test_prepared_corpus_and_corpus_report_are_followed(tmp_path):
  corpus = tmp_path / 'corpus'
  shard = corpus / 'clean' / 'train-00000-of-00001.jsonl.gz'
  shard.parent.mkdir(parents=True)
  shard.write_bytes(b'shard bytes')
  _json(str(corpus / 'DONE'), {'fingerprint': 'f16b', 'tfds_dir': '', 'docs_in': 300, 'docs_out': 180})
  report = {
      'totals': {'docs_in': 300, 'docs_out': 180, 'frac_docs_kept': 0.6, 'frac_chars_kept': 0.64},
      'funnel': [{'stage': 'language', 'docs_removed': 34, 'frac_of_input': 0.1133, 'docs_remaining': 266},
                 {'stage': 'gopher_quality', 'docs_removed': 86, 'frac_of_input': 0.2867, 'docs_remaining': 180}],
      'pii': {'email': {'count': 13, 'docs': 8}},
      'representation': {'words_before': 134761, 'words_after': 87680, 'flag_ratio': 1.5, 'flag_min_count': 10,
                         'categories': {'gender': {'count_before': 418, 'rate_before': 3101.8, 'count_after': 323,
                                                   'rate_after': 3683.9, 'change': 0.1877,
                                                   'most_shifting_stage': 'language'}},
                         'flags': [{'stage': 'gopher_quality', 'category': 'gender', 'term': 'father',
                                    'mentions_removed': 5, 'share_of_mentions': 0.55, 'share_of_words': 0.2,
                                    'disproportion': 2.75}]},
      'config': {'inputs': 'raw/*.jsonl.gz', 'output': str(corpus)}}
  _json(str(corpus / 'report' / 'report.json'), report)
  tokens = tmp_path / 'tokens'
  _json(str(tokens / 'manifest.json'), {
      'format': 'llm-tokens/1', 'tokenizer': {'kind': 'byte'},
      'sources': [{'pattern': str(corpus / 'clean' / 'train-*.jsonl.gz'),
                   'files': [{'path': str(shard), 'size': 11, 'mtime_ns': 1, 'sha256': _sha(shard)}],
                   'docs': {'train': 180, 'validation': 0}, 'tokens': {'train': 5000, 'validation': 0}}],
      'splits': {'train': {'docs': 180, 'tokens': 5000, 'shards': []},
                 'validation': {'docs': 0, 'tokens': 0, 'shards': []}}})
  wd = make_run(str(tmp_path / 'run'), sources=f'tokens:{tokens}')
  data, text = _card(wd)
  v = {k: e['value'] for k, e in data['values'].items()}
  src = data['values']['data.0.sources.0.files.0.sha256']['source']
  assert v['data.0.sources.0.files.0.sha256'] == _sha(shard) and src['path'] == '../tokens/manifest.json'
  assert src['key'] == '/sources/0/files/0/sha256'
  assert v['data.0.train.tokens'] == 5000 and v['data.0.train.docs'] == 180
  assert v['corpus.0.totals.docs_out'] == 180 and v['corpus.0.funnel.1.docs_removed'] == 86
  assert v['corpus.0.representation.gender.rate_after'] == 3683.9 and v['corpus.0.pii.email'] == 13
  assert v['corpus.0.flags.0.disproportion'] == 2.75 and v['corpus.0.flags.0.term'] == 'father'
  training = _section(text, 'Training data')
  assert '**Corpus pipeline report**' in training and 'out of proportion' in training
  assert '[86](../corpus/report/report.json "/funnel/1/docs_removed")' in training
  assert 'disproportionate removal' in _section(text, 'Ethical considerations')
  assert card.main(['--workdir', wd, '--check']) == 0
  # A plain text source that no pipeline produced: the card says the report is not recorded.
  plain = make_run(str(tmp_path / 'plain'))
  md, _ = card.make_card(plain)
  with open(md) as f:
    assert 'Corpus report: not recorded' in _section(f.read(), 'Training data')


def test_reads_the_checkpoint_layout_that_orbax_writes(tmp_path):
  """A real parameters-only checkpoint (llm.checkpoint.save_params, as llm.hf import writes it)."""
  import numpy as np
  from llm import checkpoint
  from llm.models.config import config_for_size
  cfg = config_for_size('smoke', 259)
  wd = str(tmp_path / 'imported')
  checkpoint.save_params(wd, cfg, {'kind': 'byte'}, {'w': np.zeros(3, np.float32)},
                         extra_meta={'imported_from': '/models/gpt2-tiny'})
  md, js = card.make_card(wd)  # no config.json or metrics.jsonl: a parameters-only checkpoint needs none
  with open(js) as f:
    data = json.load(f)
  assert data['values']['model.params']['value'] == cfg.param_count() == SMOKE_PARAMS
  assert data['values']['checkpoint.step']['value'] == 0
  assert data['lineage'][0]['relation'] == 'imported from' and data['lineage'][0]['base'] == '/models/gpt2-tiny'
  assert 'checkpoints/0/meta/metadata' in {a['path'] for a in data['artefacts']}
  assert card.main(['--workdir', wd, '--check']) == 0


# ----- Bias mitigation (data_mitigation.json) and the generation monitor (monitor/... rates, monitor_flags.jsonl)

# data_mitigation.json as llm.data.stream.write_mitigation_report writes it (the layout of a real smoke run with
# --config.data.counterfactual=gender,gender_names --config.data.reweight=gender:female=0.5; a second, document-share
# target added).
MITIGATION = {
    'sources': ['data/tinyshakespeare.txt'],
    'counterfactual': {'categories': ['gender', 'gender_names'], 'mode': 'add', 'rate': 1.0, 'documents': 6493,
                       'with_swap': 4335, 'added': 4335, 'substituted': 0, 'swaps/gender': 11295,
                       'swaps/gender_names': 1498,
                       'top_terms': {'gender:he': 1422, 'gender:his': 1393, 'gender_names:richard': 342}},
    'reweighting': [{
        'targets': [{'target': {'category': 'gender', 'group': 'female', 'share': 0.5}, 'before': 0.5743231127846512,
                     'expected': 0.4999999999999998, 'realised': 0.5014995715509855, 'focus': 1931,
                     'factor': 0.6800463141644153},
                    {'target': {'category': 'religion', 'group': None, 'share': 0.2}, 'before': 0.0312,
                     'expected': 0.2, 'realised': 0.1987, 'focus': 338, 'factor': 7.79}],
        'max_weight': 10.0, 'seed': 0, 'items': 10828, 'upweighted': 338, 'downweighted': 1931, 'copies': 12210,
        'dropped': 618, 'what': 'documents'}]}


def _edit_config(wd, **sections):
  """Update sections of a workdir's config.json (``data={'reweight': ...}`` merges into ``data``)."""
  path = os.path.join(wd, 'config.json')
  with open(path) as f:
    cfg = json.load(f)
  for name, fields in sections.items():
    if fields is None:
      cfg.pop(name, None)
    else:
      cfg.setdefault(name, {}).update(fields)
  _json(path, cfg)


def _unlinked_numbers(part):
  """Numbers of a part of the card outside links and code spans (every number there must be a link)."""
  return re.findall(r'\d+\.\d+|\d{1,3}(?:,\d{3})+|(?<![\w/.-])\d+(?![\w/.-])',
                    re.sub(r'\[[^\]]*\]\([^)]*\)', '', re.sub(r'`[^`]*`', '', part)))


def test_bias_mitigation_values_equal_data_mitigation_json_and_check_catches_changes(tmp_path, capsys):
  wd = make_run(str(tmp_path / 'run'))
  _edit_config(wd, data={'counterfactual': 'gender,gender_names', 'reweight': 'gender:female=0.5,religion=0.2'})
  _json(os.path.join(wd, 'data_mitigation.json'), MITIGATION)
  data, text = _card(wd)
  vals = data['values']
  # Every number of the report is in the card, equal to the file at its pointer.
  c, rep = MITIGATION['counterfactual'], MITIGATION['reweighting'][0]
  expected = {f'mitigation.cf.{k}': ('/counterfactual/' + k, c[k]) for k in
              ('categories', 'mode', 'rate', 'documents', 'with_swap', 'added', 'substituted')}
  expected.update({'mitigation.cf.swaps.0': ('/counterfactual/swaps~1gender', 11295),
                   'mitigation.cf.swaps.1': ('/counterfactual/swaps~1gender_names', 1498),
                   'mitigation.cf.top.2': ('/counterfactual/top_terms/gender_names:richard', 342)})
  expected.update({f'mitigation.rw.0.{k}': (f'/reweighting/0/{k}', rep[k]) for k in
                   ('items', 'upweighted', 'downweighted', 'copies', 'dropped', 'max_weight')})
  for j, t in enumerate(rep['targets']):
    expected[f'mitigation.rw.0.targets.{j}.share'] = (f'/reweighting/0/targets/{j}/target/share', t['target']['share'])
    for k in ('before', 'expected', 'realised', 'focus'):
      expected[f'mitigation.rw.0.targets.{j}.{k}'] = (f'/reweighting/0/targets/{j}/{k}', t[k])
  for name, (key, value) in expected.items():
    assert vals[name]['value'] == value, name
    assert vals[name]['source'] == {'path': 'data_mitigation.json', 'key': key,
                                    'sha256': _sha(os.path.join(wd, 'data_mitigation.json'))}, name
  assert 'mitigation.rw.0.targets.1.group' not in vals  # a document-share target has no group
  assert vals['mitigation.config.data.reweight']['value'] == 'gender:female=0.5,religion=0.2'
  assert 'data_mitigation.json' in {a['path'] for a in data['artefacts']}
  # In the Markdown: under Training data, each number a link titled with its pointer; the targets in a table.
  part = _section(text, 'Training data').split('### Bias mitigation\n', 1)[1]
  assert 'None applied' not in part
  assert '[4,335](data_mitigation.json "/counterfactual/with_swap") of [6,493](data_mitigation.json ' in part
  assert '[11,295](data_mitigation.json "/counterfactual/swaps~1gender")' in part
  assert '[618](data_mitigation.json "/reweighting/0/dropped")' in part
  assert ('| `gender:female` | gender mentions | [0.5743](data_mitigation.json "/reweighting/0/targets/0/before") | '
          '[0.5](data_mitigation.json "/reweighting/0/targets/0/target/share") | ') in part
  assert '| `religion` | documents | [0.0312](' in part and '[0.1987](' in part
  assert '`data.reweight` [gender:female=0.5,religion=0.2](config.json "/data/reweight")' in part
  assert 'Bias mitigation was applied' in _section(text, 'Ethical considerations')
  assert not _unlinked_numbers(part) and _unlinked_numbers('4,335 documents') == ['4,335']
  # --check: the report is an artefact; a changed number, or the file gone, fails naming it.
  assert card.main(['--workdir', wd, '--check']) == 0
  path = os.path.join(wd, 'data_mitigation.json')
  changed = copy.deepcopy(MITIGATION)
  changed['reweighting'][0]['targets'][0]['realised'] = 0.61
  _json(path, changed)
  capsys.readouterr()
  assert card.main(['--workdir', wd, '--check']) == 2
  err = capsys.readouterr().err
  assert 'data_mitigation.json changed' in err and err.count('\n') == 1
  os.remove(path)
  assert card.main(['--workdir', wd, '--check']) == 2
  assert 'data_mitigation.json is missing' in capsys.readouterr().err
  # Regenerated without it, while the config says it was on: the card says what is not recorded.
  data, text = _card(wd)
  assert 'data_mitigation.json' in {a['artefact'] for a in data['absent']}
  assert not any(k.startswith(('mitigation.cf.', 'mitigation.rw.')) for k in data['values'])
  assert 'not recorded' in _section(text, 'Training data').split('### Bias mitigation\n', 1)[1]


def test_no_bias_mitigation_says_none_applied_linked_to_the_config(tmp_path):
  wd = make_run(str(tmp_path / 'run'))
  data, text = _card(wd)
  part = _section(text, 'Training data').split('### Bias mitigation\n', 1)[1]
  assert part.lstrip().startswith('None applied')
  assert '`data.counterfactual` [\'\'](config.json "/data/counterfactual")' in part
  assert '`data.reweight` [\'\'](config.json "/data/reweight")' in part
  assert data['values']['mitigation.config.data.reweight']['source']['key'] == '/data/reweight'
  assert not any(k.startswith(('mitigation.cf.', 'mitigation.rw.')) for k in data['values'])
  assert 'data_mitigation.json' not in {a['artefact'] for a in data['absent']}  # off: nothing is missing
  assert card.main(['--workdir', wd, '--check']) == 0
  # A config from before the fields existed: none applied, saying why.
  old = make_run(str(tmp_path / 'old'))
  with open(os.path.join(old, 'config.json')) as f:
    cfg = json.load(f)
  for k in ('counterfactual', 'counterfactual_mode', 'counterfactual_rate', 'reweight', 'reweight_max_weight'):
    del cfg['data'][k]
  _json(os.path.join(old, 'config.json'), cfg)
  _, text = _card(old)
  assert 'None applied: the run\'s config (`config.json`) has no `data.counterfactual`' in \
      _section(text, 'Training data')
  # A fine-tuning: its sft.counterfactual* and sft.debias* fields, linked, off and on.
  base = make_run(str(tmp_path / 'base'))
  ft = make_run(str(tmp_path / 'ft'), loop='finetune', meta_extra={
      'finetuned_from': {'init': base, 'init_step': 6, 'method': 'lora', 'data': 'task:sst2_review'}})
  _edit_config(ft, sft={'debias_weight': 0.0})
  data, text = _card(ft)
  part = _section(text, 'Training data').split('### Bias mitigation\n', 1)[1]
  assert part.lstrip().startswith('None applied')
  assert '`sft.debias_weight` [0](config.json "/sft/debias_weight")' in part
  _edit_config(ft, sft={'debias_weight': 0.5})
  data, text = _card(ft)
  part = _section(text, 'Training data').split('### Bias mitigation\n', 1)[1]
  assert 'None applied' not in part and '`sft.debias_weight` [0.5](config.json "/sft/debias_weight")' in part
  assert data['values']['mitigation.config.sft.counterfactual_rate']['value'] == 1.0
  assert 'a debiasing loss' in _section(text, 'Ethical considerations')


def _monitor_rows(step, harmful, prefix='monitor'):
  return {'step': step, f'{prefix}/outputs': 4.0, f'{prefix}/harmful_rate': harmful, f'{prefix}/flagged_rate': harmful,
          f'{prefix}/sentiment_mean': 0.125, f'{prefix}/mentions/gender/female': 2.0,
          f'{prefix}/sentiment/gender/female': -0.5, f'{prefix}/sentiment/gender/male': 0.25,
          f'{prefix}/sentiment_asymmetry/gender': 0.75, f'{prefix}/seconds': 0.002}


def test_monitor_rates_equal_the_newest_metrics_rows_and_flags_are_counted(tmp_path, capsys):
  wd = make_run(str(tmp_path / 'run'))
  _edit_config(wd, monitor={'enabled': True, 'action': 'block', 'flag_on': 'harmful,negative_identity'})
  metrics = os.path.join(wd, 'metrics.jsonl')
  with open(metrics, 'a') as f:  # evaluators' rows (steps 3 and 6), the sample's, and a row past the checkpoint
    for row in (_monitor_rows(3, 0.5), _monitor_rows(6, 0.25), _monitor_rows(6, 1.0, 'monitor/sample'),
                _monitor_rows(9, 0.75)):
      f.write(json.dumps(row, sort_keys=True) + '\n')
  flags = [{'source': 'ModelLM', 'action': 'block', 'reasons': ['harmful'], 'step': 3, 'text': 'x'},
           {'source': 'ModelLM', 'action': 'block', 'reasons': ['negative_identity'], 'step': 6, 'text': 'y'},
           {'source': 'sample', 'action': 'flag', 'reasons': ['harmful'], 'step': 6, 'text': 'z'}]
  with open(os.path.join(wd, 'monitor_flags.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in flags)
  ed = make_eval(str(tmp_path / 'run_eval'), wd)
  with open(os.path.join(ed, 'metrics.jsonl'), 'w') as f:  # as llm.eval.monitor.append_metrics writes it
    f.write(json.dumps(_monitor_rows(6, 0.125), sort_keys=True) + '\n')
  data, text = _card(wd)
  vals = data['values']
  # Independently: the newest row (step, then line) at or before the checkpoint's step, per monitor key.
  with open(metrics) as f:
    rows = [(n, json.loads(line)) for n, line in enumerate(f, 1)]
  newest = {}
  for n, row in rows:
    for k in row:
      if k.startswith('monitor/') and row['step'] <= 6 and (k not in newest or row['step'] >= newest[k][1]['step']):
        newest[k] = (n, row)
  assert len(newest) == 18
  for k, (n, row) in newest.items():
    e = vals[f'monitor.run.rate.{k}']
    assert e['value'] == row[k] and e['source']['line'] == n and e['source']['path'] == 'metrics.jsonl', k
    assert vals[f'monitor.run.step.{k}']['value'] == 6
  assert vals['monitor.run.rate.monitor/harmful_rate']['value'] == 0.25  # step 6's, not step 9's
  assert vals['monitor.run.rate.monitor/sample/harmful_rate']['value'] == 1.0
  assert vals['monitor.config.enabled']['value'] is True and vals['monitor.config.action']['value'] == 'block'
  assert vals['monitor.run.flagged']['value'] == 3 and vals['monitor.run.flagged.block']['value'] == 2
  assert vals['eval.0.monitor.rate.monitor/harmful_rate']['value'] == 0.125
  assert vals['eval.0.monitor.rate.monitor/harmful_rate']['source']['path'] == '../run_eval/metrics.jsonl'
  part = _section(text, 'Quantitative analyses').split('### Monitored generation\n', 1)[1]
  assert 'was on (`monitor.enabled` [true](config.json "/monitor/enabled")), action [block](config.json ' in part
  assert ('| `monitor/harmful_rate` | [0.25](metrics.jsonl#L8 "line 8 /monitor~1harmful_rate") | '
          '[6](metrics.jsonl#L8 "line 8 /step") |') in part
  assert '| `monitor/sample/harmful_rate` | [1](metrics.jsonl#L9 "line 9 /monitor~1sample~1harmful_rate") |' in part
  assert '| `monitor/sentiment_asymmetry/gender` | [0.75](metrics.jsonl#L8 ' in part
  assert 'Outputs flagged or blocked: [3](monitor_flags.jsonl "number of lines")' in part
  assert '[0.125](../run_eval/metrics.jsonl#L1 "line 1 /monitor~1harmful_rate")' in part
  assert '[3](monitor_flags.jsonl "number of lines")' in _section(text, 'Ethical considerations')
  assert not _unlinked_numbers(part + _section(text, 'Ethical considerations'))
  listed = {a['path'] for a in data['artefacts']}
  assert {'monitor_flags.jsonl', '../run_eval/metrics.jsonl'} <= listed
  # --check: one more flagged output, or a changed rate in the evaluation's metrics, fails naming the file.
  assert card.main(['--workdir', wd, '--check']) == 0
  with open(os.path.join(wd, 'monitor_flags.jsonl'), 'a') as f:
    f.write(json.dumps(flags[0]) + '\n')
  capsys.readouterr()
  assert card.main(['--workdir', wd, '--check']) == 2
  assert 'monitor_flags.jsonl changed' in capsys.readouterr().err
  card.make_card(wd)
  assert card.main(['--workdir', wd, '--check']) == 0
  with open(os.path.join(ed, 'metrics.jsonl'), 'w') as f:
    f.write(json.dumps(_monitor_rows(6, 0.5), sort_keys=True) + '\n')
  capsys.readouterr()
  assert card.main(['--workdir', wd, '--check']) == 2
  assert 'run_eval/metrics.jsonl changed' in capsys.readouterr().err


def test_the_file_names_are_those_the_writers_use():
  with open(os.path.join(ROOT, 'llm', 'eval', 'monitor.py')) as f:
    assert f"FLAGS_FILE = '{card.FLAGS_FILE}'" in f.read()
  with open(os.path.join(ROOT, 'llm', 'data', 'stream.py')) as f:
    assert f"os.path.join(workdir, '{card.MITIGATION_FILE}')" in f.read()


def test_monitor_off_is_said_linked_to_the_config(run, tmp_path):
  wd, data, text = run
  part = _section(text, 'Quantitative analyses').split('### Monitored generation\n', 1)[1]
  assert 'was off in training (`monitor.enabled` [false](config.json "/monitor/enabled"))' in part
  assert 'no monitor rates recorded' in part  # its evaluation ran without one
  assert data['values']['monitor.config.enabled']['value'] is False
  assert not any('.rate.' in k or k.endswith('.flagged') for k in data['values'])
  assert not any(a['path'].endswith('monitor_flags.jsonl') for a in data['artefacts'])
  assert 'not monitored in training (`monitor.enabled` [false](config.json' in _section(text, 'Ethical considerations')
  # A config from before the monitor: not recorded, saying why.
  old = make_run(str(tmp_path / 'old'))
  _edit_config(old, monitor=None)
  data, text = _card(old)
  assert 'no `monitor` section' in _section(text, 'Quantitative analyses').split('### Monitored generation\n', 1)[1]
  assert 'monitor.config.enabled' not in data['values']
