"""Side-by-side benchmark of HTML main-text extraction settings on real pages.

    python benchmarks/extraction.py --pages 'runs/html_pages/*.html' --out runs/extraction.json

Each page is decoded as the WARC reader decodes a body whose HTTP header names no
charset (``llm.data.clean.html.decode_html``), then every extraction setting in ``--modes``
runs on it. Reported per setting:

  * characters and words kept;
  * whether the text passes our Gopher quality and C4 rules (``RuleChain(RulesConfig())``,
    every rule evaluated; language id off unless ``--language``, since the sample mixes
    languages), and the whole default rule chain;
  * token precision / recall / F1 against a page's gold text, where ``<page>.gold.txt``
    exists (bag-of-tokens overlap, as in Scrapinghub's article-extraction-benchmark; CJK
    characters count one token each);
  * snippet precision / recall, where ``<page>.snippets.json`` holds
    ``{"with": [...], "without": [...]}`` (trafilatura's evaluation: a "with" snippet
    found is a true positive, a "without" snippet found a false positive);
  * time per page: the median over ``--reps`` runs of one page (pinned to one core),
    then the median and mean of that over the pages. Extraction only, from the decoded
    string; every repetition must return the same text (determinism is checked).

Pages are not shipped with the repository (they are the publishers' copyright) and go
to ``runs/`` (git-ignored). The measured sample (README.md):

  * 23 news pages with gold article text from the newspaper4k sdist on PyPI
    (``tests/data/html`` + ``tests/data/txt``; the 5 home/redirect/RSS pages and the 2
    without gold text left out)::

      pip download --no-deps --no-binary :all: newspaper4k==0.9.6 -d /tmp/np4k
      python benchmarks/extraction.py --import-newspaper4k /tmp/np4k/newspaper4k-0.9.6.tar.gz

  * 5 pages of trafilatura's test cache (github.com/adbar/trafilatura, ``tests/cache/``):
    boingboing.net.millenials, github.blog.spiceland, hundeverein-kreisunna.de,
    rs-ingenieure.de.tragwerksplanung, die-partei.net.luebeck, saved as
    ``runs/html_pages/trafilatura.<name>.html``, with ``<name>.snippets.json`` holding the
    page's 'with'/'without' lists from that repository's ``tests/comparison.py`` EVAL_PAGES;
  * ``--synthetic N``: N generated legacy-markup pages per layout (``synthetic_pages``).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import random
import re
import statistics
import sys
import tarfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import write_json  # pylint: disable=wrong-import-position
from llm.data.clean import html as html_lib  # pylint: disable=wrong-import-position
from llm.data.clean import rules  # pylint: disable=wrong-import-position

# name -> (extractor, trafilatura mode, table handling); '-rows' keeps trafilatura's
# '| cell |' rendering of every table (include_tables=True, no unwrapping), as before.
SETTINGS: dict[str, tuple[str, str, str]] = {
    'trafilatura-fast-rows': ('trafilatura', 'fast', 'rows'),  # the default before this benchmark
    'trafilatura-fast': ('trafilatura', 'fast', 'prose'),
    'trafilatura-adaptive': ('trafilatura', 'adaptive', 'prose'),
    'trafilatura-precision': ('trafilatura', 'precision', 'prose'),
    'trafilatura-precision-rows': ('trafilatura', 'precision', 'rows'),
    'trafilatura-balanced': ('trafilatura', 'balanced', 'prose'),
    'trafilatura-recall': ('trafilatura', 'recall', 'prose'),
    'resiliparse': ('resiliparse', 'precision', 'prose'),  # mode and tables do not apply
}
_TOKEN = re.compile(r'[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|\w+')


LAYOUTS = ('layout_table_p', 'layout_table_br', 'font_br', 'lead_p_then_br', 'article_data_table')


def synthetic_pages(n_per_layout: int, seed: int = 0) -> list[tuple[str, bytes, str]]:
  """``(name, html, gold text)`` of legacy-markup pages built from real sentences (SST-2, via webgen).

  The layouts are the ones where extraction settings disagree: an article laid out in a
  ``<table>`` (paragraphs in ``<p>``, or ``<br>``-separated in ``<font>``), ``<br>``
  text without any ``<p>``, a ``<p>`` lead followed by ``<br>`` text, and a modern
  ``<article>`` holding a data table (whose rows are not prose, so not in the gold).
  """
  from benchmarks.corpus import webgen  # pylint: disable=import-outside-toplevel
  sentences = webgen.load_sources().sentences
  rng = random.Random(seed)
  pages = []
  for layout in LAYOUTS:
    for i in range(n_per_layout):
      paras = [' '.join(rng.sample(sentences, rng.randint(2, 4))) for _ in range(rng.randint(2, 8))]
      title = f'Notes on the season, part {i + 1}'
      nav = '<a href="/">Home</a><br><a href="/news">News</a><br><a href="/contact">Contact</a>'
      foot = '<p>Copyright 2004 Example Weekly. All rights reserved.</p>'
      if layout == 'layout_table_p':
        body = (f'<table width="100%"><tr><td width="160">{nav}</td><td><h1>{title}</h1>' +
                ''.join(f'<p>{p}</p>' for p in paras) + f'</td><td width="120">Advertisement</td></tr>'
                f'<tr><td colspan="3">{foot}</td></tr></table>')
      elif layout == 'layout_table_br':
        body = (f'<table width="100%"><tr><td width="160">{nav}</td><td><font face="Arial"><b>{title}</b><br><br>' +
                '<br><br>'.join(paras) + f'</font></td></tr><tr><td colspan="2">{foot}</td></tr></table>')
      elif layout == 'font_br':
        body = (f'<div class="nav">{nav}</div><div><font face="Verdana"><b>{title}</b><br><br>' +
                '<br><br>'.join(paras) + f'</font></div><div class="foot">{foot}</div>')
      elif layout == 'lead_p_then_br':
        body = (f'<div class="nav">{nav}</div><div class="story"><h1>{title}</h1><p>{paras[0]}</p>'
                f'<div class="body"><span>' + '<br><br>'.join(paras[1:]) + f'</span></div></div>{foot}')
      else:
        rows = ''.join(f'<tr><td>Week {k + 1}</td><td>{rng.randint(100, 999)}</td><td>{rng.randint(1, 9)}.{rng.randint(0, 9)}</td></tr>'
                       for k in range(rng.randint(3, 8)))
        body = (f'<nav>{nav}</nav><article><h1>{title}</h1>' + ''.join(f'<p>{p}</p>' for p in paras[:2]) +
                f'<table><thead><tr><th>Week</th><th>Visitors</th><th>Score</th></tr></thead><tbody>{rows}'
                '</tbody></table>' + ''.join(f'<p>{p}</p>' for p in paras[2:]) + f'</article><footer>{foot}</footer>')
      html = f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head><body>{body}</body></html>'
      pages.append((f'synthetic.{layout}.{i:02d}.html', html.encode(), '\n'.join(paras)))
  return pages


def tokens(text: str) -> collections.Counter:
  return collections.Counter(_TOKEN.findall(text.lower()))


def gold_scores(text: str, gold: str) -> tuple[float, float, float]:
  """(precision, recall, F1) of the extracted tokens against the gold text's tokens."""
  pred, ref = tokens(text), tokens(gold)
  overlap = sum((pred & ref).values())
  p = overlap / max(sum(pred.values()), 1)
  r = overlap / max(sum(ref.values()), 1)
  return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def snippet_counts(text: str, snippets: dict[str, list[str]]) -> tuple[int, int, int, int]:
  """(tp, fn, fp, tn) as trafilatura's tests/comparison.py counts them."""
  tp = sum(1 for s in snippets.get('with', []) if s in text)
  fn = len(snippets.get('with', [])) - tp
  fp = sum(1 for s in snippets.get('without', []) if s in text)
  tn = len(snippets.get('without', [])) - fp
  return tp, fn, fp, tn


