"""Classification metrics against scikit-learn called directly and hand counts."""
import numpy as np
import pytest
import torch
from sklearn.metrics import classification_report, f1_score

from ablation_harness.metrics.classification import (accuracy, classification_metrics, confusion, macro_f1, report,
                                                     to_labels)

Y = np.array([0, 0, 1, 1, 2, 2, 2])
P = np.array([0, 1, 1, 1, 2, 0, 2])


def test_accuracy_and_confusion_by_hand():
    assert accuracy(Y, P) == pytest.approx(5 / 7)
    np.testing.assert_array_equal(confusion(Y, P), [[1, 1, 0], [0, 2, 0], [1, 0, 2]])
    assert confusion(Y, P, num_classes=4).shape == (4, 4)


def test_macro_f1_and_report_match_sklearn_with_torch_logits():
    logits = torch.nn.functional.one_hot(torch.from_numpy(P), 3).float() * 2 - 0.5
    assert (to_labels(logits) == P).all()
    assert macro_f1(torch.from_numpy(Y), logits) == pytest.approx(f1_score(Y, P, average="macro"))
    # by hand: F1 class 0 = 1/2, class 1 = 4/5, class 2 = 4/5
    assert macro_f1(Y, P) == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert report(Y, logits) == classification_report(Y, P, output_dict=True, zero_division=0)
    assert classification_metrics(Y, P) == {"accuracy": pytest.approx(5 / 7), "macro_f1": pytest.approx(0.7)}


def test_class_never_predicted_gives_zero_not_nan():
    assert macro_f1([0, 1, 2], [0, 0, 0]) == pytest.approx((0.5 + 0 + 0) / 3)
