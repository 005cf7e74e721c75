"""The TFDS dataset the corpus pipeline produces and train.py reads.

``clean_corpus/<name>/<version>`` has ``train`` and ``validation`` splits of
``{'id', 'text', 'url'}`` examples, built from the pipeline's ``clean/*.jsonl.gz`` shards.
TFDS cannot store an empty split, so a split that received no document is left out (a
small corpus may have no validation document; train.py then holds out part of ``train``
itself). The builder config name is the pipeline config's ``name`` and its version the
config's ``version``.

train.py reads it with ``--config.data.sources=tfds:<output>/tfds/clean_corpus/<name>/<version>``
(``tfds.builder_from_directory``: no import of this module, no registration needed).
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import shutil
import uuid
from typing import Sequence

import tensorflow_datasets as tfds

DATASET = 'clean_corpus'


class CleanCorpus(tfds.core.GeneratorBasedBuilder):
  """Documents kept by the llm corpus pipeline."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Output of llm.data.clean.pipeline.'}

  def __init__(self, *, clean_dir: str = '', splits: tuple[str, ...] = ('train', 'validation'), **kwargs):
    self._clean_dir = clean_dir
    self._splits = tuple(splits)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(),  # '<file index>/<record index>' in the raw inputs
            'text': tfds.features.Text(),
            'url': tfds.features.Text(),
        }),
        supervised_keys=None,
    )

  def _log_download_done(self) -> None:
    pass  # TFDS would name the temporary build folder; the pipeline logs the final one

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(sorted(glob.glob(os.path.join(self._clean_dir, f'{split}-*.jsonl.gz'))))
            for split in self._splits}

  def _generate_examples(self, paths):
    for path in paths:
      with gzip.open(path, 'rt', encoding='utf-8') as f:
        for line in f:
          row = json.loads(line)
          yield row['id'], {'id': row['id'], 'text': row['text'], 'url': row.get('url', '')}


def dataset_dir(tfds_root: str, name: str, version: str) -> str:
  return os.path.join(tfds_root, DATASET, name, version)


def prepare(clean_dir: str, tfds_root: str, name: str, version: str, description: str,
            splits: Sequence[str] = ('train', 'validation')) -> str:
  """Builds the dataset of ``splits`` (each must have a document) from ``clean_dir``; returns its directory.

  Prepared in a fresh temporary data_dir and moved into place only when complete, so a
  reader never sees a half-written dataset, and the temporary folder is removed whether
  or not the build succeeds. An existing dataset with the same ``description`` (which
  carries the run's fingerprint) and splits is reused.
  """
  if not splits:
    raise ValueError('a TFDS dataset needs at least one non-empty split')
  final = dataset_dir(tfds_root, name, version)
  info_path = os.path.join(final, 'dataset_info.json')
  if os.path.exists(info_path):
    with open(info_path) as f:
      info = json.load(f)
    if (info.get('configDescription') == description and
        sorted(s.get('name') for s in info.get('splits', [])) == sorted(splits)):
      return final
  tfds.disable_progress_bar()
  tmp_root = os.path.join(tfds_root, f'.tmp-{uuid.uuid4().hex[:8]}')
  try:
    config = tfds.core.BuilderConfig(name=name, version=version, description=description)
    builder = CleanCorpus(data_dir=tmp_root, config=config, clean_dir=clean_dir, splits=tuple(splits))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    built = dataset_dir(tmp_root, name, version)
    if os.path.exists(final):
      shutil.rmtree(final)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.replace(built, final)
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)
  return final