def time_page(extract: Callable[[str, str], str | None], html: str, reps: int) -> tuple[str, float]:
  """(text, median seconds) of ``reps`` timed runs after one untimed warm-up; raises if two runs disagree."""
  times, outs = [], {extract(html, '') or ''}
  for _ in range(reps):
    t = time.perf_counter()
    out = extract(html, '') or ''
    times.append(time.perf_counter() - t)
    outs.add(out)
  if len(outs) != 1:
    raise AssertionError('extraction is not deterministic')
  return outs.pop(), statistics.median(times)


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return 'unknown'


# newspaper4k test pages that are not articles (home pages, redirects, RSS) or have no gold text.
_NP4K_SKIP = frozenset({'google_meta_refresh', 'sample_rss', 'cnn_main_site', 'wired_main_site', 'yahoo_main_site',
                        'ap_meta_refresh', 'autoindustria'})


def import_newspaper4k(sdist: str, out_dir: str) -> int:
  """Copies the newspaper4k sdist's test pages and gold texts to ``out_dir/np4k.<name>.{html,gold.txt}``."""
  os.makedirs(out_dir, exist_ok=True)
  n = 0
  with tarfile.open(sdist) as tar:
    members = {m.name: m for m in tar.getmembers() if m.isfile()}
    for name, member in sorted(members.items()):
      m = re.search(r'/tests/data/html/([^/]+)\.html$', name)
      if not m or m.group(1) in _NP4K_SKIP:
        continue
      gold = members.get(name.replace('/html/', '/txt/')[:-len('.html')] + '.txt')
      if gold is None:
        continue
      for src, suffix in ((member, '.html'), (gold, '.gold.txt')):
        with open(os.path.join(out_dir, f'np4k.{m.group(1)}{suffix}'), 'wb') as f:
          f.write(tar.extractfile(src).read())
      n += 1
  return n


