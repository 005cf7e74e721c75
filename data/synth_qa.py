"""Generate data/synth_qa_{train,dev}.jsonl: short extractive question answering, every answer a span of its context.

  python data/synth_qa.py   # rewrites both files, byte-identical for the same seed

Each record has ``context`` (two to four short facts about two people, shuffled), ``question``
(about one fact of one of them) and ``answer`` (the span of the context that answers it). The names,
cities and jobs are drawn from fixed lists; dev contexts use the same vocabulary in new
combinations. Made for this repository (no third-party text), under its licence.
"""

import json
import os
import random

NAMES = ['Mara', 'Tomas', 'Ines', 'Kofi', 'Yuki', 'Omar', 'Lena', 'Ravi', 'Sofia', 'Jonas', 'Amara', 'Diego',
         'Hana', 'Felix', 'Nadia', 'Arjun', 'Clara', 'Emeka', 'Leila', 'Marco', 'Zara', 'Pavel', 'Aiko', 'Samir']
CITIES = ['Lisbon', 'Nairobi', 'Osaka', 'Lima', 'Oslo', 'Cairo', 'Quito', 'Hanoi', 'Dublin', 'Accra', 'Porto',
          'Seoul', 'Denver', 'Krakow', 'Tunis', 'Perth']
JOBS = ['baker', 'nurse', 'pilot', 'teacher', 'farmer', 'painter', 'lawyer', 'chemist', 'tailor', 'plumber',
        'surgeon', 'librarian', 'carpenter', 'singer', 'engineer', 'florist']
PETS = ['cat', 'dog', 'parrot', 'rabbit', 'horse', 'goat']


FORMS = {'city': '{n} lives in {v}.', 'job': '{n} is a {v}.', 'pet': '{n} has a {v}.'}
VALUES = {'city': CITIES, 'job': JOBS, 'pet': PETS}
QUESTIONS = {'city': ['Where does {n} live?', 'Which city is {n} in?'], 'job': ['What does {n} do?', "What is {n}'s job?"],
             'pet': ['Which animal does {n} have?', 'What pet does {n} have?']}


def record(rng: random.Random) -> dict:
  """Two people, one or two facts each, shuffled; a question about one fact of one of them."""
  names = rng.sample(NAMES, 2)
  facts = []  # (name, key, value)
  for n in names:
    for key in rng.sample(sorted(FORMS), rng.choice([1, 2])):
      facts.append((n, key, rng.choice(VALUES[key])))
  rng.shuffle(facts)
  name, key, value = rng.choice(facts)
  return {'context': ' '.join(FORMS[k].format(n=n, v=v) for n, k, v in facts),
          'question': rng.choice(QUESTIONS[key]).format(n=name), 'answer': value}


def main() -> None:
  here = os.path.dirname(os.path.abspath(__file__))
  for split, n, seed in (('train', 4000, 0), ('dev', 300, 1)):
    rng = random.Random(seed)
    with open(os.path.join(here, f'synth_qa_{split}.jsonl'), 'w') as f:
      for _ in range(n):
        f.write(json.dumps(record(rng)) + '\n')


if __name__ == '__main__':
  main()
