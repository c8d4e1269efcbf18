"""Evaluation: exact, chunked ReID metrics (CMC, mAP, mINP) under the standard, cloth-changing,
same-clothes and PRCC protocols (`metrics`), their per-query reference definition (`reference`),
k-reciprocal re-ranking computed from features without an all-by-all matrix (`rerank`), and the
ranked-results picture (`visualize`). Metrics take a distance matrix or query/gallery features, on any
device, and never need the whole matrix in memory when given features.
"""