def load_pages(pattern: str, synthetic: int) -> list[tuple[str, bytes, str | None, dict | None]]:
  """``(name, html bytes, gold text or None, snippets or None)`` for the saved pages and the synthetic ones."""
  out = []
  for path in sorted(glob.glob(pattern)) if pattern else []:
    stem = path[:-len('.html')] if path.endswith('.html') else path
    with open(path, 'rb') as f:
      body = f.read()
    gold = snippets = None
    if os.path.exists(stem + '.gold.txt'):
      with open(stem + '.gold.txt', encoding='utf-8') as f:
        gold = f.read()
    if os.path.exists(stem + '.snippets.json'):
      with open(stem + '.snippets.json', encoding='utf-8') as f:
        snippets = json.load(f)
    out.append((os.path.basename(path), body, gold, snippets))
  out.extend((name, body, gold, None) for name, body, gold in synthetic_pages(synthetic) if synthetic)
  return out


def run(pages: list[tuple[str, bytes, str | None, dict | None]], modes: list[str], reps: int,
        language: bool) -> dict[str, Any]:
  chain = rules.RuleChain(rules.RulesConfig(language=rules.LanguageConfig(enabled=language)))
  lid = rules.LanguageId(rules.LanguageConfig())
  extractors = {m: html_lib.make_extractor(*SETTINGS[m]) for m in modes}
  for ex in extractors.values():  # imports and first-call set-up out of the timings
    ex('<html><body><p>warm up</p></body></html>', '')
  rows = []
  for name, body, gold, snippets in pages:
    t = time.perf_counter()
    decoded = html_lib.decode_html(body, None)
    decode_s = time.perf_counter() - t
    row: dict[str, Any] = {'page': name, 'bytes': len(body), 'encoding': decoded.encoding,
                           'charset_source': decoded.source, 'decode_error': decoded.error,
                           'decode_ms': decode_s * 1e3, 'modes': {}}
    texts = {}
    for m, ex in extractors.items():
      text, secs = time_page(ex, decoded.text, reps)
      texts[m] = text
      res = chain(text, all_rules=True) if text.strip() else None
      failed = set(res.failed) if res else {'empty'}
      r: dict[str, Any] = {'chars': len(text), 'words': len(text.split()), 'ms': secs * 1e3,
                           'pipe_rows': sum(1 for line in text.split('\n') if line.rstrip().endswith('|')),
                           'pass_gopher_c4': not failed & {'gopher_quality', 'c4', 'empty'},
                           'pass_all': not failed, 'failed': sorted(failed),
                           'chars_after_rules': len(res.text) if res and not res.removed_by else 0}
      if gold is not None:
        r['gold_p'], r['gold_r'], r['gold_f1'] = gold_scores(text, gold)
      if snippets is not None:
        r['snippets'] = snippet_counts(text, snippets)
      row['modes'][m] = r
    ref = gold or max(texts.values(), key=len)  # the page's language, from its gold or longest text
    row['language'] = lid.model.predict(ref.replace('\n', ' ')[:5000], k=1)[0][0][9:] if ref.strip() else ''
    rows.append(row)
    print(f"{row['page'][:48]:48s} {row['language']:3s} {decoded.source:8s} " +
          ' '.join(f"{m.split('-', 1)[-1]}={row['modes'][m]['chars']}" for m in modes), file=sys.stderr)
  return {'cpu': cpu_model(), 'reps': reps, 'language_rule': language, 'pages': rows,
          'summary': summarise(rows, modes)}


