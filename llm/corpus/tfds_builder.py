"""The TFDS dataset the corpus pipeline produces and train.py reads.

``clean_corpus/<name>/<version>`` has ``train`` and ``validation`` splits of
``{'id', 'text', 'url'}`` examples, built from the pipeline's ``clean/*.jsonl.gz`` shards.
The builder config name is the pipeline config's ``name`` and its version the config's
``version``, so differently configured runs are different datasets side by side.

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

import tensorflow_datasets as tfds

DATASET = 'clean_corpus'


class CleanCorpus(tfds.core.GeneratorBasedBuilder):
  """Documents kept by the llm corpus pipeline."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Output of llm.corpus.pipeline.'}

  def __init__(self, *, clean_dir: str = '', **kwargs):
    self._clean_dir = clean_dir
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

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(sorted(glob.glob(os.path.join(self._clean_dir, f'{split}-*.jsonl.gz'))))
            for split in ('train', 'validation')}

  def _generate_examples(self, paths):
    for path in paths:
      with gzip.open(path, 'rt', encoding='utf-8') as f:
        for line in f:
          row = json.loads(line)
          yield row['id'], {'id': row['id'], 'text': row['text'], 'url': row.get('url', '')}


def dataset_dir(tfds_root: str, name: str, version: str) -> str:
  return os.path.join(tfds_root, DATASET, name, version)


def prepare(clean_dir: str, tfds_root: str, name: str, version: str, description: str) -> str:
  """Builds the dataset from ``clean_dir``; returns its directory.

  Prepared in a fresh temporary data_dir and moved into place only when complete, so a
  reader never sees a half-written dataset; an existing dataset with the same
  ``description`` (which carries the run's fingerprint) is reused.
  """
  final = dataset_dir(tfds_root, name, version)
  info_path = os.path.join(final, 'dataset_info.json')
  if os.path.exists(info_path):
    with open(info_path) as f:
      if json.load(f).get('configDescription') == description:
        return final
  tfds.disable_progress_bar()
  tmp_root = os.path.join(tfds_root, f'.tmp-{uuid.uuid4().hex[:8]}')
  config = tfds.core.BuilderConfig(name=name, version=version, description=description)
  builder = CleanCorpus(data_dir=tmp_root, config=config, clean_dir=clean_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  built = dataset_dir(tmp_root, name, version)
  if os.path.exists(final):
    shutil.rmtree(final)
  os.makedirs(os.path.dirname(final), exist_ok=True)
  os.replace(built, final)
  shutil.rmtree(tmp_root, ignore_errors=True)
  return final
