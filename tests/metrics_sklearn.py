#!/usr/bin/python3
"""Reference values for tests/test_metrics.c: reads the random data the test wrote and prints
sklearn's accuracy_score, balanced_accuracy_score and average_precision_score (per class and
macro mean), and the treatment-level accuracy (median over replicate means) computed
independently with numpy."""
import sys

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, balanced_accuracy_score

with open(sys.argv[1]) as f:
    n, k = (int(v) for v in f.readline().split())
    pred = np.array(f.readline().split(), dtype=np.int64)
    label = np.array(f.readline().split(), dtype=np.int64)
    treat = np.array(f.readline().split(), dtype=np.int64)
    rep = np.array(f.readline().split(), dtype=np.int64)
    prob = np.array([f.readline().split() for _ in range(n)], dtype=np.float32)
    truth = np.array([f.readline().split() for _ in range(n)], dtype=np.int64)

known = label >= 0
print("acc %.17g" % accuracy_score(label[known], pred[known]))
print("bal %.17g" % balanced_accuracy_score(label[known], pred[known]))
aps = [average_precision_score(truth[:, c], prob[:, c].astype(np.float64)) for c in range(k)]
print("ap " + " ".join("%.17g" % a for a in aps))
print("map %.17g" % average_precision_score(truth, prob.astype(np.float64), average="macro"))

right = scored = 0
for t in np.unique(treat[treat >= 0]):
    idx = np.flatnonzero(treat == t)
    lab = label[idx]
    lab = lab[lab >= 0]
    if lab.size == 0:
        continue
    want = np.argmax(np.bincount(lab, minlength=k))  # most frequent, smallest on ties
    # one vote per replicate: the mean of its images (an image without one votes alone)
    keys = [("r", r) if r >= 0 else ("i", i) for i, r in zip(idx, rep[idx])]
    means = [prob[[i for i, kk in zip(idx, keys) if kk == key]].astype(np.float64).mean(0)
             for key in sorted(set(keys))]
    med = np.median(np.array(means, dtype=np.float32).astype(np.float64), axis=0)
    scored += 1
    right += int(np.argmax(med) == want)
print("treat %.17g %d" % (right / scored if scored else float("nan"), scored))