def summarise(rows: list[dict[str, Any]], modes: list[str]) -> dict[str, dict[str, Any]]:
  out = {}
  real = [r for r in rows if not r['page'].startswith('synthetic.')]
  groups = (('all real', real), ('English real', [r for r in real if r['language'] == 'en']),
            ('synthetic legacy', [r for r in rows if r['page'].startswith('synthetic.')]))
  for group, sel in groups:
    for m in modes:
      ms = [r['modes'][m] for r in sel]
      if not ms:
        continue
      g = [x for x in ms if 'gold_f1' in x]
      sn = [x['snippets'] for x in ms if 'snippets' in x]
      tp, fn, fp, _ = (sum(c[i] for c in sn) for i in range(4)) if sn else (0, 0, 0, 0)
      out[f'{group}/{m}'] = {
          'pages': len(ms), 'mean_chars': statistics.mean(x['chars'] for x in ms),
          'mean_words': statistics.mean(x['words'] for x in ms),
          'pass_gopher_c4': sum(x['pass_gopher_c4'] for x in ms) / len(ms),
          'pass_all': sum(x['pass_all'] for x in ms) / len(ms),
          'mean_chars_after_rules': statistics.mean(x['chars_after_rules'] for x in ms),
          'gold_pages': len(g),
          'gold_p': statistics.mean(x['gold_p'] for x in g) if g else None,
          'gold_r': statistics.mean(x['gold_r'] for x in g) if g else None,
          'gold_f1': statistics.mean(x['gold_f1'] for x in g) if g else None,
          'snippet_pages': len(sn),
          'snippet_p': tp / (tp + fp) if tp + fp else None, 'snippet_r': tp / (tp + fn) if tp + fn else None,
          'pages_with_pipe_rows': sum(1 for x in ms if x['pipe_rows']) / len(ms),
          'median_ms': statistics.median(x['ms'] for x in ms), 'mean_ms': statistics.mean(x['ms'] for x in ms),
          # Per-page time relative to the first setting, then the median: robust to the
          # machine's load drifting during the run (every setting runs on a page back to back).
          'time_ratio': statistics.median(x['ms'] / max(r['modes'][modes[0]]['ms'], 1e-9)
                                          for x, r in zip(ms, sel)),
      }
  return out


def table(summary: dict[str, dict[str, Any]]) -> str:
  def f(v, fmt):
    return '-' if v is None else format(v, fmt)
  first = next(iter(summary)).rsplit('/', 1)[1] if summary else ''
  lines = ['| pages | setting | n | mean chars | mean chars after rules | pass Gopher+C4 | pass all rules | '
           f"with '|' rows | gold P / R / F1 (n) | snippet P / R (n) | median ms | mean ms | time / {first} |",
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  for key, s in summary.items():
    group, m = key.rsplit('/', 1)
    lines.append(f"| {group} | {m} | {s['pages']} | {s['mean_chars']:,.0f} | {s['mean_chars_after_rules']:,.0f} | "
                 f"{s['pass_gopher_c4']:.0%} | {s['pass_all']:.0%} | {s['pages_with_pipe_rows']:.0%} | "
                 f"{f(s['gold_p'], '.3f')} / {f(s['gold_r'], '.3f')} / {f(s['gold_f1'], '.3f')} ({s['gold_pages']}) | "
                 f"{f(s['snippet_p'], '.3f')} / {f(s['snippet_r'], '.3f')} ({s['snippet_pages']}) | "
                 f"{s['median_ms']:.1f} | {s['mean_ms']:.1f} | {s['time_ratio']:.2f}x |")
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  p.add_argument('--pages', default='runs/html_pages/*.html', help="glob of saved HTML pages ('' for none)")
  p.add_argument('--synthetic', type=int, default=0,
                 help=f'also N synthetic legacy-markup pages per layout ({", ".join(LAYOUTS)})')
  p.add_argument('--modes', default=','.join(SETTINGS), help=f'comma-separated, of {", ".join(SETTINGS)}')
  p.add_argument('--reps', type=int, default=5, help='runs per page and setting (the median is reported)')
  p.add_argument('--language', action='store_true', help='include the language-id rule (English only)')
  p.add_argument('--core', type=int, default=0, help='CPU core to pin to (-1: no pinning)')
  p.add_argument('--out', default='', help='write the per-page results as JSON here')
  p.add_argument('--import-newspaper4k', default='', metavar='SDIST',
                 help='copy the test pages of a newspaper4k sdist (.tar.gz) to runs/html_pages/ and exit')
  args = p.parse_args(argv)
  if args.import_newspaper4k:
    n = import_newspaper4k(args.import_newspaper4k, 'runs/html_pages')
    print(f'{n} pages with gold text written to runs/html_pages/')
    return
  pages = load_pages(args.pages, args.synthetic)
  if not pages:
    raise SystemExit(f'--pages {args.pages!r} matches no file and --synthetic is 0')
  modes = [m.strip() for m in args.modes.split(',') if m.strip()]
  unknown = [m for m in modes if m not in SETTINGS]
  if unknown:
    raise SystemExit(f'unknown --modes {unknown}; known: {", ".join(SETTINGS)}')
  if args.core >= 0 and hasattr(os, 'sched_setaffinity'):
    os.sched_setaffinity(0, {args.core})
  result = run(pages, modes, args.reps, args.language)
  print(f"CPU: {result['cpu']}; {len(pages)} pages; median of {args.reps} runs per page, one core")
  print(table(result['summary']))
  write_json(result, args.out)


if __name__ == '__main__':
  main()
