"""Classifier mode: the semantic-interpretability classifier of a data set's colour images.
"""
from __future__ import annotations

import json
from pathlib import Path

import colorize_data as cd
from runs import semantic
from runs.data import data_root, eval_images
from runs.settings import pick_device
from util import colour


def classifier(args) -> int:
    """--mode classifier: train the semantic-interpretability classifier (runs/semantic.py)."""
    root = data_root(args)
    split = cd.make_split(root, args.seed)
    classes = sorted({semantic.class_of(p) for p in split["train"]} - {""})
    if len(classes) < 2:
        print(f"no class folders under {root}: the semantic-interpretability classifier is skipped")
        return 0
    device = pick_device(args.device)
    labelled = [p for p in split["train"] if semantic.class_of(p)]  # not STL-10's unlabeled images
    train_images, train_paths = eval_images(args, root, labelled, "the training split")
    tested = [p for p in split["test"] or split["val"] if semantic.class_of(p)]
    test_images, test_paths = eval_images(args, root, tested, "the test split")
    labels = semantic.labels_for(train_paths, classes)
    model = semantic.train_classifier(train_images, labels, len(classes), args.epochs, args.batch_size,
                                      args.learning_rate, device, args.seed)
    test_labels = semantic.labels_for(test_paths, classes)
    report = {"classes": classes, "n_test": len(test_paths), "image_size": args.image_size, "epochs": args.epochs,
              "accuracy_color": semantic.accuracy(model, test_images, test_labels, device),
              "accuracy_grey": semantic.accuracy(model, test_images, test_labels, device, transform=colour.grey_rgb)}
    semantic.save(model, classes, args.image_size, Path(args.results) / "classifier", report)
    print(json.dumps(report, indent=1))
    print(f"classifier written to {Path(args.results) / 'classifier'}; each family's test mode now reports "
          f"semantic_accuracy")
    return 0
