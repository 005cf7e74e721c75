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
                     'split': 'document', 'val_fraction': 0.1},
            'train': {'steps': step, 'batch_size': 8, 'accum_steps': 1, 'lr': 0.001, 'min_lr': 0.0001,
                      'warmup_steps': 2, 'decay_steps': 0, 'weight_decay': 0.1, 'grad_clip': 1.0, 'b1': 0.9,
                      'b2': 0.99},
            'eval': {'task_dirs': 'tasks'}, 'footprint': {'region': 'world', 'pue': 1.0}}
  if loop == 'finetune':
    config.update(sft={'source': 'task:sst2_review', 'seq_len': 64, 'pack': True, 'truncation': 'truncate_prompt'},
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


@pytest.fixture
def run(tmp_path):
  """A pre-training workdir, its evaluation beside it (runs/x and runs/x_eval), and the card of both."""
  wd = make_run(str(tmp_path / 'run'))
  make_eval(str(tmp_path / 'run_eval'), wd)
  make_eval(str(tmp_path / 'other_eval'), str(tmp_path / 'another_run'))  # someone else's: never in this card
  md, js = card.make_card(wd)
  with open(js) as f:
    data = json.load(f)
  with open(md) as f:
    text = f.read()
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
  md, js = card.make_card(wd)
  with open(js) as f:
    data = json.load(f)
  with open(md) as f:
    text = f.read()
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
  md, js = card.make_card(ft)
  with open(js) as f:
    data = json.load(f)
  with open(md) as f:
    text = f.read()
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
  md, js = card.make_card(wd)
  with open(js) as f:
    data = json.load(f)
  with open(md) as f:
    text = f.read()
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
