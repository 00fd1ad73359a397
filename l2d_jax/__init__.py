"""l2d_jax: learning to defer (L2D) in JAX.

Subpackages (import them directly, e.g. ``from l2d_jax import conformal``):

- ``conformal``: LAC/APS/RAPS scores, exact conformal quantiles, prediction
  sets and training-free deferral by segregativity.
- ``experts``: the annotation data model, confusion matrices, segregativity
  and expert simulators.
- ``deferral``: the decision rules (who answers: 0 = the model, j >= 1 =
  expert j) — multi-expert argmax, the conformal strategies, expert selection.
- ``losses``: multi-expert L2D surrogates (softmax and one-vs-all).
- ``metrics``: system accuracy, workload, significance tests, calibration (ECE).
- ``models``: Flax NNX classifiers with deferral heads.
- ``training``: one sharded, resumable optax trainer.
- ``data``: loaders for real annotation data sets and simulated data.
"""

__version__ = "0.1.0"
