# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Corpus quality: what the cleaning pipeline removes, and from whom
#
# `llm/data/clean/` turns raw web text into training documents: fastText language id, the
# Gopher repetition and quality rules, C4's line and page rules, FineWeb's rules, exact and
# MinHash near-duplicate removal, repeated-line removal and PII scrubbing (`configs/corpus.py`
# lists every threshold; the README's *Corpus pipeline* section explains each). Its report counts
# what each stage removed and why, and audits **representation**: how often identity terms
# (gender, religion, nationality, ethnicity, sexual orientation; `data/identity_terms/`) occur per
# million words before and after cleaning, flagging stages that remove a group's mentions out of
# proportion to the words they remove.
#
# No crawl can be downloaded here, so we run it on the web-like corpus of
# `benchmarks/corpus/webgen.py`: real sentences from the bundled data laid out as extracted web
# pages, with boilerplate, spam, foreign languages, code, duplicates and PII planted — and each
# page's ground-truth *kind*, so we can check the decisions. On the command line:
#
# ```bash
# python -m benchmarks.corpus.webgen --out runs/web --num_docs 1000 --shards 2
# python -m llm.data.clean.pipeline --config=configs/corpus.py:smoke=True \
#     --config.inputs='runs/web/*.jsonl.gz' --config.output=runs/corpus --config.write_outcomes=True
# ```
#
# (`smoke=True`: one worker and no TFDS conversion. Without it the run also writes the TFDS
# dataset that `train.py --config.data.sources=tfds:<dir>` trains on.)

# %%
# %matplotlib inline
import os
import sys

# The repository root, whether Jupyter runs this from notebooks/ (its default) or from the root.
ROOT = os.getcwd() if os.path.isdir('llm') else os.path.dirname(os.getcwd())
sys.path[:0] = [ROOT, os.path.join(ROOT, 'notebooks')]
import _shared

# %%
import gzip
import json

import pandas as pd
from IPython.display import Image, display

from benchmarks.corpus import webgen
from configs import corpus as corpus_config
from llm.data.clean import pipeline

for name in ('sst2_train.tsv', 'crows_pairs_anonymized.csv', 'tinyshakespeare.txt', 'identity_terms'):
  _shared.require(os.path.join('data', name), 'it ships with the repository: restore it with `git checkout -- data`')

N_DOCS = 1000
raw = _shared.run_dir('corpus/raw')
files = webgen.write_corpus(raw, num_docs=N_DOCS, shards=2, seed=0)  # deterministic: same pages every time
pages = [json.loads(line) for path in files for line in gzip.open(path, 'rt')]
print(f'{len(pages)} pages in {_shared.rel(raw)}')
pd.Series([p['kind'] for p in pages]).value_counts().rename('pages').to_frame().T

# %% [markdown]
# One page of each of three kinds, as the pipeline sees them (first 300 characters):

# %%
for kind in ('article', 'spam', 'pii'):
  page = next(p for p in pages if p['kind'] == kind)
  print(f'--- {kind}: {page["url"]}\n{page["text"][:300]}\n')

# %% [markdown]
# ## Run the pipeline
#
# Every rule is evaluated on every document (so the report can say how rules overlap), and a
# document is counted against the first stage that drops it. A rerun with unchanged inputs,
# config and code finds the previous run up to date and returns at once.

# %%
def run_pipeline(output: str, arg: str = 'smoke=True') -> dict:
  c = corpus_config.get_config(arg)
  c.inputs = os.path.join(raw, '*.jsonl.gz')
  c.output = output
  c.write_outcomes = True  # one line per document: kept or which stage removed it, and why
  return pipeline.run(pipeline.from_config(c))


out = _shared.run_dir('corpus/clean')
summary = run_pipeline(out)
t = summary['totals']
print(f"counts add up: {t['counts_add_up']}; {t['docs_out']} of {t['docs_in']} documents kept, "
      f"{t['frac_chars_kept']:.1%} of the characters")

# %% [markdown]
# ## The funnel
#
# Documents removed by each stage, in pipeline order, and what remains after it. Together with the
# kept ones they add up to the input: every document is counted once, by the first stage that
# dropped it.

# %%
funnel = pd.DataFrame(summary['funnel']).set_index('stage')
display(funnel[['docs_removed', 'frac_of_input', 'frac_of_stage_input', 'chars_removed', 'docs_remaining']]
        .style.format({'frac_of_input': '{:.1%}', 'frac_of_stage_input': '{:.1%}', 'chars_removed': '{:,}'}))
report_dir = os.path.join(out, 'report')
Image(os.path.join(report_dir, summary['plots']['funnel']))

# %% [markdown]
# ## Per-rule removals
#
# Why each stage removed what it did, then each filter rule on its own: how many documents it would
# drop, and how many only it would drop (the rest are caught by another rule as well). The
# heatmap counts the documents each pair of rules would both drop.

# %%
reasons = pd.DataFrame([(stage, reason, n) for stage, counts in summary['reasons'].items()
                        for reason, n in counts.items()], columns=['stage', 'reason', 'docs'])
