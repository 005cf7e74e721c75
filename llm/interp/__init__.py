"""Interpretability of decoders (llama, gpt2), encoders (bert) and encoder-decoders (t5).

Every tool takes the model as ``(graphdef, params)`` (``load(workdir)`` gives both for a
checkpoint, ``graphdef_for(cfg)`` for parameters in hand) and one prompt's token ids [t]
(a T5's: ``tokens`` for the encoder, ``dec_tokens`` for the decoder), and returns numpy
results plus a ``plot_*`` function that draws them as a matplotlib Figure:

  attention.py    attention_maps [l, n, queries, keys] (a T5's kind='encoder', 'decoder' or 'cross'), plot_attention
  lens.py         logit_lens: each layer's residual through the final norm and the output head
  attribution.py  direct_logit_attribution of heads and MLPs (decoders); integrated_gradients
                  over input tokens (decoders, encoders)
  patching.py     activation_patching of each (layer, position) from a clean into a corrupted prompt (decoders)

``COVERAGE`` lists the tools of each architecture; ``llm.interp.common``'s docstring says
why the others are refused. Bad indices, prompts of different lengths and tools an
architecture lacks raise InterpError (a ValueError) naming the valid range or what is
supported. The models' trunks provide what these need (per-layer residuals and attention
weights; the decoder's collect='heads'/'mlp' and ``patch``; the decoder's and encoder's
``embeds_btd``; T5 decode's collect='cross_attention').
"""

from llm.interp.attention import attention_maps, plot_attention
from llm.interp.attribution import (DirectAttribution, IntegratedGradients, direct_logit_attribution,
                                    integrated_gradients, plot_direct_attribution, plot_integrated_gradients)
from llm.interp.common import COVERAGE, InterpError, Subject, graphdef_for, load
from llm.interp.lens import Lens, logit_lens, plot_logit_lens
from llm.interp.patching import Patching, activation_patching, patched_logits, plot_patching

__all__ = ['COVERAGE', 'DirectAttribution', 'IntegratedGradients', 'InterpError', 'Lens', 'Patching', 'Subject',
           'activation_patching', 'attention_maps', 'direct_logit_attribution', 'graphdef_for',
           'integrated_gradients', 'load', 'logit_lens', 'patched_logits', 'plot_attention',
           'plot_direct_attribution', 'plot_integrated_gradients', 'plot_logit_lens', 'plot_patching']
