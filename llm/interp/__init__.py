"""Interpretability of decoder checkpoints (the llama and gpt2 families).

Encoders (BERT) and encoder-decoders (T5) are not covered yet. Every tool takes the
model as ``(graphdef, params)`` (``load(workdir)`` gives both for a checkpoint,
``graphdef_for(cfg)`` for parameters in hand) and one prompt's token ids [t], and
returns numpy results plus a ``plot_*`` function that draws them as a matplotlib Figure:

  attention.py    attention_maps [l, n, t, t], plot_attention
  lens.py         logit_lens: each layer's residual through the final norm and unembedding
  attribution.py  direct_logit_attribution of heads and MLPs; integrated_gradients over input tokens
  patching.py     activation_patching of each (layer, position) from a clean into a corrupted prompt

Bad indices, prompts of different lengths and non-decoder models raise InterpError (a
ValueError) naming the valid range. The model's trunk provides what these need
(``Transformer.trunk``'s collect='heads'/'mlp', ``embeds_btd`` and ``patch``).
"""

from llm.interp.attention import attention_maps, plot_attention
from llm.interp.attribution import (DirectAttribution, IntegratedGradients, direct_logit_attribution,
                                    integrated_gradients, plot_direct_attribution, plot_integrated_gradients)
from llm.interp.common import InterpError, Subject, graphdef_for, load
from llm.interp.lens import Lens, logit_lens, plot_logit_lens
from llm.interp.patching import Patching, activation_patching, patched_logits, plot_patching

__all__ = ['DirectAttribution', 'IntegratedGradients', 'InterpError', 'Lens', 'Patching', 'Subject',
           'activation_patching', 'attention_maps', 'direct_logit_attribution', 'graphdef_for',
           'integrated_gradients', 'load', 'logit_lens', 'patched_logits', 'plot_attention',
           'plot_direct_attribution', 'plot_integrated_gradients', 'plot_logit_lens', 'plot_patching']