display(reasons.set_index(['stage', 'reason']))
overlap = pd.DataFrame(summary['overlap']['per_rule']).T
display(overlap.style.format({'frac_of_input': '{:.1%}'}))
Image(os.path.join(report_dir, summary['plots']['overlap']))

# %% [markdown]
# Modifying rules edit the documents they keep: C4 drops lines (no terminal punctuation, too few
# words, cookie and javascript notices) and citation marks, line dedup removes lines an earlier
# document already has, and PII is replaced by `<EMAIL>`, `<PHONE>`, `<IP>`.

# %%
display(pd.DataFrame(summary['edits']).T)
pd.DataFrame(summary['pii']).T

# %% [markdown]
# ## Against the generator's ground truth
#
# `outcomes.jsonl.gz` says for every document whether it was kept or which stage removed it.
# Crossed with the kind the generator meant each page to be: spam, foreign pages, lorem ipsum,
# duplicates and short pages should go; articles, PII pages (kept, scrubbed) and identity-term
# pages should stay. The debatable rows are the interesting ones: code and lists are web text that
# a prose filter drops, and Shakespeare's verse (short lines, few of them ending in punctuation)
# fails Gopher quality about half the time — a duplicate is counted against the first rule its
# original also fails, not against dedup.

# %%
with gzip.open(os.path.join(out, 'outcomes.jsonl.gz'), 'rt') as f:
  outcomes = {o['id']: o for o in map(json.loads, f)}
rows = []
for path in files:  # a document's id is '<path as the glob matched it>#<record index>'
  with gzip.open(path, 'rt') as f:
    for i, line in enumerate(f):
      o = outcomes[f'{path}#{i:09d}']
      rows.append((json.loads(line)['kind'], 'kept' if o['kept'] else o['removed_by']))
truth = pd.crosstab(*zip(*rows), rownames=['kind'], colnames=['outcome'])
truth[['kept'] + [s for s in funnel.index if s in truth.columns]]

# %% [markdown]
# ## Representation audit
#
# Mentions of identity terms per million words, before and after cleaning, the stage that shifted
# each category most, and the flags: a stage that removes a larger share of a group's mentions than
# of all words (by `flag_ratio`, with at least `flag_min_count` mentions). Rates usually rise after
# cleaning — the foreign-language and boilerplate pages removed mention these groups less than the
# prose that stays — so the flags are what to read. On 100,000 generated pages (README, *Results*)
# Gopher quality removed gender terms 1.6x out of proportion, because verse (Shakespeare's
# *father*, *brother*, *daughter*) fails it.

# %%
rep = summary['representation']
cats = pd.DataFrame(rep['categories']).T[['count_before', 'rate_before', 'count_after', 'rate_after', 'change',
                                           'most_shifting_stage']]
display(cats.style.format({'rate_before': '{:.0f}', 'rate_after': '{:.0f}', 'change': '{:+.1%}'}))
print(f"flagged when a stage removes >= {rep['flag_ratio']}x its share of words "
      f"(and >= {rep['flag_min_count']} mentions):")
display(pd.DataFrame(rep['flags'], columns=['level', 'category', 'term', 'stage', 'mentions_removed',
                                            'share_of_mentions', 'share_of_words', 'disproportion']))
Image(os.path.join(report_dir, summary['plots']['representation']))

# %% [markdown]
# ## Turning on C4's bad-words filter
#
# C4 removed every page containing a word of its bad-words list. It is off by default here
# (`configs/corpus.py:bad_words=True` turns it on) because it removes disproportionately much text
# by and about minority groups (Dodge et al., 2021). The same pages with it on:

# %%
summary_bw = run_pipeline(_shared.run_dir('corpus/clean_bad_words'), 'smoke=True,bad_words=True')
bw = next(s for s in summary_bw['funnel'] if s['stage'] == 'bad_words')
print(f"bad_words removed {bw['docs_removed']} documents ({bw['frac_of_input']:.1%} of the input)")
compare = pd.DataFrame({
    'change, default': {c: v['change'] for c, v in rep['categories'].items()},
    'change, bad_words on': {c: v['change'] for c, v in summary_bw['representation']['categories'].items()},
})
display(compare.style.format('{:+.1%}'))
pd.DataFrame([f for f in summary_bw['representation']['flags'] if f['stage'] == 'bad_words'],
             columns=['level', 'category', 'term', 'mentions_removed', 'share_of_mentions', 'share_of_words',
                      'disproportion'])

# %% [markdown]
# On 1,000 generated pages (about 4% of them identity-term pages) the numbers are small and noisy;
# on 100,000 the filter removed 20.3% of all sexual-orientation mentions for 10.1% of the words
# (README, *Results*). The full report of each run — every table above, length and quality-signal
# histograms, and removed examples per stage — is `report/report.md` in its output folder:

# %%
print(_shared.rel(os.path.join(report_dir, 'report.md')))
print(open(os.path.join(report_dir, 'report.md')).read()[:1500])
