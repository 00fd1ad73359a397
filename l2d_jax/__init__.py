"""l2d_jax: learning to defer (L2D) in JAX.

Subpackages (import them directly, e.g. ``from l2d_jax import conformal``):

- ``conformal``: LAC/APS/RAPS scores, exact conformal quantiles, prediction
  sets and training-free deferral by segregativity.
- ``experts``: the annotation data model, confusion matrices, segregativity
  and expert simulators.
- ``deferral``: the decision rules (who answers: 0 = the model, j >= 1 =
  expert j) — multi-expert argmax, the conformal strategies, expert
  selection, top-k sets and cardinality selection, deferral priorities.
- ``losses``: L2D surrogates — multi-expert softmax and one-vs-all, comp-sum
  top-k and cardinality surrogates, the L2D-Pop and EA-L2D losses, FixMatch
  consistency.
- ``metrics``: system accuracy, workload, significance tests, calibration
  (ECE), deferral curves and their areas (AURSAC/AURDAC).
- ``models``: Flax NNX classifiers with deferral heads, context-set encoders,
  the L2D-Pop and EA-L2D rejectors.
- ``training``: one sharded, resumable optax trainer (one process or many),
  on-device epochs and several seeds in one program.
- ``distributed``: joining a multi-process job (``jax.distributed``), local
  loopback workers, the conformal sweep over processes.
- ``data``: loaders for real annotation data sets, image and tabular sets,
  and simulated data.
- ``io``: atomic file writes (``atomic_write``, ``write_json``,
  ``write_text``, ``save_figure``): a reader or a killed run never sees half
  a file.
"""

__version__ = "0.1.0"
